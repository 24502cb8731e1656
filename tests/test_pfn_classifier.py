"""The classifier PFN: its GP-classification prior, the network's label handling and
invariances, training and resuming, checked prediction, and the shipped model.

The headline comparison against the MCMC classifier lives in
``benchmarks/pfn_classifier.py``; the fast suite's held-out check of the shipped model is
``test_pfn.py::test_shipped_models_keep_their_accuracy_on_held_out_datasets``.
"""

import json
import warnings

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _randomise import randomise_weights

from probinfer import amortize, nngp
from probinfer.cli import main as cli_main

TINY = dict(batch_size=16, max_train=10, num_test=6, width=32, num_layers=2, num_heads=2,
            mlp_width=64, warmup_steps=20, learning_rate=3e-3)  # fmt: skip


def _prior(scale_prior=None, num_classes=2, num_features=2):
    process = nngp.ScaleMixtureProcess(nngp.mlp(2), scale_prior)
    return amortize.GPClassificationPrior(
        process, num_classes=num_classes, num_features=num_features
    )


def _random_classifier(num_classes=2, num_features=2, max_train=12):
    model = amortize.PFNClassifier(
        num_classes=num_classes, num_features=num_features, max_train=max_train, width=32,
        num_layers=2, num_heads=2, mlp_width=32, key=jax.random.key(0),
    )  # fmt: skip
    return randomise_weights(model)


def test_classification_prior_draws_labels_from_the_scaled_latent_process():
    """Two labels at two inputs agree with probability ``E[p1 p2 + (1 - p1)(1 - p2)]``,
    ``p_i = sigmoid(f_i)``, ``(f1, f2) ~ N(0, s (K + jitter I))`` with one ``s`` per
    dataset. The prior's agreement rate over 4,000 draws must be within 5 standard errors
    (binomial, plus that of the expectation) of the expectation computed independently
    (SciPy's inverse gamma, NumPy normals, 10^6 draws): for a heavy-tailed scale
    (inverse-gamma(2, 2)), a scale near 100 (``sqrt(s)`` against ``s`` differs by 0.14
    there) and near 1e-4 (fair coins). Three classes: each class's mean share over 400
    datasets within 5 standard errors of 1/3 (datasets as the units: labels within one are
    correlated)."""
    from scipy import stats

    x_pair = jnp.array([[0.3, 0.3], [-0.5, 0.2]])
    rng = np.random.default_rng(0)
    for a, b in ((2.0, 2.0), (1000.0, 1000.0 * 100), (1000.0, 1000.0 * 1e-4)):
        prior = _prior(nngp.inverse_gamma(a, b))
        labels = jax.vmap(lambda k, prior=prior: prior.sample_targets(k, x_pair))(
            jax.random.split(jax.random.key(0), 4000)
        )
        labels = np.asarray(labels)
        assert set(np.unique(labels)) == {0.0, 1.0}
        agree = labels[:, 0] == labels[:, 1]
        cov = np.asarray(prior.process.kernel(x_pair), np.float64) + prior.process.jitter * np.eye(
            2
        )
        s = stats.invgamma(a, scale=b).rvs(size=1_000_000, random_state=rng)
        f = np.sqrt(s)[:, None] * (rng.normal(size=(s.size, 2)) @ np.linalg.cholesky(cov).T)
        p = 1 / (1 + np.exp(-f))
        expected = p[:, 0] * p[:, 1] + (1 - p[:, 0]) * (1 - p[:, 1])
        se = np.sqrt(agree.var() / agree.size + expected.var() / expected.size)
        assert abs(agree.mean() - expected.mean()) < 5 * se, (a, b, agree.mean(), expected.mean())
    three = _prior(nngp.inverse_gamma(2.0, 2.0), num_classes=3)
    _, labels = jax.vmap(lambda k: three.sample(k, 20))(jax.random.split(jax.random.key(1), 400))
    labels = np.asarray(labels)
    for c in range(3):
        share = np.mean(labels == c, axis=1)  # per dataset
        assert abs(share.mean() - 1 / 3) < 5 * share.std() / np.sqrt(share.size), (c, share.mean())
    with pytest.raises(ValueError, match="num_classes"):
        _prior(num_classes=1)
    spec = {"type": "gp_classification", "depth": 1, "num_classes": 3, "num_features": 2}
    built = amortize.prior_from_spec(spec)
    assert isinstance(built, amortize.GPClassificationPrior) and built.num_classes == 3
    with pytest.raises(ValueError, match="bad prior settings"):
        amortize.prior_from_spec({"type": "gp_classification", "noise": 0.1})


def test_classification_prior_draws_are_right_in_float32_at_many_points():
    """The smooth ReLU kernel at 21 random points in 1-d (padded to 3 features) is
    singular in float32 without noise now and then: the prior's latent draw must keep the
    model's law. The share of datasets (inputs drawn per dataset, as in training) whose 21
    labels are all equal, over 20,000 compiled float32 draws, must be within 5 standard
    errors of NumPy's float64 simulation (40,000 datasets): a Cholesky draw failed for
    8.4% of such input sets, giving NaN latents and constant labels (measured: 9.5% of
    datasets all equal against the expected 0.36%, 44 standard errors off)."""
    from scipy import stats

    prior = _prior(nngp.inverse_gamma(2.0, 2.0), num_features=3)
    _, labels = jax.jit(jax.vmap(lambda k: prior.sample(k, 21, 1)))(
        jax.random.split(jax.random.key(0), 20_000)
    )
    labels = np.asarray(labels)
    same = np.all(labels == labels[:, :1], axis=1)
    rng = np.random.default_rng(1)
    num = 40_000
    x = np.zeros((num, 21, 3))
    x[..., 0] = rng.uniform(-1, 1, (num, 21))
    # The kernel in float64 (NumPy's broadcasting through JAX under x64).
    with jax.enable_x64(True):
        cov = np.asarray(jax.vmap(prior.process.kernel)(jnp.asarray(x)), np.float64)
    values, vectors = np.linalg.eigh(cov + prior.process.jitter * np.eye(21))
    root = vectors * np.sqrt(np.maximum(values, 0.0))[:, None, :]
    scale = stats.invgamma(2.0, scale=2.0).rvs(size=num, random_state=rng)
    f = np.sqrt(scale)[:, None] * np.einsum("bij,bj->bi", root, rng.normal(size=(num, 21)))
    # P(all labels equal | f) = prod p1 + prod p0, averaged over the draws of f.
    expected = np.exp(-np.logaddexp(0, -f).sum(axis=1)) + np.exp(-np.logaddexp(0, f).sum(axis=1))
    se = np.sqrt(same.var() / same.size + expected.var() / expected.size)
    assert abs(same.mean() - expected.mean()) < 5 * se, (same.mean(), expected.mean(), se)


def test_classifier_predictions_ignore_other_test_points_train_order_and_own_label():
    model = _random_classifier(num_classes=3)
    rng = np.random.default_rng(0)
    x_train, labels = rng.uniform(-1, 1, (8, 2)), rng.integers(0, 3, 8)
    x_test = rng.uniform(-1, 1, (4, 2))

    def logits(x_train=x_train, labels=labels, x_test=x_test):
        return np.asarray(model(jnp.asarray(x_train), jnp.asarray(labels, jnp.float32),
                                jnp.asarray(x_test)))  # fmt: skip

    base = logits()
    assert base.shape == (4, 3)
    changed = x_test.copy()
    changed[3] = [0.9, -0.9]
    other = logits(x_test=changed)
    np.testing.assert_allclose(other[:3], base[:3], rtol=1e-5, atol=1e-5)
    assert np.max(np.abs(other[3] - base[3])) > 1e-3
    order = rng.permutation(8)
    np.testing.assert_allclose(logits(x_train[order], labels[order]), base, atol=1e-4)
    relabelled = labels.copy()
    relabelled[0] = (labels[0] + 1) % 3
    assert np.max(np.abs(logits(labels=relabelled) - base)) > 1e-3  # the labels matter
    # log_prob: the log-softmax at each row's label, never depending on a test row's own.
    x_all = jnp.asarray(np.concatenate([x_train, x_test]))
    y_all = np.concatenate([labels, [0, 1, 2, 0]]).astype(np.float32)
    log_prob = np.asarray(model.log_prob(x_all, jnp.asarray(y_all), 8))
    expected = jax.nn.log_softmax(jnp.asarray(base), axis=-1)[np.arange(4), [0, 1, 2, 0]]
    np.testing.assert_allclose(log_prob[8:], np.asarray(expected), atol=1e-5)
    y_other = y_all.copy()
    y_other[8:] = [2, 2, 0, 1]
    moved = np.asarray(model.log_prob(x_all, jnp.asarray(y_other), 8))
    expected = jax.nn.log_softmax(jnp.asarray(base), axis=-1)[np.arange(4), [2, 2, 0, 1]]
    np.testing.assert_allclose(moved[8:], np.asarray(expected), atol=1e-5)


def test_classifier_predict_checks_labels_and_gives_probabilities(tmp_path):
    import matplotlib

    matplotlib.use("Agg")
    model = _random_classifier()
    rng = np.random.default_rng(3)
    x_train, labels = rng.uniform(-1, 1, (6, 1)), rng.integers(0, 2, 6)
    x_test = np.linspace(-0.9, 0.9, 5)[:, None]
    predictive = amortize.predict(model, x_train, labels, x_test)
    assert isinstance(predictive, amortize.PFNClassPredictive)
    probabilities = predictive.probabilities
    assert probabilities.shape == (5, 2) and probabilities.dtype == np.float64
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(
        predictive.log_prob(np.array([0, 1, 1, 0, 1])),
        np.log(probabilities[np.arange(5), [0, 1, 1, 0, 1]]),
        rtol=1e-10,
    )
    np.testing.assert_array_equal(predictive.predicted_class, probabilities.argmax(axis=1))
    # The network sees the inputs zero-padded to its features, as the prior draws them.
    padded = model(jnp.asarray(np.pad(x_train, ((0, 0), (0, 1))), jnp.float32),
                   jnp.asarray(labels, jnp.float32),
                   jnp.asarray(np.pad(x_test, ((0, 0), (0, 1))), jnp.float32))  # fmt: skip
    np.testing.assert_allclose(
        probabilities, np.asarray(jax.nn.softmax(padded, axis=-1)), rtol=1e-5, atol=1e-6
    )
    # Draws: label frequencies within 5 binomial s.e. of the probabilities.
    draws = predictive.sample(jax.random.key(0), 4000)
    assert draws.shape == (4000, 5) and set(np.unique(draws)) <= {0, 1}
    se = np.sqrt(probabilities[:, 1] * (1 - probabilities[:, 1]) / 4000)
    assert np.all(np.abs(draws.mean(axis=0) - probabilities[:, 1]) < 5 * se + 1e-3)
    idata = predictive.to_idata(jax.random.key(1), 200)
    assert idata.posterior_predictive["y"].shape == (1, 200, 5)
    ax = predictive.plot(x_test, x_train, labels)
    assert len(ax.lines) == 2 and len(ax.collections) == 2
    # Whole numbers as floats (as the priors draw them) are labels; fractions are not.
    as_floats = amortize.predict(model, x_train, labels.astype(np.float32), x_test)
    np.testing.assert_array_equal(as_floats.probabilities, probabilities)
    for bad, match in (
        (labels + 0.5, r"`y_train` must hold class labels 0..1, got \d\.5"),
        (labels[:5], r"shape \(6,\)"),
        (np.full(6, 2), r"must lie in 0..1 \(there are 2 classes\)"),
    ):
        with pytest.raises(ValueError, match=match):
            amortize.predict(model, x_train, bad, x_test)
    with pytest.raises(TypeError, match="y_train"):
        amortize.predict(model, x_train, np.array(["a"] * 6), x_test)
    with pytest.raises(ValueError, match="`labels` must hold class labels"):
        predictive.log_prob(np.full(5, 0.5))
    with pytest.raises(TypeError, match="must be a PFN or a PFNClassifier"):
        amortize.predict(object(), x_train, labels, x_test)  # pyright: ignore
    with pytest.raises(ValueError, match="features but the model was trained for at most 2"):
        amortize.predict(model, np.zeros((6, 3)), labels, np.zeros((2, 3)))
    with pytest.raises(ValueError, match="at most 12"):
        amortize.predict(model, np.zeros((13, 1)), np.zeros(13, int), x_test)
    with pytest.warns(UserWarning, match="outside the prior's range"):
        amortize.predict(model, 3 * x_train, labels, x_test)


def test_classifier_trains_resumes_loads_and_predicts_from_the_cli(tmp_path, capsys):
    """A tiny run learns (its held-out cross-entropy drops below the prior's log 2 = 0.693),
    is resumed exactly, saves and loads as a classifier, predicts through the CLI, and
    refuses what only a regression PFN has."""
    prior = _prior(nngp.inverse_gamma(2.0, 2.0), num_features=1)
    spec = {"type": "gp_classification", "num_features": 1}
    config = amortize.TrainingConfig(num_steps=120, steps_per_chunk=40, **TINY)
    straight, losses = amortize.train(prior, config, progress=False)
    assert isinstance(straight, amortize.PFNClassifier) and losses.shape == (120,)
    # Knowing nothing scores log 2 = 0.693. Measured, seed 0: first 20 steps 0.696, last 20
    # 0.664 (per-step s.d. about 0.025: s.e. of a 20-step mean about 0.006).
    assert losses[-20:].mean() < np.log(2) - 0.015, (losses[:20].mean(), losses[-20:].mean())
    folder = tmp_path / "run"
    amortize.train(prior, config, checkpoint_dir=folder, prior_spec=spec, progress=False,
                   stop_after=80)  # fmt: skip
    resumed, rest = amortize.train(prior, config, checkpoint_dir=folder, prior_spec=spec,
                                   progress=False)  # fmt: skip
    assert rest.shape == (40,)
    for a, b in zip(jax.tree.leaves(eqx.filter(straight, eqx.is_array)),
                    jax.tree.leaves(eqx.filter(resumed, eqx.is_array)), strict=True):  # fmt: skip
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    saved = json.loads((folder / "config.json").read_text())
    assert saved["num_classes"] == 2 and "tails" not in saved
    loaded = amortize.load(folder)
    assert isinstance(loaded, amortize.PFNClassifier)
    x = np.linspace(-1, 1, 6)[:, None]
    labels = (x[:, 0] > 0).astype(int)
    expected = amortize.predict(resumed, x, labels, x).probabilities
    np.testing.assert_allclose(amortize.predict(loaded, x, labels, x).probabilities, expected)
    with jax.enable_x64(True):
        loaded64 = amortize.load(folder)
        np.testing.assert_allclose(
            amortize.predict(loaded64, x, labels, x).probabilities, expected, rtol=1e-6
        )
    data = tmp_path / "data.json"
    data.write_text(json.dumps({"x_train": x.tolist(), "y_train": labels.tolist(),
                                "x_test": x.tolist(), "y_test": labels.tolist()}))  # fmt: skip
    out = tmp_path / "prediction.json"
    assert cli_main(["pfn", "predict", "--model", str(folder), "--data", str(data),
                     "--out", str(out)]) == 0  # fmt: skip
    written = json.loads(out.read_text())
    np.testing.assert_allclose(written["probabilities"], expected, rtol=1e-6)
    assert written["predicted_class"] == expected.argmax(axis=1).tolist()
    assert "mean test log probability" in capsys.readouterr().out
    with pytest.raises(ValueError, match="no tails to fit"):
        amortize.save_fitted_tails(folder)
    with pytest.raises(ValueError, match="set `scale_free` to false"):
        amortize.initial_state(prior, amortize.TrainingConfig(scale_free=True, min_train=2))
    # Fine-tuning from a classifier: same kind and classes only (one chunk of the run's own
    # configuration: the compiled training step is reused).
    tuned, tuned_losses = amortize.train(
        prior, config, init_from=folder, progress=False, stop_after=40
    )
    assert isinstance(tuned, amortize.PFNClassifier) and tuned_losses.shape == (40,)
    three = _prior(nngp.inverse_gamma(2.0, 2.0), num_classes=3, num_features=1)
    with pytest.raises(ValueError, match="has 2 classes but this run's prior has 3"):
        amortize.train(three, config, init_from=folder, progress=False)
    regression = amortize.GPPrior(nngp.rbf(0.3), 0.01, num_features=1)
    with pytest.raises(ValueError, match="is a PFNClassifier but this run's prior trains a PFN"):
        amortize.train(regression, amortize.TrainingConfig(num_steps=1, **TINY),
                       init_from=folder, progress=False)  # fmt: skip


def test_shipped_classifier_loads_and_follows_the_data():
    """The shipped classifier on 20 points split cleanly at 0 (1-d, padded to its 3
    features) against NUTS on the same model (`benchmarks/pfn_classifier.py`'s reference,
    two seeds agreeing to 0.002: P(class 1) 0.129, 0.499, 0.869 at -0.8, 0, 0.8). The model
    was measured 0.030, 0.009 and 0.035 off; 0.06 catches a model or prediction-path
    regression (an untrained one gives 0.5 everywhere)."""
    model = amortize.load(amortize.PRETRAINED_GP_CLASSIFIER)
    assert isinstance(model, amortize.PFNClassifier)
    assert model.num_features == 3 and model.max_train == 50 and model.num_classes == 2
    x = np.linspace(-0.95, 0.95, 20)[:, None]
    labels = (x[:, 0] > 0).astype(int)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        predictive = amortize.predict(model, x, labels, np.array([[-0.8], [0.0], [0.8]]))
    np.testing.assert_allclose(predictive.probabilities[:, 1], [0.129, 0.499, 0.869], atol=0.06)
