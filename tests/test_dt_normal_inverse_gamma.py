"""Distribution transformer with a parametric prior: normal-inverse-gamma, draws of a normal.

The prior's density is checked against SciPy, its exact posterior and evidence against
Bayes' rule, its draws against its moments; the network's symmetries (units of ``y``,
order and padding of observations) exactly on random weights; the shipped model's accuracy
against the exact posterior in ``test_pretrained_matches_exact_posterior``.
"""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _dt import apply_compiled, assert_matches_exact_posterior, random_weights
from scipy import special, stats

from probinfer import amortize
from probinfer.amortize import (
    DistributionTransformer,
    NormalData,
    NormalInverseGamma,
    normal_data,
    normal_inverse_gamma,
)

VALUES = [1.0, 2.0, 0.5, -0.3]


@pytest.fixture(scope="module")
def prior() -> NormalInverseGamma:
    return normal_inverse_gamma(0.5, 2.0, 3.0, 4.0)


# The random model's task: its trained ranges are checked by `posterior`.
TASK = amortize.NormalInverseGammaTask(max_components=3, max_observations=6)


@pytest.fixture(scope="module")
def random_model() -> DistributionTransformer:
    model = DistributionTransformer(
        2, max_components=3, max_observations=6, width=32, num_layers=2, mlp_width=32,
        prior_family="normal_inverse_gamma", prior_ranges=TASK.prior_ranges(),
        max_sharpness=TASK.sharpness_bound(), key=jax.random.key(0),
    )  # fmt: skip
    return random_weights(model, jax.random.key(1))


def test_log_prob_matches_scipy_and_condition_is_bayes_rule(prior) -> None:
    """``log p(theta)`` is SciPy's inverse-gamma and normal densities with the ``log
    sigma^2`` Jacobian; ``prior + likelihood - posterior`` is the same constant at every
    ``theta``, and that constant is the evidence (both densities are normalised, so the
    posterior is exact); a mask drops observations exactly."""
    data = normal_data(VALUES)
    posterior = prior.condition(data)
    evidence = float(prior.log_marginal_likelihood(data))
    for mu, log_variance in [(0.3, 0.2), (1.0, -0.5), (-2.0, 1.5)]:
        variance = np.exp(log_variance)
        want = (
            stats.invgamma.logpdf(variance, 3.0, scale=4.0)
            + log_variance
            + stats.norm.logpdf(mu, 0.5, np.sqrt(variance / 2.0))
        )
        theta = jnp.array([mu, log_variance])
        np.testing.assert_allclose(float(prior.log_prob(theta)), want, rtol=1e-5)
        likelihood = stats.norm.logpdf(VALUES, mu, np.sqrt(variance)).sum()
        constant = want + likelihood - float(posterior.log_prob(theta))
        np.testing.assert_allclose(constant, evidence, rtol=1e-5)
    padded = NormalData(jnp.array([*VALUES, np.nan, 7.0]))
    masked = prior.condition(padded, observation_mask=jnp.arange(6) < 4)
    for got, want in zip(jax.tree.leaves(masked), jax.tree.leaves(posterior), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)
    np.testing.assert_allclose(
        float(prior.log_marginal_likelihood(padded, observation_mask=jnp.arange(6) < 4)),
        evidence,
        rtol=1e-6,
    )
    empty = prior.condition(normal_data(np.zeros(0)))
    for got, want in zip(jax.tree.leaves(empty), jax.tree.leaves(prior), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6)


def test_sample_moments(prior) -> None:
    """Draws have the exact mean of ``theta`` and variance of ``log sigma^2``
    (``trigamma(concentration)``) and of ``mu`` (``rate / ((concentration - 1)
    pseudo_count)``, the Student-t marginal's), within 5 Monte Carlo standard errors."""
    draws = np.asarray(prior.sample(jax.random.key(3), 40_000), dtype=float)
    assert draws.shape == (40_000, 2)
    mean, error = draws.mean(0), draws.std(0) / np.sqrt(draws.shape[0])
    assert np.all(np.abs(mean - np.asarray(prior.mean)) < 5 * error), (mean, prior.mean)
    for axis, variance in ((1, special.polygamma(1, 3.0)), (0, 4.0 / ((3.0 - 1) * 2.0))):
        centred = (draws[:, axis] - draws[:, axis].mean()) ** 2
        variance_error = centred.std() / np.sqrt(centred.size)
        assert abs(centred.mean() - variance) < 5 * variance_error, (axis, centred.mean())


@pytest.mark.parametrize(
    ("arguments", "match"),
    [
        ((0.0, 1.0, -1.0, 1.0), "`concentration` must be > 0"),
        ((0.0, 0.0, 1.0, 1.0), "`pseudo_count` must be > 0"),
        ((np.nan, 1.0, 1.0, 1.0), "`loc` must be finite"),
        ((0.0, 1.0, 1.0, [1.0, 2.0]), "`rate` must be one number"),
    ],
)
def test_bad_priors_and_data_are_refused(arguments, match) -> None:
    with pytest.raises(ValueError, match=match):
        normal_inverse_gamma(*arguments)
    with pytest.raises(ValueError, match="NaN"):
        normal_data([1.0, np.nan])
    with pytest.raises(ValueError, match=r"shape \(n,\)"):
        normal_data([[1.0, 2.0]])


def test_untrained_network_returns_the_moment_frame(prior) -> None:
    """Zero-initialised branches: every component is the prior's moment-matched frame."""
    model = DistributionTransformer(
        2, max_components=3, max_observations=6, prior_family="normal_inverse_gamma",
        key=jax.random.key(0),
    )  # fmt: skip
    result = apply_compiled(model, prior, normal_data(VALUES))
    shift, scale, _ = prior.frame()
    np.testing.assert_allclose(result.means, np.broadcast_to(shift, (3, 2)), rtol=1e-6)
    np.testing.assert_allclose(
        result.scale_tril, np.broadcast_to(np.diag(scale), (3, 2, 2)), rtol=1e-6, atol=1e-7
    )
    np.testing.assert_allclose(result.weights, np.full(3, 1 / 3), rtol=1e-6)


def test_symmetries_and_padding(random_model, prior) -> None:
    """New units of ``y`` map the posterior exactly; observation order and padding do not
    matter. On random weights, where the posterior differs from the frame by O(1)."""
    data = normal_data(VALUES)
    base = apply_compiled(random_model, prior, data)
    shift, _, _ = prior.frame()
    assert float(jnp.abs(base.means - shift[None]).max()) > 0.05

    # y -> c y + t: loc -> c loc + t, rate -> c^2 rate; mu -> c mu + t, log sigma^2
    # -> log sigma^2 + 2 log c.
    c, t = 250.0, -3.0
    moved_prior = NormalInverseGamma(
        c * prior.loc + t, prior.pseudo_count, prior.concentration, c**2 * prior.rate
    )
    moved = apply_compiled(random_model, moved_prior, NormalData(c * data.values + t))
    np.testing.assert_allclose(moved.means[:, 0], c * base.means[:, 0] + t, rtol=1e-4)
    np.testing.assert_allclose(
        moved.means[:, 1], base.means[:, 1] + 2 * np.log(c), rtol=1e-4, atol=1e-4
    )
    np.testing.assert_allclose(moved.log_weights, base.log_weights, atol=1e-4)
    units = jnp.array([c, 1.0])
    np.testing.assert_allclose(
        moved.scale_tril, base.scale_tril * units[None, :, None], rtol=1e-4, atol=1e-6
    )

    shuffled = apply_compiled(random_model, prior, NormalData(data.values[jnp.array([2, 0, 3, 1])]))
    np.testing.assert_allclose(shuffled.means, base.means, rtol=1e-4, atol=1e-5)
    # Padded observations hold garbage: the mask keeps it out.
    padded = apply_compiled(
        random_model,
        prior,
        NormalData(jnp.array([*VALUES, jnp.nan, 1e30])),
        observation_mask=jnp.arange(6) < 4,
    )
    for got, want in zip(jax.tree.leaves(padded), jax.tree.leaves(base), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-5)


def test_checked_posterior_refuses_bad_input(random_model, prior) -> None:
    data = normal_data(VALUES)
    mixture = amortize.gaussian_mixture([1.0], [[0.0, 0.0]], [np.eye(2)])
    with pytest.raises(TypeError, match="trained on normal-inverse-gamma priors.*dt-2d"):
        amortize.posterior(random_model, mixture, data)
    shipped_mixture_model = amortize.load_dt(amortize.PRETRAINED_DT_2D)
    with pytest.raises(TypeError, match="trained on Gaussian-mixture priors.*dt-nig"):
        amortize.posterior(shipped_mixture_model, prior, data)
    with pytest.raises(TypeError, match="linear-Gaussian observations.*dt-nig"):
        amortize.posterior(shipped_mixture_model, mixture, data)
    # Priors built directly get the builder's checks, by name.
    with pytest.raises(ValueError, match="`pseudo_count` must be > 0"):
        amortize.posterior(random_model, NormalInverseGamma(0.0, -1.0, 2.0, 1.0), data)
    with pytest.raises(ValueError, match="`rate`"):  # 0 in float32, tiny in float64
        amortize.posterior(random_model, NormalInverseGamma(0.0, 1.0, 2.0, 1e-50), data)
    with pytest.raises(ValueError, match="one number each"):
        batched = NormalInverseGamma(jnp.zeros(2), jnp.ones(2), jnp.ones(2), jnp.ones(2))
        amortize.posterior(random_model, batched, data)
    with pytest.raises(ValueError, match="`values` contains NaN"):
        amortize.posterior(random_model, prior, NormalData(jnp.array([1.0, jnp.nan])))
    # A prior built directly from Python numbers (unchecked) works like a checked one.
    direct = NormalInverseGamma(0.5, 2.0, 3.0, 4.0)
    np.testing.assert_allclose(
        amortize.posterior(random_model, direct, data).means,
        amortize.posterior(random_model, prior, data).means,
    )
    with pytest.raises(TypeError, match="normal_data"):
        amortize.posterior(
            random_model, prior, amortize.linear_gaussian_data([[1.0, 0.0]], [1.0], 1.0)
        )
    with pytest.raises(ValueError, match="at most 6"):
        amortize.posterior(random_model, prior, normal_data(np.zeros(7)))
    result = amortize.posterior(random_model, prior, data)
    idata = result.to_idata(jax.random.key(0), 300, names=["mu", "log_sigma2"])
    assert idata.posterior["mu"].shape == idata.posterior["log_sigma2"].shape == (1, 300)
    with pytest.raises(ValueError, match="2 distinct names"):
        result.to_idata(jax.random.key(0), 10, names=["mu", "mu"])
    with pytest.raises(ValueError, match="one name per axis"):
        result.to_idata(jax.random.key(0), 10, names="mu")
    np.testing.assert_allclose(
        result.means, apply_compiled(random_model, prior, data).means, rtol=1e-5
    )
    assert amortize.posterior(random_model, prior, normal_data(np.zeros(0))).num_components == 3
    with pytest.raises(ValueError, match="prior_family"):
        DistributionTransformer(2, max_components=2, max_observations=2, prior_family="gamma",
                                key=jax.random.key(0))  # fmt: skip
    with pytest.raises(ValueError, match="`dim` must be 2"):
        DistributionTransformer(3, max_components=2, max_observations=2,
                                prior_family="normal_inverse_gamma",
                                key=jax.random.key(0))  # fmt: skip


def test_checked_posterior_compiles_once(random_model, prior, count_compilations) -> None:
    """After one call, other numbers of observations and other priors compile nothing."""
    # Built first: making a device array of a new shape may compile a conversion.
    data = [normal_data(np.arange(size, dtype=float)) for size in (0, 1, 6)]
    other = normal_inverse_gamma(1.0, 0.5, 2.0, 9.0)
    amortize.posterior(random_model, prior, normal_data(VALUES))
    count_compilations.clear()
    for observations in data:
        amortize.posterior(random_model, other, observations)
    assert count_compilations == [], f"{len(count_compilations)} XLA compilations"


def test_data_sharpness_is_the_precision_gain(prior) -> None:
    """``1 + sharpness^2`` is the larger of ``mu``'s exact precision gain (``kappa_n /
    kappa``) and ``log sigma^2``'s (``concentration_n / concentration``, to first order);
    no data give 0."""
    data = normal_data(VALUES)
    # The mean's gain is the larger for the fixture, the variance's for the second prior.
    for one in (prior, normal_inverse_gamma(0.0, 10.0, 0.5, 1.0)):
        posterior = one.condition(data)
        gains = (
            float(posterior.pseudo_count / one.pseudo_count),
            float(posterior.concentration / one.concentration),
        )
        assert gains[0] != gains[1]
        np.testing.assert_allclose(
            1 + float(amortize.data_sharpness(one, data)) ** 2, max(gains), rtol=1e-6
        )
    assert float(amortize.data_sharpness(prior, normal_data(np.zeros(0)))) == 0.0


def test_task_round_trips_and_trains(tmp_path) -> None:
    """The task's spec rebuilds it; a tiny run trains, saves and loads as this family."""
    task = amortize.NormalInverseGammaTask(max_components=2, max_observations=4)
    assert amortize.task_from_spec(json.loads(json.dumps(task.spec()))) == task
    example = task.sample(jax.random.key(0))
    assert example.theta.shape == (2,) and example.data.values.shape == (4,)
    config = amortize.DTTrainingConfig(num_steps=4, batch_size=8, width=16, num_layers=1,
                                       num_heads=2, mlp_width=16, warmup_steps=1,
                                       steps_per_chunk=2)  # fmt: skip
    model, losses = amortize.train_dt(task, config, checkpoint_dir=tmp_path, progress=False)
    assert np.all(np.isfinite(losses)) and model.prior_family == "normal_inverse_gamma"
    loaded = amortize.load_dt(tmp_path)
    assert loaded.prior_family == "normal_inverse_gamma"
    assert loaded.max_sharpness == model.max_sharpness > 0
    with pytest.raises(ValueError, match="`concentration` must be"):
        amortize.NormalInverseGammaTask(concentration=(2.0, 1.0))
    assert task.sharpness_bound() == pytest.approx(np.sqrt(4 * 10.0))
    assert amortize.trained_sharpness(task) == task.sharpness_bound()


@pytest.fixture(scope="module")
def pretrained() -> DistributionTransformer:
    return amortize.load_dt(amortize.PRETRAINED_DT_NORMAL_INVERSE_GAMMA)


def test_pretrained_matches_exact_posterior(pretrained) -> None:
    """The shipped model against the exact posterior (as the mixture models:
    `assert_matches_exact_posterior`)."""
    assert_matches_exact_posterior(pretrained, amortize.PRETRAINED_DT_NORMAL_INVERSE_GAMMA)


def test_posterior_warns_outside_the_trained_ranges(random_model) -> None:
    """A prior parameter outside the trained ranges is warned about, naming it and the
    range; a prior in range (at the ranges' ends too) is not, with the most observations
    (its sharpness at most the task's bound, which is not checked separately)."""
    model = random_model
    data = normal_data(np.linspace(-1.0, 2.0, 6))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for count, concentration in ((1.0, 2.0), (0.1, 0.5), (10.0, 10.0)):
            amortize.posterior(model, normal_inverse_gamma(0.0, count, concentration, 1.0), data)
    with pytest.warns(UserWarning, match=r"`concentration` is 0\.2, outside .*\[0\.5, 10\]"):
        amortize.posterior(model, normal_inverse_gamma(0.0, 1.0, 0.2, 1.0), data)
    with pytest.warns(UserWarning, match=r"`pseudo_count` is 0\.001, outside .*\[0\.1, 10\]"):
        amortize.posterior(model, normal_inverse_gamma(0.0, 1e-3, 2.0, 1.0), data)


def test_pretrained_carries_its_ranges(pretrained) -> None:
    assert dict((n, (lo, hi)) for n, lo, hi in pretrained.prior_ranges) == {
        "pseudo_count": (0.1, 10.0), "concentration": (0.5, 10.0),
    }  # fmt: skip
    assert pretrained.max_sharpness == pytest.approx(np.sqrt(16 * 10.0))


def test_cli_posterior_for_the_shipped_model(tmp_path, capsys) -> None:
    from probinfer import cli

    data = {"prior": {"loc": 0.0, "pseudo_count": 1.0, "concentration": 2.0, "rate": 2.0},
            "values": [1.9, 0.4, 2.6]}  # fmt: skip
    (tmp_path / "data.json").write_text(json.dumps(data))
    out = tmp_path / "post.json"
    arguments = ["dt", "posterior", "--model", "dt-nig", "--data", str(tmp_path / "data.json")]
    assert cli.main([*arguments, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["latent"] == ["mu", "log sigma^2"]
    assert len(result["weights"]) == 4 and np.isclose(sum(result["weights"]), 1.0, atol=1e-5)
    data["prior"]["concentration"] = -1.0
    (tmp_path / "data.json").write_text(json.dumps(data))
    assert cli.main(arguments) == 2
    assert "`concentration` must be > 0" in capsys.readouterr().err
    (tmp_path / "data.json").write_text(json.dumps({"prior": {"loc": 0.0}, "values": [1.0]}))
    assert cli.main(arguments) == 2
    assert "lacks ['pseudo_count', 'concentration', 'rate']" in capsys.readouterr().err
