"""Elliptical slice sampling: invariance on a GP-latent model with an exact posterior.

Target: prior ``f ~ N(0, K)`` (an NNGP kernel on 6 inputs) and Gaussian likelihood
``y ~ N(f, r I)``, whose posterior is ``N(K (K + r I)^-1 y, K - K (K + r I)^-1 K)``.
Means and variances are checked with z = 4 MCSE and an ESS gate; a shifted target must fail.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _stats import check_expectation

from probinfer import mcmc, nngp

NOISE = 0.3


@pytest.fixture(scope="module")
def problem():
    x = jnp.linspace(-2, 2, 6)[:, None]
    cov = np.asarray(nngp.mlp(2, bias_variance=0.5)(x), np.float64) + 1e-6 * np.eye(6)
    y = np.array([0.5, -0.3, 1.2, 0.8, -1.0, 0.1])
    gain = cov @ np.linalg.inv(cov + NOISE * np.eye(6))
    mean, post_cov = gain @ y, cov - gain @ cov
    return cov, y, mean, post_cov


def _loglikelihood(y):
    return lambda f: -0.5 * jnp.sum((y - f) ** 2) / NOISE


def _run(kernel, position, key, num_steps):
    def body(state, key):
        state, info = kernel.step(key, state)
        return state, (state.position, info.num_likelihood_evals)

    return jax.lax.scan(body, kernel.init(position), jax.random.split(key, num_steps))[1]


@pytest.fixture(scope="module")
def draws(problem):
    cov, y, _, _ = problem
    kernel = mcmc.elliptical_slice(_loglikelihood(y), mean=jnp.zeros(6), cov=cov)
    keys = jax.random.split(jax.random.key(0), 4)
    positions, evals = jax.vmap(lambda k: _run(kernel, jnp.zeros(6), k, 4000))(keys)
    return np.asarray(positions, np.float64), np.asarray(evals)


def test_posterior_moments_match_exact(problem, draws):
    """False-failure rate: 0/100 seeds (12 checks per run, z = 4)."""
    _, _, mean, post_cov = problem
    positions, evals = draws
    assert evals.min() >= 1
    for i in range(6):
        check = check_expectation(positions[..., i], mean[i], name=f"mean[{i}]")
        assert check.ok, check
        deviations = (positions[..., i] - mean[i]) ** 2
        check = check_expectation(deviations, post_cov[i, i], name=f"var[{i}]")
        assert check.ok, check
    shift = mean[2] + 0.3 * np.sqrt(post_cov[2, 2])
    assert not check_expectation(positions[..., 2], shift, name="shifted").ok


def test_pytree_positions_cholesky_and_whitened_prior(problem):
    cov, y, _, _ = problem
    chol = np.linalg.cholesky(cov)
    loglik = _loglikelihood(y)

    def tree_loglik(tree):
        return loglik(jnp.concatenate([tree["a"], tree["b"]]))

    tree_kernel = mcmc.elliptical_slice(
        tree_loglik, mean={"a": jnp.zeros(2), "b": jnp.zeros(4)}, cov_cholesky=chol
    )
    flat_kernel = mcmc.elliptical_slice(loglik, mean=jnp.zeros(6), cov=cov)
    key = jax.random.key(3)
    tree_state, _ = tree_kernel.step(key, tree_kernel.init({"a": jnp.zeros(2), "b": jnp.zeros(4)}))
    flat_state, _ = flat_kernel.step(key, flat_kernel.init(jnp.zeros(6)))
    np.testing.assert_allclose(
        jnp.concatenate([tree_state.position["a"], tree_state.position["b"]]),
        flat_state.position,
        rtol=1e-5,
        atol=1e-6,
    )
    # Same key, same result; jit and no jit agree.
    again, _ = flat_kernel.step(key, flat_kernel.init(jnp.zeros(6)))
    np.testing.assert_array_equal(again.position, flat_state.position)
    jitted, _ = jax.jit(flat_kernel.step)(key, flat_kernel.init(jnp.zeros(6)))
    np.testing.assert_allclose(jitted.position, flat_state.position, rtol=1e-5, atol=1e-6)
    # A vector factor is a diagonal covariance: the same step as the dense diagonal matrix.
    stds = jnp.sqrt(jnp.diagonal(jnp.asarray(cov)))
    diagonal = mcmc.elliptical_slice(loglik, mean=jnp.zeros(6), cov_cholesky=stds)
    dense = mcmc.elliptical_slice(loglik, mean=jnp.zeros(6), cov=jnp.diag(stds**2))
    np.testing.assert_allclose(
        diagonal.step(key, diagonal.init(jnp.zeros(6)))[0].position,
        dense.step(key, dense.init(jnp.zeros(6)))[0].position,
        rtol=1e-5,
        atol=1e-6,
    )
    # Whitened prior (identity covariance) works without a factor.
    white = mcmc.elliptical_slice(lambda z: loglik(jnp.asarray(chol) @ z), mean=jnp.zeros(6))
    state, info = white.step(key, white.init(jnp.zeros(6)))
    assert bool(info.is_accepted) and np.all(np.isfinite(state.position))


def test_nonfinite_likelihood_is_rejected_and_counted():
    kernel = mcmc.elliptical_slice(
        lambda f: jnp.where(f[0] > 0, -0.5 * jnp.sum(f**2), jnp.nan), mean=jnp.zeros(2)
    )
    state = kernel.init(jnp.array([1.0, 0.0]))
    step = jax.jit(kernel.step)
    total_nonfinite = 0
    for i in range(20):
        state, info = step(jax.random.key(i), state)
        assert state.position[0] > 0
        total_nonfinite += int(info.num_nonfinite)
    assert total_nonfinite > 0


def test_bad_prior_shapes():
    with pytest.raises(ValueError, match="not both"):
        mcmc.elliptical_slice(
            lambda f: 0.0, mean=jnp.zeros(2), cov=jnp.eye(2), cov_cholesky=jnp.eye(2)
        )
    with pytest.raises(ValueError, match=r"\(3, 3\)"):
        mcmc.elliptical_slice(lambda f: 0.0, mean=jnp.zeros(3), cov=jnp.eye(2))
