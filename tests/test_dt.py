"""Distribution transformer: the mixture algebra, the network's symmetries, training, checks.

The exact posterior (``GaussianMixture.condition``) is checked against brute-force grid
integration; the network's symmetries (permutations, padding, affine changes of units) are
checked exactly on an untrained network with random weights; the shipped model's accuracy
against the exact posterior is measured in ``test_pretrained_matches_exact_posterior``.
"""

from __future__ import annotations

import json
import warnings

import arviz as az
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _dt import apply_compiled, assert_matches_exact_posterior, random_weights

from probinfer import amortize
from probinfer.amortize import (
    DistributionTransformer,
    DTTrainingConfig,
    GaussianMixture,
    gaussian_mixture,
    linear_gaussian_data,
)

# A tiny training run (the library and the CLI tests share its compiled step).
TINY_RUN = {
    "task": {"type": "linear_gaussian", "dim": 1, "max_components": 2, "max_observations": 4},
    "training": {"num_steps": 6, "batch_size": 16, "width": 16, "num_layers": 1,
                 "num_heads": 2, "mlp_width": 16, "warmup_steps": 1, "steps_per_chunk": 2},
}  # fmt: skip


@pytest.fixture(scope="module")
def prior_2d() -> GaussianMixture:
    return gaussian_mixture(
        [0.3, 0.7],
        [[-1.0, 0.5], [1.5, -0.5]],
        [[[0.5, 0.2], [0.2, 0.4]], [[0.3, -0.1], [-0.1, 0.6]]],
    )


@pytest.fixture(scope="module")
def data_2d() -> amortize.LinearGaussianData:
    return linear_gaussian_data(
        [[1.0, 0.5], [0.0, 1.0], [-0.7, 0.2]], [0.8, -0.3, 0.1], [0.5, 1.0, 0.3]
    )


@pytest.fixture(scope="module")
def random_model() -> DistributionTransformer:
    model = DistributionTransformer(
        2, max_components=4, max_observations=8, width=32, num_layers=2, mlp_width=32,
        key=jax.random.key(0),
    )  # fmt: skip
    return random_weights(model, jax.random.key(1))


def _grid(lo: float, hi: float, num: int) -> tuple[np.ndarray, np.ndarray, float]:
    axis = np.linspace(lo, hi, num)
    xx, yy = np.meshgrid(axis, axis, indexing="ij")
    return np.stack([xx, yy], -1), axis, float(axis[1] - axis[0])


def test_condition_matches_grid_integration(prior_2d, data_2d) -> None:
    """Posterior density and evidence against brute force on a 2-d grid (float64).

    Prior times likelihood is evaluated on a 601 x 601 grid over [-5, 5]^2 (the mass
    outside is < 1e-12); Riemann sums of smooth, vanishing densities are accurate to far
    below 1e-6 here.
    """
    with jax.enable_x64(True):
        prior = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), prior_2d)
        data = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), data_2d)
        points, _, step = _grid(-5, 5, 601)
        design, values = np.asarray(data.design), np.asarray(data.values)
        noise = np.asarray(data.noise_sd)
        residual = (values - points @ design.T) / noise
        log_lik = -0.5 * np.sum(residual**2, -1) - np.sum(np.log(noise)) - 1.5 * np.log(2 * np.pi)
        log_joint = np.asarray(prior.log_prob(points)) + log_lik
        evidence = np.log(np.exp(log_joint).sum() * step**2)
        np.testing.assert_allclose(float(prior.log_marginal_likelihood(data)), evidence, atol=1e-8)
        posterior = prior.condition(data)
        np.testing.assert_allclose(
            np.asarray(posterior.log_prob(points[::20, ::20])),
            (log_joint - evidence)[::20, ::20],
            atol=1e-7,
        )
        density = np.exp(np.asarray(posterior.log_prob(points)))
        grid_mean = np.einsum("ij,ijk->k", density, points) * step**2
        np.testing.assert_allclose(np.asarray(posterior.mean), grid_mean, atol=1e-8)
        centred = points - grid_mean
        grid_cov = np.einsum("ij,ijk,ijl->kl", density, centred, centred) * step**2
        np.testing.assert_allclose(np.asarray(posterior.covariance), grid_cov, atol=1e-8)


def test_condition_with_no_data_is_the_prior(prior_2d) -> None:
    posterior = prior_2d.condition(linear_gaussian_data(np.zeros((0, 2)), np.zeros(0), 1.0))
    for got, want in zip(jax.tree.leaves(posterior), jax.tree.leaves(prior_2d), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-6)


def test_sample_moments_and_idata(prior_2d) -> None:
    """Draws' mean and covariance within 4.5 Monte Carlo standard errors of the exact ones."""
    num = 40_000
    draws = np.asarray(prior_2d.sample(jax.random.key(3), (num,)))
    mean, cov = np.asarray(prior_2d.mean), np.asarray(prior_2d.covariance)
    assert np.all(np.abs(draws.mean(0) - mean) < 4.5 * np.sqrt(np.diag(cov) / num))
    # The sample variance's standard error from the draws' fourth central moment.
    centred = draws - mean
    var_se = np.sqrt((np.mean(centred**4, 0) - np.diag(cov) ** 2) / num)
    assert np.all(np.abs(np.mean(centred**2, 0) - np.diag(cov)) < 4.5 * var_se)
    # The check has power: a truth shifted by 0.05 (a sixth of the smaller sd) fails it.
    assert np.all(np.abs(draws.mean(0) - (mean + 0.05)) > 4.5 * np.sqrt(np.diag(cov) / num))
    idata = prior_2d.to_idata(jax.random.key(4), 500)
    assert isinstance(idata, az.InferenceData)
    assert idata.posterior["theta"].shape == (1, 500, 2)


def test_condition_stays_accurate_in_float32_for_informative_data() -> None:
    """Prior sd 10, noise 1e-3 (sd ratio 1e4): float32 against float64.

    A quadratic form written as ``|r|^2 - r^T B u`` cancels catastrophically here (weights
    [1, 0] against the true [0.46, 0.54], log evidence off by 240 nats); the sum-of-squares
    form keeps the weights within 1e-3 and the moments within float32 rounding.
    """
    weights, means = [0.5, 0.5], [[0.0, 0.0], [0.3, -0.2]]
    covariances = [100 * np.eye(2), 100 * np.array([[1.0, 0.3], [0.3, 1.0]])]
    rows = np.random.default_rng(2).normal(size=(8, 2))
    values = rows @ np.array([0.1, 0.05]) + 1e-3 * np.random.default_rng(3).normal(size=8)

    def exact(dtype: type) -> tuple[np.ndarray, ...]:
        prior = jax.tree.map(
            lambda x: jnp.asarray(x, dtype), gaussian_mixture(weights, means, covariances)
        )
        data = jax.tree.map(
            lambda x: jnp.asarray(x, dtype), linear_gaussian_data(rows, values, 1e-3)
        )
        posterior = prior.condition(data)
        return (
            np.asarray(posterior.weights, np.float64),
            np.asarray(posterior.means, np.float64),
            np.asarray(posterior.component_covariances, np.float64),
        )

    with jax.enable_x64(True):
        reference = exact(jnp.float64)
    weights32, means32, covariances32 = exact(jnp.float32)
    np.testing.assert_allclose(weights32, reference[0], atol=1e-3)
    np.testing.assert_allclose(means32, reference[1], atol=1e-5)
    np.testing.assert_allclose(covariances32, reference[2], rtol=1e-2, atol=1e-10)


def test_propagate_is_the_linear_gaussian_prediction(prior_2d) -> None:
    transition = np.array([[0.9, 0.1], [0.0, 0.8]])
    noise = np.array([[0.2, 0.05], [0.05, 0.1]])
    moved = prior_2d.propagate(transition, noise)
    np.testing.assert_allclose(moved.mean, transition @ np.asarray(prior_2d.mean), rtol=1e-5)
    want = transition @ np.asarray(prior_2d.covariance) @ transition.T + noise
    np.testing.assert_allclose(moved.covariance, want, rtol=1e-5)
    with pytest.raises(ValueError, match=r"`noise_cov` must have shape \(2, 2\)"):
        prior_2d.propagate(transition, 0.1)
    with pytest.raises(ValueError, match="positive semi-definite"):
        prior_2d.propagate(transition, np.array([[0.1, 0.5], [0.5, 0.1]]))


@pytest.mark.parametrize(
    ("weights", "means", "covariances", "match"),
    [
        ([0.5, 0.6], [[0.0], [1.0]], [[[1.0]], [[1.0]]], "sum to 1"),
        ([1.0, 0.0], [[0.0], [1.0]], [[[1.0]], [[1.0]]], "must be > 0"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 2.0], [2.0, 1.0]]], "not positive definite"),
        ([1.0], [[0.0, 0.0]], [[[1.0, 0.5], [0.0, 1.0]]], "symmetric"),
        ([1.0], [[np.nan, 0.0]], [np.eye(2)], "NaN"),
        ([0.5, 0.5], [[0.0, 0.0]], [np.eye(2)] * 2, "shape"),
    ],
)
def test_bad_mixtures_are_refused(weights, means, covariances, match) -> None:
    with pytest.raises(ValueError, match=match):
        gaussian_mixture(weights, means, covariances)


def test_bad_data_is_refused() -> None:
    with pytest.raises(ValueError, match="noise_sd"):
        linear_gaussian_data([[1.0]], [0.0], 0.0)
    with pytest.raises(ValueError, match="NaN"):
        linear_gaussian_data([[1.0]], [np.nan], 1.0)
    with pytest.raises(ValueError, match="shape"):
        linear_gaussian_data([[1.0, 2.0]], [0.0, 1.0], 1.0)
    with pytest.raises(ValueError, match="`noise_sd` must be one number or have shape"):
        linear_gaussian_data([[1.0], [2.0]], [0.0, 1.0], [1.0, 1.0, 1.0])
    with pytest.raises(ValueError, match="columns"):
        linear_gaussian_data([[1.0, 2.0]], [0.0], 1.0, dim=3)
    one_d = gaussian_mixture([1.0], [[0.0]], [[[1.0]]])
    with pytest.raises(ValueError, match="one column per latent dimension"):
        one_d.condition(linear_gaussian_data([[1.0, 2.0]], [0.0], 1.0))


def test_untrained_network_returns_the_prior(prior_2d, data_2d) -> None:
    model = DistributionTransformer(2, max_components=4, max_observations=8, key=jax.random.key(0))
    posterior = apply_compiled(model, prior_2d, data_2d)
    for got, want in zip(jax.tree.leaves(posterior), jax.tree.leaves(prior_2d), strict=True):
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)


def test_symmetries_and_padding(random_model, prior_2d, data_2d) -> None:
    """Permuting components or observations, padding, and changing units act exactly.

    Checked on random weights (zero-initialised branches too), where nothing is trivial:
    the posterior differs from the prior by O(1).
    """
    base = apply_compiled(random_model, prior_2d, data_2d)
    assert float(jnp.abs(base.means - prior_2d.means).max()) > 0.05

    # Components in another order: the same components come back in that order.
    swap = jnp.array([1, 0])
    swapped = apply_compiled(random_model, jax.tree.map(lambda x: x[swap], prior_2d), data_2d)
    np.testing.assert_allclose(swapped.means, base.means[swap], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(swapped.log_weights, base.log_weights[swap], atol=1e-5)
    np.testing.assert_allclose(swapped.scale_tril, base.scale_tril[swap], rtol=1e-4, atol=1e-6)

    # Observations in another order: the same posterior.
    order = jnp.array([2, 0, 1])
    shuffled = apply_compiled(random_model, prior_2d, jax.tree.map(lambda x: x[order], data_2d))
    np.testing.assert_allclose(shuffled.means, base.means, rtol=1e-4, atol=1e-5)

    # Padding components and observations changes nothing on the real ones.
    prior_padded = GaussianMixture(
        jnp.concatenate([prior_2d.log_weights, jnp.zeros(2)]),
        jnp.concatenate([prior_2d.means, 7 * jnp.ones((2, 2))]),
        jnp.concatenate([prior_2d.scale_tril, jnp.stack([jnp.eye(2)] * 2)]),
    )
    # Padded observations hold garbage (NaN, zero noise): the masks must keep it out.
    data_padded = amortize.LinearGaussianData(
        jnp.concatenate([data_2d.design, jnp.ones((2, 2))]),
        jnp.concatenate([data_2d.values, jnp.array([jnp.nan, 5.0])]),
        jnp.concatenate([data_2d.noise_sd, jnp.array([1.0, 0.0])]),
    )
    padded = apply_compiled(
        random_model,
        prior_padded,
        data_padded,
        component_mask=jnp.arange(4) < 2,
        observation_mask=jnp.arange(5) < 3,
    )
    np.testing.assert_allclose(padded.means[:2], base.means, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(padded.scale_tril[:2], base.scale_tril, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(padded.log_weights[:2], base.log_weights, atol=1e-5)
    assert bool(jnp.all(jnp.isneginf(padded.log_weights[2:])))

    # New units: theta' = c * theta + b, design' = design / c, values' = k * (values +
    # design @ b / c) with noise' = k * noise. The posterior maps exactly.
    scale, offset, unit = jnp.array([100.0, 0.01]), jnp.array([3.0, -2.0]), 7.0
    prior_units = GaussianMixture(
        prior_2d.log_weights,
        prior_2d.means * scale[None] + offset[None],
        prior_2d.scale_tril * scale[None, :, None],
    )
    design = data_2d.design / scale[None]
    data_units = amortize.LinearGaussianData(
        unit * design, unit * (data_2d.values + design @ offset), unit * data_2d.noise_sd
    )
    moved = apply_compiled(random_model, prior_units, data_units)
    np.testing.assert_allclose(moved.means, base.means * scale[None] + offset[None], rtol=1e-4)
    np.testing.assert_allclose(moved.log_weights, base.log_weights, atol=1e-4)
    np.testing.assert_allclose(
        moved.scale_tril, base.scale_tril * scale[None, :, None], rtol=1e-4, atol=1e-9
    )


def test_no_observations_is_valid(random_model, prior_2d) -> None:
    posterior = apply_compiled(
        random_model, prior_2d, linear_gaussian_data(np.zeros((0, 2)), np.zeros(0), 1.0)
    )
    assert all(bool(jnp.all(jnp.isfinite(leaf))) for leaf in jax.tree.leaves(posterior))


def test_checked_posterior_refuses_bad_input(random_model, prior_2d, data_2d) -> None:
    five = gaussian_mixture(np.full(5, 0.2), np.zeros((5, 2)), np.stack([np.eye(2)] * 5))
    with pytest.raises(ValueError, match="at most 4"):
        amortize.posterior(random_model, five, data_2d)
    one_d = gaussian_mixture([1.0], [[0.0]], [[[1.0]]])
    with pytest.raises(ValueError, match="R\\^1"):
        amortize.posterior(random_model, one_d, data_2d)
    many = linear_gaussian_data(np.ones((9, 2)), np.zeros(9), 1.0)
    with pytest.raises(ValueError, match="at most 8"):
        amortize.posterior(random_model, prior_2d, many)
    with pytest.raises(ValueError, match="observation_types"):
        amortize.posterior(random_model, prior_2d, data_2d, observation_types=[0, 1, 0])
    with pytest.raises(TypeError, match="gaussian_mixture"):
        amortize.posterior(random_model, {"weights": [1.0]}, data_2d)  # type: ignore[arg-type]
    result = amortize.posterior(random_model, prior_2d, data_2d)
    np.testing.assert_allclose(
        result.means, apply_compiled(random_model, prior_2d, data_2d).means, rtol=1e-5
    )


def test_checked_posterior_compiles_once(random_model, prior_2d, data_2d, count_compilations):
    """After one call, other numbers of components and observations compile nothing."""
    one = gaussian_mixture([1.0], [[0.0, 0.0]], [np.eye(2)])
    data = [linear_gaussian_data(np.ones((n, 2)), np.zeros(n), 1.0) for n in (0, 1, 3)]
    amortize.posterior(random_model, prior_2d, data_2d)
    count_compilations.clear()
    for prior in (prior_2d, one):
        for observations in data:
            amortize.posterior(random_model, prior, observations)
    assert count_compilations == [], f"{len(count_compilations)} XLA compilations"


def test_training_learns_and_resumes_exactly(tmp_path) -> None:
    """A tiny run: finite losses, and a run stopped and resumed equals an unbroken one.

    (That training learns is shown by the shipped models' accuracy tests below.)
    """
    task = amortize.task_from_spec(TINY_RUN["task"])
    config = DTTrainingConfig(**TINY_RUN["training"])
    whole, losses = amortize.train_dt(task, config, progress=False)
    assert losses.shape == (6,) and np.all(np.isfinite(losses))
    folder = tmp_path / "run"
    amortize.train_dt(task, config, checkpoint_dir=folder, progress=False, stop_after=4)
    assert json.loads((folder / "config.json").read_text())["step"] == 4
    resumed, rest = amortize.train_dt(task, config, checkpoint_dir=folder, progress=False)
    np.testing.assert_array_equal(rest, losses[4:])
    curve = json.loads((folder / "training_curve.json").read_text())  # continued on resume
    assert curve["first_step"] == 0
    np.testing.assert_array_equal(curve["loss"], losses)
    resumed_leaves = jax.tree.leaves(eqx.filter(resumed, eqx.is_array))
    whole_leaves = jax.tree.leaves(eqx.filter(whole, eqx.is_array))
    for got, want in zip(resumed_leaves, whole_leaves, strict=True):
        np.testing.assert_array_equal(got, want)
    loaded = amortize.load_dt(folder)
    np.testing.assert_array_equal(loaded.null_observation, whole.null_observation)
    # The trained range of the data's sharpness is saved with the model and read back;
    # a folder saved without it (before the check existed) gets it computed on loading.
    saved = json.loads((folder / "config.json").read_text())
    assert saved["max_sharpness"] == loaded.max_sharpness == whole.max_sharpness > 0
    del saved["max_sharpness"]
    (folder / "config.json").write_text(json.dumps(saved))
    assert amortize.load_dt(folder).max_sharpness == whole.max_sharpness
    other = DTTrainingConfig(**{**config.__dict__, "batch_size": 8})
    with pytest.raises(ValueError, match="different run"):
        amortize.train_dt(task, other, checkpoint_dir=folder, progress=False)


@pytest.fixture(scope="module")
def pretrained_2d() -> DistributionTransformer:
    return amortize.load_dt(amortize.PRETRAINED_DT_2D)


def test_pretrained_matches_exact_posterior(pretrained_2d) -> None:
    """The shipped 2-d model against the exact posterior (`assert_matches_exact_posterior`:
    two KL estimators agree, and KL + 3 SE < 0.05 nats per dimension). Measured at
    landing: KL 0.0043 ± 0.0005, gap 0.0030 ± 0.0040 nats per dimension; estimator
    difference -0.003 ± 0.008."""
    assert_matches_exact_posterior(pretrained_2d, amortize.PRETRAINED_DT_2D)


def test_pretrained_1d_filter_tracks_the_kalman_filter() -> None:
    """Thirty steps of a two-sensor filter, each posterior fed back as the next prior.

    The shipped 1-d model against the Kalman filter on the same readings (every third
    step only one sensor reads): KL(Kalman || transformer) stays below the 0.05 nats goal
    at every step, with no drift. Measured at landing: largest KL 0.0074, mean 0.0015.
    """
    model = amortize.load_dt(amortize.PRETRAINED_DT_1D)
    rng = np.random.default_rng(5)
    belief = exact = gaussian_mixture([1.0], [[0.0]], [[[1.0]]])
    state, kls = 0.0, []
    for step in range(30):
        state = 0.95 * state + np.sqrt(0.1) * rng.normal()
        noise = np.array([0.3, 1.0])[: 1 if step % 3 == 2 else 2]
        data = linear_gaussian_data(
            np.ones((noise.size, 1)), state + noise * rng.normal(size=noise.size), noise
        )
        belief, exact = amortize.posterior(model, belief, data), exact.condition(data)
        m1, v1 = float(exact.mean[0]), float(exact.covariance[0, 0])
        m2, v2 = float(belief.mean[0]), float(belief.covariance[0, 0])
        kls.append(0.5 * (np.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1))
        belief = belief.propagate(jnp.eye(1) * 0.95, jnp.eye(1) * 0.1)
        exact = exact.propagate(jnp.eye(1) * 0.95, jnp.eye(1) * 0.1)
    assert max(kls) < 0.05, np.round(kls, 4)


def test_data_sharpness_is_the_largest_precision_gain_in_any_units(prior_2d, data_2d) -> None:
    """Per component, ``1 + sharpness^2`` is the largest eigenvalue of ``prior covariance x
    posterior precision`` (the exact update of that component alone); an invertible affine
    map of the latent and a rescaling of the observations leave it unchanged; no data
    give 0."""
    sharpness = [
        float(amortize.data_sharpness(GaussianMixture(w[None], m[None], tril[None]), data_2d))
        for w, m, tril in zip(
            prior_2d.log_weights, prior_2d.means, prior_2d.scale_tril, strict=True
        )
    ]
    for k, value in enumerate(sharpness):
        covariances = prior_2d.component_covariances[k : k + 1]
        component = gaussian_mixture([1.0], prior_2d.means[k : k + 1], covariances)
        updated = component.condition(data_2d)
        gain = np.linalg.eigvals(
            np.asarray(component.covariance) @ np.linalg.inv(np.asarray(updated.covariance))
        )
        np.testing.assert_allclose(1 + value**2, np.max(gain.real), rtol=1e-4)
    assert float(amortize.data_sharpness(prior_2d, data_2d)) == pytest.approx(max(sharpness))
    # Other units: theta' = M theta + c (M invertible); observation j multiplied by r_j.
    mix, shift, rows = (
        jnp.array([[3.0, 1.0], [-0.5, 0.1]]),
        jnp.array([5.0, -2.0]),
        jnp.array([2.0, 0.5, 7.0]),
    )
    moved = gaussian_mixture(
        prior_2d.weights,
        prior_2d.means @ mix.T + shift[None, :],
        mix[None] @ prior_2d.component_covariances @ mix.T[None],
    )
    design = data_2d.design @ jnp.linalg.inv(mix)
    rescaled = amortize.LinearGaussianData(
        rows[:, None] * design,
        rows * (data_2d.values + design @ shift),
        rows * data_2d.noise_sd,
    )
    np.testing.assert_allclose(
        amortize.data_sharpness(moved, rescaled), amortize.data_sharpness(prior_2d, data_2d),
        rtol=1e-4,
    )  # fmt: skip
    empty = amortize.LinearGaussianData(jnp.zeros((0, 2)), jnp.zeros(0), jnp.ones(0))
    assert float(amortize.data_sharpness(prior_2d, empty)) == 0.0


def test_posterior_warns_when_the_data_are_sharper_than_trained(
    pretrained_2d, random_model, prior_2d, data_2d
) -> None:
    """Data in the trained range pass silently; the same data with 20x less noise are
    beyond it and warned about with the numbers and the remedy; a model built without a
    trained range does not check."""
    assert float(amortize.data_sharpness(prior_2d, data_2d)) < pretrained_2d.max_sharpness
    sharp = amortize.LinearGaussianData(data_2d.design, data_2d.values, data_2d.noise_sd / 20)
    assert float(amortize.data_sharpness(prior_2d, sharp)) > pretrained_2d.max_sharpness
    with pytest.warns(UserWarning, match=r"sharpen the prior .* 99\.9th percentile.*batches"):
        amortize.posterior(pretrained_2d, prior_2d, sharp)
    assert random_model.max_sharpness is None
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        amortize.posterior(pretrained_2d, prior_2d, data_2d)
        amortize.posterior(random_model, prior_2d, sharp)


def test_shipped_models_carry_their_training_tasks_sharpness() -> None:
    """The ``max_sharpness`` saved with each shipped model is what its task gives."""
    folders = [model.folder for model in amortize.PRETRAINED_MODELS if model.kind == "dt"]
    assert len(folders) == 4
    for folder in folders:
        config = json.loads((folder / "config.json").read_text())
        computed = amortize.trained_sharpness(amortize.task_from_spec(config["task"]))
        if computed is None:  # GP data: no sharpness, the prior's ranges are checked
            assert config["max_sharpness"] is None
        else:
            assert config["max_sharpness"] == pytest.approx(computed, rel=1e-4)


def test_loads_and_runs_under_x64(prior_2d, data_2d) -> None:
    with jax.enable_x64(True):
        model = amortize.load_dt(amortize.PRETRAINED_DT_2D)
        prior = jax.tree.map(lambda x: jnp.asarray(x, jnp.float64), prior_2d)
        result = amortize.posterior(model, prior, data_2d)
        assert bool(jnp.all(jnp.isfinite(result.means)))


def test_cli_posterior_and_bad_input(tmp_path, capsys) -> None:
    from probinfer import cli

    data = {"prior": {"weights": [0.4, 0.6], "means": [[0.0, 0.0], [1.0, 1.0]],
                      "covariances": [np.eye(2).tolist()] * 2},
            "design": [[1.0, 0.0]], "values": [0.5], "noise_sd": [0.2]}  # fmt: skip
    (tmp_path / "data.json").write_text(json.dumps(data))
    out = tmp_path / "post.json"
    assert (
        cli.main(["dt", "posterior", "--data", str(tmp_path / "data.json"), "--out", str(out)]) == 0
    )
    result = json.loads(out.read_text())
    assert np.isclose(sum(result["weights"]), 1.0, atol=1e-5)
    data["prior"]["weights"] = [0.4, 0.7]
    (tmp_path / "data.json").write_text(json.dumps(data))
    assert cli.main(["dt", "posterior", "--data", str(tmp_path / "data.json")]) == 2
    assert "sum to 1" in capsys.readouterr().err


def test_cli_train_resumes_and_refuses_a_bad_config(tmp_path) -> None:
    from probinfer import cli

    # The library test's run: the compiled training step is reused.
    config = json.loads(json.dumps(TINY_RUN))
    (tmp_path / "config.json").write_text(json.dumps(config))
    arguments = ["dt", "train", "--config", str(tmp_path / "config.json"), "--quiet"]
    assert cli.main([*arguments, "--out", str(tmp_path / "run")]) == 0
    assert amortize.load_dt(tmp_path / "run").dim == 1
    config["task"]["type"] = "gp"
    (tmp_path / "bad.json").write_text(json.dumps(config))
    bad = ["dt", "train", "--config", str(tmp_path / "bad.json"), "--quiet"]
    assert cli.main([*bad, "--out", str(tmp_path / "bad")]) == 2
