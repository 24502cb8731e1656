"""Slice sampling and likelihood-constrained moves leave their targets exactly invariant.

Invariance tests as in ``tests/test_kernels.py``: 8192 independent chains start from exact
draws of the target and take a few steps; the final states are independent exact draws if
and only if the kernel leaves the target invariant, so MCSE = sd / sqrt(n), and means,
variances and covariances are checked with the MCSE rule (z = 4).

- The slice sampler on a correlated 4-d Gaussian (pytree position), with identity and
  dense direction covariances.
- Every algorithm under :func:`probinfer.mcmc.constrained` on a correlated 4-d Gaussian
  prior restricted to the likelihood contour ``{(x - m)^T S^-1 (x - m) < r^2}``: with the
  likelihood's covariance equal to the prior's, the restricted prior is the prior whitened,
  truncated to a ball and mapped back, so its covariance is exactly ``S * c`` with
  ``c = P(chi2_6 < r^2) / P(chi2_4 < r^2)`` (``E[q 1{q < a}] = d P(chi2_{d+2} < a)``).

Each group also runs the kernel on a deliberately wrong target (a shifted Gaussian; a
looser contour) and asserts that the checks fail.

False-failure rates measured over 100 seeds (fresh exact draws and keys per seed):
constrained rwm, slice, mala, hmc and nuts 0/100 each; slice on the Gaussian 0/100 with
the identity and 0/100 with the dense covariance.
"""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats
from _stats import check_moments, failures

from probinfer import mcmc
from probinfer.model import Target

MEAN = np.array([0.5, -1.0, 2.0, 0.0])
SD = np.array([1.5, 0.5, 1.0, 2.0])
CORRELATION = np.eye(4)
CORRELATION[1, 3] = CORRELATION[3, 1] = -0.6
COV = SD[:, None] * CORRELATION * SD[None, :]
PRECISION = np.linalg.inv(COV)
CHOLESKY = np.linalg.cholesky(COV)
NUM_INDEPENDENT = 8192


def to_flat(position):
    return jnp.concatenate([position["x"], position["y"][None]])


def to_position(flat):
    return {"x": flat[:3], "y": flat[3]}


def quadratic_form(position):
    residual = to_flat(position) - MEAN
    return residual @ (PRECISION @ residual)


def exact_draws(seed, radius_squared=None):
    """Exact draws of N(MEAN, COV), truncated to quadratic form < radius_squared if given."""
    rng = np.random.default_rng(seed)
    if radius_squared is None:
        whitened = rng.standard_normal((NUM_INDEPENDENT, 4))
    else:
        sphere = rng.standard_normal((NUM_INDEPENDENT, 4))
        sphere /= np.linalg.norm(sphere, axis=1, keepdims=True)
        top = scipy.stats.chi2.cdf(radius_squared, 4)
        radius = np.sqrt(scipy.stats.chi2.ppf(rng.uniform(0, top, NUM_INDEPENDENT), 4))
        whitened = sphere * radius[:, None]
    return MEAN + whitened @ CHOLESKY.T


def truncated_covariance(radius_squared):
    ratio = scipy.stats.chi2.cdf(radius_squared, 6) / scipy.stats.chi2.cdf(radius_squared, 4)
    return COV * ratio


# ---------------------------------------------------------------------------------------
# Slice sampling on a Gaussian

SHIFT = 0.3 * SD


@functools.cache
def slice_invariance_sampler():
    """Jitted ``(key, start, step_size, covariance, shift) -> flat end states``."""

    def run(key, start, step_size, covariance, shift):
        def logdensity(position):
            residual = to_flat(position) - (MEAN + shift)
            return -0.5 * residual @ (PRECISION @ residual)

        kernel = mcmc.slice_sampler(logdensity, step_size, covariance)

        def one_chain(key, flat):
            def step(state, key):
                return kernel.step(key, state)[0], None

            state = kernel.init(to_position(flat))
            state, _ = jax.lax.scan(step, state, jax.random.split(key, 3))
            return to_flat(state.position)

        return jax.vmap(one_chain)(jax.random.split(key, start.shape[0]), start)

    return jax.jit(run)


SLICE_SETTINGS = {"identity": (1.0, np.ones(4)), "dense": (2.0, COV)}


@pytest.mark.parametrize("metric", SLICE_SETTINGS)
def test_slice_sampler_leaves_a_gaussian_invariant(metric):
    """14 MCSE checks (z = 4) on 8192 independent chains after 3 slice steps."""
    step_size, covariance = SLICE_SETTINGS[metric]
    start = jnp.asarray(exact_draws(1), jnp.float32)
    end = slice_invariance_sampler()(
        jax.random.key(2), start, step_size, jnp.asarray(covariance, jnp.float32), jnp.zeros(4)
    )
    checks = check_moments(np.asarray(end)[None], MEAN, COV, iid=True)
    assert not failures(checks), "\n".join(str(c) for c in checks)
    assert np.mean(np.any(np.asarray(end) != np.asarray(start), axis=1)) > 0.99  # it moves


def test_slice_sampler_on_a_shifted_target_fails_the_checks():
    step_size, covariance = SLICE_SETTINGS["dense"]
    start = jnp.asarray(exact_draws(1), jnp.float32)
    end = slice_invariance_sampler()(
        jax.random.key(2), start, step_size, jnp.asarray(covariance, jnp.float32), SHIFT
    )
    checks = check_moments(np.asarray(end)[None], MEAN, COV, iid=True, covariances=False)
    assert sum(not c.ok for c in checks if c.name.startswith("mean")) >= 3


def test_slice_sampler_handles_a_hard_boundary():
    """Half-normal as a -inf wall: every state stays inside and the moments are exact."""
    kernel = mcmc.slice_sampler(lambda x: jnp.where(x > 0, -0.5 * x**2, -jnp.inf), 1.0, jnp.ones(1))

    def one_chain(key, x):
        state, _ = jax.lax.scan(
            lambda s, k: (kernel.step(k, s)[0], None), kernel.init(x), jax.random.split(key, 3)
        )
        return state.position

    start = jnp.abs(jax.random.normal(jax.random.key(3), (NUM_INDEPENDENT,)))
    end = np.asarray(
        jax.jit(jax.vmap(one_chain))(jax.random.split(jax.random.key(4), NUM_INDEPENDENT), start)
    )
    assert np.all(end > 0)
    checks = check_moments(end[None, :, None], [np.sqrt(2 / np.pi)], [[1 - 2 / np.pi]], iid=True)
    assert not failures(checks), "\n".join(str(c) for c in checks)


def test_slice_sampler_has_no_step_size_adaptation():
    with pytest.raises(ValueError, match="no acceptance rate"):
        mcmc.window_adaptation(mcmc.slice_sampler, lambda x: -0.5 * jnp.sum(x**2))


# ---------------------------------------------------------------------------------------
# Constrained moves

RADIUS_SQUARED = 3.0  # P(chi2_4 < 3) = 0.44: the contour cuts away more than half the prior
LOOSER_RADIUS_SQUARED = 5.0
CONSTRAINED = {
    # name: (num_steps, step_size): proposals and directions follow COV
    "rwm": (10, 0.6),
    "slice": (4, 2.0),
    "mala": (10, 0.6),
    "hmc": (4, 0.3),
    "nuts": (4, 0.4),
}
ALGORITHMS = {**mcmc.ALGORITHMS, "slice": mcmc.slice_sampler}

TARGET = Target.from_parts(
    lambda position: -0.5 * quadratic_form(position),  # the prior, up to a constant
    lambda position: -0.5 * quadratic_form(position),  # a likelihood with the same shape
)


@functools.cache
def constrained_sampler(name):
    """Jitted ``(key, start, threshold) -> (flat end states, log likelihoods, acceptance)``."""
    num_steps, step_size = CONSTRAINED[name]
    move = mcmc.constrained(ALGORITHMS[name], TARGET, num_steps=num_steps)
    params = ALGORITHMS[name].make_params(jnp.asarray(step_size), jnp.asarray(COV, jnp.float32))

    def one_chain(key, flat, threshold):
        state, info = move.step(key, move.init(to_position(flat)), threshold, params)
        return to_flat(state.mcmc_state.position), state.loglikelihood, info.acceptance_rate

    def run(key, start, threshold):
        keys = jax.random.split(key, start.shape[0])
        return jax.vmap(one_chain, in_axes=(0, 0, None))(keys, start, threshold)

    return jax.jit(run)


def run_constrained(name, radius_squared):
    start = jnp.asarray(exact_draws(5, RADIUS_SQUARED), jnp.float32)
    end, loglikelihood, acceptance = constrained_sampler(name)(
        jax.random.key(6), start, jnp.asarray(-0.5 * radius_squared)
    )
    return np.asarray(end), np.asarray(loglikelihood), np.asarray(acceptance)


@pytest.mark.parametrize("name", CONSTRAINED)
def test_constrained_move_leaves_the_restricted_prior_invariant(name):
    """14 MCSE checks (z = 4) against the exact truncated Gaussian; every end point is
    inside the contour and carries its own log likelihood."""
    end, loglikelihood, acceptance = run_constrained(name, RADIUS_SQUARED)
    assert np.all(loglikelihood > -0.5 * RADIUS_SQUARED)
    expected = -0.5 * jax.vmap(quadratic_form)(jax.vmap(to_position)(jnp.asarray(end)))
    np.testing.assert_allclose(loglikelihood, expected, rtol=1e-4, atol=1e-5)
    assert np.mean(acceptance) > 0.2, np.mean(acceptance)
    checks = check_moments(end[None], MEAN, truncated_covariance(RADIUS_SQUARED), iid=True)
    assert not failures(checks), "\n".join(str(c) for c in checks)


@pytest.mark.parametrize("name", ["rwm", "slice"])
def test_constrained_move_under_a_looser_contour_fails_the_checks(name):
    """Run under a looser contour than the exact start's: the draws spread out and the
    variance checks against the tighter truth fail."""
    end, _, _ = run_constrained(name, LOOSER_RADIUS_SQUARED)
    checks = check_moments(end[None], MEAN, truncated_covariance(RADIUS_SQUARED), iid=True)
    assert sum(not c.ok for c in checks if c.name.startswith("var")) >= 3


def test_constrained_rejects_bad_settings():
    with pytest.raises(ValueError, match="num_steps"):
        mcmc.constrained(mcmc.rwm, TARGET, num_steps=0)
    with pytest.raises(ValueError, match="unknown option"):
        mcmc.constrained(mcmc.hmc, TARGET, num_integration_step=3)
