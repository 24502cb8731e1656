"""Distribution transformer over a GP's hyperparameters: a mixture prior plus GP data.

The GP likelihood is checked against NumPyro's multivariate normal, the importance-sampling
reference against brute-force grid integration, the network's invariances (padding and
order of observations and components, copies) exactly on random weights, the input
checks by name, and the shipped model's accuracy against the reference.
"""

from __future__ import annotations

import json
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
import pytest
from _dt import apply_compiled, random_weights

from probinfer import amortize
from probinfer.amortize import (
    DistributionTransformer,
    GPHyperparameterTask,
    GPRegressionData,
    gaussian_mixture,
    gp_regression_data,
)

INPUTS = np.array([-0.8, -0.1, 0.3, 0.9])
VALUES = np.array([0.4, -0.2, 0.1, 0.7])
TASK = GPHyperparameterTask(max_components=2, max_observations=6)


@pytest.fixture(scope="module")
def prior() -> amortize.GaussianMixture:
    return gaussian_mixture(
        [0.3, 0.7],
        [[-1.0, 0.0, -3.0], [-0.5, 0.2, -4.0]],
        np.stack([np.diag([0.25, 0.09, 0.5]), np.diag([0.1, 0.2, 0.8])]),
    )


@pytest.fixture(scope="module")
def random_model() -> DistributionTransformer:
    model = DistributionTransformer(
        3, max_components=2, max_observations=6, width=32, num_layers=2, mlp_width=32,
        prior_family="gp_hyperparameters", prior_ranges=TASK.prior_ranges(),
        component_copies=3, num_observation_layers=1, key=jax.random.key(0),
    )  # fmt: skip
    return random_weights(model, jax.random.key(1))


def rbf_marginal_log_density(theta: jax.Array, inputs: np.ndarray, values: np.ndarray) -> float:
    """``log N(values; 0, variance K + (noise + jitter) I)`` by NumPyro, ``K`` the RBF
    kernel over squared distances of the ``(n, D)`` inputs."""
    lengthscale, variance, noise = np.exp(np.asarray(theta))
    squared = np.sum((inputs[:, None, :] - inputs[None, :, :]) ** 2, axis=-1)
    covariance = variance * np.exp(-0.5 * squared / lengthscale**2) + (
        noise + amortize.gp_hyperparameters.NOISE_JITTER
    ) * np.eye(len(values))
    normal = dist.MultivariateNormal(jnp.zeros(len(values)), jnp.asarray(covariance))
    return float(normal.log_prob(jnp.asarray(values)))


def test_log_likelihood_is_the_gp_marginal_and_a_mask_drops_points() -> None:
    """``gp_log_likelihood`` is ``N(y; 0, variance K + (noise + jitter) I)`` for the RBF
    kernel; padded points (any values) add nothing."""
    theta = jnp.array([-0.7, 0.3, -2.5])
    want = rbf_marginal_log_density(theta, INPUTS[:, None], VALUES)
    data = gp_regression_data(INPUTS, VALUES)
    np.testing.assert_allclose(float(amortize.gp_log_likelihood(theta, data)), want, rtol=1e-5)
    padded = GPRegressionData(
        jnp.asarray(np.r_[INPUTS, 0.2, 5.0][:, None]), jnp.asarray(np.r_[VALUES, 9.0, -3.0])
    )
    masked = amortize.gp_log_likelihood(theta, padded, jnp.arange(6) < 4)
    np.testing.assert_allclose(float(masked), want, rtol=1e-5)


def test_importance_posterior_matches_grid_integration(prior) -> None:
    """The importance-sampling evidence and posterior mean agree with brute-force
    integration over a 3-d grid (+-6 prior standard deviations, 64 nodes per axis) within
    5 Monte Carlo standard errors, and a poor proposal (the prior itself, twice as wide)
    gives the same answer."""
    data = gp_regression_data(INPUTS, VALUES)
    sd = np.sqrt(np.diagonal(np.asarray(prior.covariance)))
    center = np.asarray(prior.mean)
    axes = [np.linspace(c - 6 * s, c + 6 * s, 64) for c, s in zip(center, sd, strict=True)]
    grid = jnp.asarray(np.stack(np.meshgrid(*axes, indexing="ij"), -1).reshape(-1, 3))
    log_joint = prior.log_prob(grid) + jax.vmap(lambda t: amortize.gp_log_likelihood(t, data))(grid)
    cell = np.prod([a[1] - a[0] for a in axes])
    log_evidence = float(jax.scipy.special.logsumexp(log_joint)) + np.log(cell)
    weights = np.asarray(jax.nn.softmax(log_joint))
    mean = weights @ np.asarray(grid)
    wide = amortize.GaussianMixture(prior.log_weights, prior.means, 2.0 * prior.scale_tril)
    for key, proposal in ((0, prior), (1, wide)):
        reference = amortize.importance_posterior(
            jax.random.key(key), prior, data, proposal, num_draws=2**15
        )
        w = np.exp(np.asarray(reference.log_weights, np.float64))
        ratios = w * w.size  # relative to their mean
        se_log_evidence = ratios.std() / np.sqrt(w.size)
        assert abs(float(reference.log_evidence) - log_evidence) < 5 * se_log_evidence
        draws = np.asarray(reference.draws, np.float64)
        got = w @ draws
        se = np.sqrt(np.sum(w[:, None] ** 2 * (draws - got) ** 2, axis=0))
        assert np.all(np.abs(got - mean) < 5 * se), (got, mean, se)


def test_padding_order_and_copies_leave_the_answer_unchanged(random_model, prior) -> None:
    """With random weights: padded points and a padded component (any values) change
    nothing; permuting points or prior components permutes nothing else; every prior
    component gives ``component_copies`` posterior components whose weights sum to one."""
    data = gp_regression_data(INPUTS, VALUES)
    answer = apply_compiled(random_model, prior, data)
    assert answer.num_components == 2 * 3
    np.testing.assert_allclose(float(jnp.sum(answer.weights)), 1.0, rtol=1e-5)
    padded_data = GPRegressionData(
        jnp.asarray(np.r_[INPUTS, 0.5, -0.7][:, None]), jnp.asarray(np.r_[VALUES, 3.0, -8.0])
    )
    padded = apply_compiled(random_model, prior, padded_data, observation_mask=jnp.arange(6) < 4)
    order = np.array([2, 0, 3, 1])
    shuffled = apply_compiled(random_model, prior, gp_regression_data(INPUTS[order], VALUES[order]))
    for other in (padded, shuffled):
        for got, want in zip(jax.tree.leaves(other), jax.tree.leaves(answer), strict=True):
            np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)
    swapped = amortize.GaussianMixture(
        prior.log_weights[::-1], prior.means[::-1], prior.scale_tril[::-1]
    )
    swapped_answer = apply_compiled(random_model, swapped, data)
    back = np.r_[3:6, 0:3]  # component k's copies move with it
    np.testing.assert_allclose(
        np.asarray(swapped_answer.means)[back], np.asarray(answer.means), rtol=2e-4, atol=2e-5
    )
    # A padded second component (any moments) gives the one-component answer, whose
    # copies come first.
    one = amortize.GaussianMixture(prior.log_weights[:1] * 0, prior.means[:1], prior.scale_tril[:1])
    alone = apply_compiled(random_model, one, data)
    junk = amortize.GaussianMixture(
        jnp.array([0.0, 3.0]), prior.means.at[1].set(7.0), prior.scale_tril
    )
    padded_component = apply_compiled(
        random_model, junk, data, component_mask=jnp.array([True, False])
    )
    assert np.all(np.isneginf(np.asarray(padded_component.log_weights)[3:]))
    for got, want in zip(
        (padded_component.log_weights[:3], padded_component.means[:3]),
        (alone.log_weights, alone.means),
        strict=True,
    ):
        np.testing.assert_allclose(got, want, rtol=2e-4, atol=2e-5)


def test_two_input_features_end_to_end(prior) -> None:
    """``num_features = 2``: the likelihood is the isotropic RBF GP's over squared
    distances in 2-d; the task draws 2-d inputs; a 2-feature model (random weights) gives
    a normalised posterior invariant to the order of the points, and refuses 1-d data."""
    inputs = np.c_[INPUTS, [0.5, -0.6, 0.2, -0.9]]
    theta = jnp.array([-0.7, 0.3, -2.5])
    want = rbf_marginal_log_density(theta, inputs, VALUES)
    data = gp_regression_data(inputs, VALUES)
    np.testing.assert_allclose(float(amortize.gp_log_likelihood(theta, data)), want, rtol=1e-5)
    task = GPHyperparameterTask(max_components=2, max_observations=6, num_features=2)
    example = task.sample(jax.random.key(3))
    assert example.data.inputs.shape == (6, 2)
    model = DistributionTransformer(
        3, max_components=2, max_observations=6, width=32, num_layers=1, mlp_width=32,
        prior_family="gp_hyperparameters", prior_ranges=task.prior_ranges(), num_features=2,
        component_copies=2, num_observation_layers=1, key=jax.random.key(4),
    )  # fmt: skip
    model = random_weights(model, jax.random.key(5))
    answer = apply_compiled(model, prior, data)
    assert answer.num_components == 2 * 2 and answer.means.shape == (4, 3)
    np.testing.assert_allclose(float(jnp.sum(answer.weights)), 1.0, rtol=1e-5)
    order = np.array([3, 1, 0, 2])
    shuffled = apply_compiled(model, prior, gp_regression_data(inputs[order], VALUES[order]))
    for got, want_leaf in zip(jax.tree.leaves(shuffled), jax.tree.leaves(answer), strict=True):
        np.testing.assert_allclose(got, want_leaf, rtol=2e-4, atol=2e-5)
    with pytest.raises(ValueError, match="1 features but the model was trained on 2"):
        amortize.posterior(model, prior, gp_regression_data(INPUTS, VALUES))


def test_posterior_checks_the_inputs_by_name(random_model, prior) -> None:
    """Wrong data type, feature count, too many points: errors naming the fix; inputs
    beyond [-1, 1] and prior components beyond the trained ranges: a warning with the
    numbers; one prior component of two gives its three copies back."""
    data = gp_regression_data(INPUTS, VALUES)
    with pytest.raises(TypeError, match="gp_regression_data"):
        amortize.posterior(random_model, prior, amortize.normal_data(VALUES))
    with pytest.raises(ValueError, match="2 features but the model was trained on 1"):
        amortize.posterior(random_model, prior, gp_regression_data(np.c_[INPUTS, INPUTS], VALUES))
    with pytest.raises(ValueError, match="pi.sample"):
        amortize.posterior(
            random_model, prior, gp_regression_data(np.linspace(-1, 1, 7), np.zeros(7))
        )
    with pytest.raises(ValueError, match="`values` contains NaN"):
        gp_regression_data(INPUTS, np.r_[VALUES[:3], np.nan])
    with pytest.warns(UserWarning, match=r"inputs up to 2.7 .*outside \[-1, 1\]"):
        amortize.posterior(random_model, prior, gp_regression_data(3 * INPUTS, VALUES))
    far = gaussian_mixture([1.0], [[-1.0, 0.0, -12.0]], np.diag([0.25, 0.09, 0.5])[None])
    with pytest.warns(UserWarning, match="`log_noise` means"):
        amortize.posterior(random_model, far, data)
    one = gaussian_mixture([1.0], prior.means[:1], np.asarray(prior.component_covariances)[:1])
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # inside every range: no warning
        answer = amortize.posterior(random_model, one, data)
    # The copies of the real component, not the padded one's (weight 0).
    direct = apply_compiled(random_model, one, data)
    np.testing.assert_allclose(answer.means, direct.means, rtol=2e-4, atol=2e-5)
    np.testing.assert_allclose(answer.log_weights, direct.log_weights, rtol=2e-4, atol=2e-5)


def test_task_round_trips_and_refuses_bad_settings() -> None:
    """``task_from_spec(task.spec())`` rebuilds the task; bad settings name themselves."""
    assert amortize.task_from_spec(TASK.spec()) == TASK
    with pytest.raises(ValueError, match="`center` must be 3 finite numbers"):
        GPHyperparameterTask(center=(0.0, 1.0))
    with pytest.raises(ValueError, match="`mean_sd` must be >= 0"):
        GPHyperparameterTask(mean_sd=(0.5, -0.1, 1.0))
    with pytest.raises(ValueError, match="`num_features` must be >= 1"):
        GPHyperparameterTask(num_features=0)
    examples = amortize.sample_examples(jax.random.key(0), TASK, 64)
    assert np.all(np.isfinite(np.asarray(examples.data.values)))
    assert np.all(np.abs(np.asarray(examples.data.inputs)) <= 1)


def test_pretrained_matches_the_importance_sampling_reference() -> None:
    """The shipped model on 200 held-out examples of its task (a key training never
    used): the two KL estimators (true-latent NLL gap and importance-weighted KL) agree
    within 4.5 standard errors of their difference, and the KL per dimension is below
    the 0.05 nats goal by more than 3 standard errors. 1,024 importance draws per example
    (measured: KL per dimension 0.02436 +- 0.0034, as with 4,096: 3x faster)."""
    model = amortize.load_dt(amortize.PRETRAINED_DT_GP)
    task = amortize.task_from_spec(
        json.loads((amortize.PRETRAINED_DT_GP / "config.json").read_text())["task"]
    )
    evaluation = amortize.evaluate_dt(
        model, task, jax.random.key(778), num_examples=200, num_draws=1024
    )
    difference = np.asarray(evaluation.nll_q - evaluation.nll_exact - evaluation.kl)
    assert abs(difference.mean()) < 4.5 * difference.std(ddof=1) / np.sqrt(difference.size)
    summary = evaluation.summary(task.dim)
    assert summary["kl_per_dim"] + 3 * summary["kl_se"] < 0.05, summary


def test_cli_posterior_for_the_shipped_model(tmp_path, capsys) -> None:
    from probinfer import cli

    data = {"prior": {"weights": [1.0], "means": [[-1.0, 0.0, -4.0]],
                      "covariances": [[[0.25, 0, 0], [0, 0.09, 0], [0, 0, 1.0]]]},
            "inputs": [-0.5, 0.1, 0.7], "values": [0.3, -0.4, 0.2]}  # fmt: skip
    (tmp_path / "data.json").write_text(json.dumps(data))
    out = tmp_path / "post.json"
    arguments = ["dt", "posterior", "--model", "dt-gp", "--data", str(tmp_path / "data.json")]
    assert cli.main([*arguments, "--out", str(out)]) == 0
    result = json.loads(out.read_text())
    assert result["latent"] == ["log_lengthscale", "log_variance", "log_noise"]
    assert len(result["weights"]) == 3 and np.isclose(sum(result["weights"]), 1.0, atol=1e-5)
    del data["inputs"]
    (tmp_path / "data.json").write_text(json.dumps(data))
    assert cli.main(arguments) == 2
    assert "inputs" in capsys.readouterr().err


def test_gp_predictive_log_density_matches_dense_algebra() -> None:
    """Two hyperparameter draws, equal and unequal weights, against the GP predictive
    written out with NumPy's solve (float64)."""
    rng = np.random.default_rng(5)
    x, x_test = rng.uniform(-1, 1, size=(7, 1)), rng.uniform(-1, 1, size=(3, 1))
    y, y_test = rng.normal(size=7), rng.normal(size=3)
    draws = np.array([[-1.0, 0.2, -3.0], [-0.3, -0.5, -2.0]])

    def dense(theta):
        lengthscale, variance, noise = np.exp(theta)

        def kernel(a, b):
            return variance * np.exp(-0.5 * (a - b.T) ** 2 / lengthscale**2)

        covariance = kernel(x, x) + (noise + 1e-6) * np.eye(7)
        cross = kernel(x_test, x)
        mean = cross @ np.linalg.solve(covariance, y)
        var = variance - np.sum(cross * np.linalg.solve(covariance, cross.T).T, axis=1)
        sd = np.sqrt(var + noise + 1e-6)
        return -0.5 * ((y_test - mean) / sd) ** 2 - np.log(sd) - 0.5 * np.log(2 * np.pi)

    per_draw = np.stack([dense(theta) for theta in draws])
    log_weights = np.log([0.3, 0.7])
    with jax.enable_x64(True):
        data = amortize.gp_regression_data(x, y)
        equal = amortize.gp_predictive_log_density(jnp.asarray(draws), data, x_test, y_test)
        weighted = amortize.gp_predictive_log_density(
            jnp.asarray(draws), data, x_test, y_test, jnp.asarray(log_weights)
        )
    expected_equal = np.logaddexp(*per_draw) - np.log(2)
    expected_weighted = np.logaddexp(*(per_draw + log_weights[:, None]))
    np.testing.assert_allclose(equal, expected_equal, rtol=1e-9)
    np.testing.assert_allclose(weighted, expected_weighted, rtol=1e-9)
