"""The one-dimensional posterior of the scale ``s`` given a Gaussian quadratic form.

Every scale-mixture computation reduces to the same 1-d problem. If ``y | s ~ N(0, s C)``
with ``n`` entries, ``C`` fixed and ``q = y^T C^{-1} y``, then

    p(y | s) = (2 pi)^(-n/2) |C|^(-1/2) s^(-n/2) exp(-q / (2 s))
    p(s | y) ∝ p(s) s^(-n/2) exp(-q / (2 s)),

so the posterior over ``s`` and the marginal likelihood need only ``(q, n)``. Three ways to
integrate over ``s`` are offered, all returning :class:`ScaleWeights` (nodes ``log s_j``
with normalised log weights, and ``log_normalizer = log E_prior[s^(-n/2) exp(-q/(2s))]``):

- :func:`inverse_gamma_posterior`: exact for ``s ~ InvGamma(a, b)``, where
  ``s | y ~ InvGamma(a + n/2, b + q/2)``.
- :func:`quadrature`: trapezoidal quadrature on ``t = log s`` over the region that holds
  the posterior mass (found on a coarse grid), jittable and differentiable;
  :func:`adaptive_quadrature` doubles the nodes until the answer stops changing (the exact
  reference).
- :func:`importance_sampling`: self-normalised importance sampling with the prior as the
  proposal (the scalable path of Lee et al., 2022), with its effective sample size.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jax.scipy.special import gammaln, logsumexp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

# Coarse grid for locating the posterior mass of t = log s: +-COARSE_HALF_WIDTH around the
# likelihood's mode (e^40 ~ 2e17 either way), COARSE_POINTS points.
COARSE_HALF_WIDTH = 40.0
COARSE_POINTS = 801
# Posterior density below exp(-MASS_CUTOFF) times its maximum is outside the fine grid.
MASS_CUTOFF = 60.0
# A posterior narrower than the coarse step (a sharp scale prior) is found by zooming: each
# of ZOOM_ROUNDS rounds regrids the region found so far with ZOOM_POINTS points, until at
# least ZOOM_RESOLVED of them hold mass. A round narrows the region up to ~64-fold, so six
# reach posteriors far narrower than float64 resolves: the prior's density is evaluated at
# s = exp(t), whose rounding limits the accuracy below widths of ~1e-6 (measured: width
# 1e-5 exact to 4e-10 nats, width 1e-8 to 4e-8).
ZOOM_POINTS = 129
ZOOM_ROUNDS = 6
ZOOM_RESOLVED = 32


class ScaleWeights(NamedTuple):
    """A discrete representation of the posterior over the scale ``s``.

    Attributes:
        log_scales: ``(m,)`` nodes ``log s_j``.
        log_weights: ``(m,)`` normalised log weights (``logsumexp == 0``).
        log_normalizer: ``log E_prior[s^(-n/2) exp(-q / (2 s))]``, a scalar.
        ess: effective sample size ``1 / sum w_j^2`` (meaningful for importance sampling;
            for quadrature it measures how many nodes carry the mass).
    """

    log_scales: Array
    log_weights: Array
    log_normalizer: Array
    ess: Array


def log_scale_likelihood(log_scale: Array, quad_form: Array, num_obs: ArrayLike) -> Array:
    """``log[s^(-n/2) exp(-q / (2 s))]`` at ``log s`` (the ``s``-dependent likelihood)."""
    return jnp.asarray(-0.5 * num_obs * log_scale - 0.5 * quad_form * jnp.exp(-log_scale))


def _weights(log_scales: Array, log_masses: Array, log_normalizer: Array) -> ScaleWeights:
    log_weights = log_masses - logsumexp(log_masses)
    ess = 1.0 / jnp.sum(jnp.exp(2 * log_weights))
    return ScaleWeights(log_scales, log_weights, log_normalizer, ess)


def inverse_gamma_posterior(
    concentration: ArrayLike, rate: ArrayLike, quad_form: ArrayLike, num_obs: ArrayLike
) -> tuple[Array, Array, Array]:
    """The exact posterior for ``s ~ InvGamma(a, b)``.

    Args:
        concentration: prior ``a``.
        rate: prior ``b``.
        quad_form: ``q = y^T C^{-1} y``.
        num_obs: ``n``.

    Returns:
        ``(a + n/2, b + q/2, log_normalizer)`` with
        ``log_normalizer = lgamma(a') - lgamma(a) + a log b - a' log b'``.
    """
    a, b = jnp.asarray(concentration), jnp.asarray(rate)
    a_post = a + 0.5 * num_obs
    b_post = b + 0.5 * jnp.asarray(quad_form)
    log_normalizer = gammaln(a_post) - gammaln(a) + a * jnp.log(b) - a_post * jnp.log(b_post)
    return a_post, b_post, log_normalizer


def _log_posterior_fn(
    scale_prior: dist.Distribution, quad_form: Array, num_obs: ArrayLike
) -> Callable[[Array], Array]:
    """Unnormalised log posterior density of ``t = log s`` (prior Jacobian included)."""

    def log_posterior(t: Array) -> Array:
        value = scale_prior.log_prob(jnp.exp(t)) + t + log_scale_likelihood(t, quad_form, num_obs)
        return jnp.where(jnp.isnan(value), -jnp.inf, value)

    return log_posterior


def _mass_region(
    log_posterior: Callable[[Array], Array], grid: Array
) -> tuple[Array, Array, Array]:
    """The grid points within ``MASS_CUTOFF`` nats of the maximum, widened by one step.

    Returns:
        The region's lower and upper end, and how many grid points lie inside.
    """
    values = log_posterior(grid)
    inside = values > jnp.max(values) - MASS_CUTOFF
    step = grid[1] - grid[0]
    lower = jnp.min(jnp.where(inside, grid, jnp.inf)) - step
    upper = jnp.max(jnp.where(inside, grid, -jnp.inf)) + step
    return lower, upper, jnp.sum(inside)


def quadrature(
    scale_prior: dist.Distribution,
    quad_form: ArrayLike,
    num_obs: ArrayLike,
    *,
    num_nodes: int = 512,
    center: ArrayLike | None = None,
) -> ScaleWeights:
    """Trapezoidal quadrature of the scale posterior on ``t = log s``; jittable.

    A coarse grid of ``t`` (``COARSE_POINTS`` points over ``center +- 40``) finds where the
    log posterior is within ``MASS_CUTOFF`` nats of its maximum; where that region holds
    few grid points (a posterior narrower than the grid), it is regridded until the
    posterior's own width is resolved (``ZOOM_ROUNDS`` rounds at most). ``num_nodes``
    equally spaced nodes then cover the region (plus one step each side). For a smooth
    integrand that decays at both ends the trapezoidal rule converges geometrically in
    ``num_nodes``.

    Args:
        scale_prior: NumPyro distribution of ``s``.
        quad_form: ``q = y^T C^{-1} y`` (>= 0).
        num_obs: ``n``.
        num_nodes: fine-grid nodes.
        center: centre of the coarse grid in ``log s``; by default the likelihood's mode
            ``log(q / n)`` (``0`` when ``n = 0``).

    Returns:
        The nodes, weights and ``log_normalizer``.
    """
    quad_form = jnp.asarray(quad_form, jnp.result_type(float))
    log_posterior = jax.vmap(_log_posterior_fn(scale_prior, quad_form, num_obs))
    if center is None:
        tiny = jnp.finfo(quad_form.dtype).tiny
        center = jnp.where(
            jnp.asarray(num_obs) > 0,
            jnp.log(jnp.maximum(quad_form, tiny) / jnp.maximum(num_obs, 1)),
            0.0,
        )
    coarse = jnp.asarray(
        center + jnp.linspace(-COARSE_HALF_WIDTH, COARSE_HALF_WIDTH, COARSE_POINTS)
    )
    lower, upper, _ = _mass_region(log_posterior, coarse)
    for _ in range(ZOOM_ROUNDS):
        zoomed_lower, zoomed_upper, count = _mass_region(
            log_posterior, jnp.linspace(lower, upper, ZOOM_POINTS)
        )
        # Keep a region that already resolves the mass (or that holds none to zoom into).
        keep = (count >= ZOOM_RESOLVED) | (count == 0)
        lower = jnp.where(keep, lower, zoomed_lower)
        upper = jnp.where(keep, upper, zoomed_upper)
    # The integral does not depend on where the nodes sit, so no gradient flows through them.
    nodes = jax.lax.stop_gradient(jnp.linspace(lower, upper, num_nodes))
    spacing = nodes[1] - nodes[0]
    end_weight = jnp.zeros(num_nodes).at[jnp.array([0, -1])].set(jnp.log(0.5))
    log_masses = log_posterior(nodes) + end_weight + jnp.log(spacing)
    return _weights(nodes, log_masses, logsumexp(log_masses))


def adaptive_quadrature(
    scale_prior: dist.Distribution,
    quad_form: float,
    num_obs: float,
    *,
    rtol: float | None = None,
    min_nodes: int = 256,
    max_nodes: int = 2**16,
) -> tuple[ScaleWeights, float]:
    """:func:`quadrature` with the nodes doubled until ``log_normalizer`` converges.

    The exact reference for general scale priors: stops when two successive estimates of
    ``log_normalizer`` differ by less than ``rtol`` (absolute, in nats).

    Args:
        scale_prior: NumPyro distribution of ``s``.
        quad_form: ``q``.
        num_obs: ``n``.
        rtol: tolerance on ``log_normalizer`` in nats (default 1e-10 in float64, 1e-5 in
            float32, which cannot resolve less).
        min_nodes: first number of nodes.
        max_nodes: give up beyond this many nodes.

    Returns:
        The converged weights and the last change in ``log_normalizer`` (its error estimate).

    Raises:
        RuntimeError: if ``max_nodes`` is reached first.
    """
    if rtol is None:
        rtol = 1e-10 if jnp.result_type(float) == jnp.float64 else 1e-5
    num_nodes = min_nodes
    previous = quadrature(scale_prior, quad_form, num_obs, num_nodes=num_nodes)
    while num_nodes < max_nodes:
        num_nodes *= 2
        current = quadrature(scale_prior, quad_form, num_obs, num_nodes=num_nodes)
        change = float(abs(current.log_normalizer - previous.log_normalizer))
        if np.isfinite(change) and change < rtol:
            return current, change
        previous = current
    raise RuntimeError(
        f"scale-posterior quadrature did not converge to {rtol} nats with {max_nodes} nodes; "
        "enable float64 (`jax.config.update('jax_enable_x64', True)`), loosen `rtol`, or "
        "check that the prior has a density on s > 0."
    )


def importance_sampling(
    key: PRNGKeyArray,
    scale_prior: dist.Distribution,
    quad_form: ArrayLike,
    num_obs: ArrayLike,
    *,
    num_samples: int = 4096,
) -> ScaleWeights:
    """Self-normalised importance sampling of the scale posterior, proposing from the prior.

    Weights ``w_i ∝ s_i^(-n/2) exp(-q / (2 s_i))`` for ``s_i ~ p(s)``; ``log_normalizer`` is
    ``log mean_i w_i`` (unbiased for the normaliser itself). The ESS drops as ``n`` grows and
    the posterior narrows: check it before trusting the estimate.

    Args:
        key: PRNG key for the prior draws.
        scale_prior: NumPyro distribution of ``s``.
        quad_form: ``q``.
        num_obs: ``n``.
        num_samples: number of prior draws.

    Returns:
        The draws ``log s_i``, their normalised log weights, the normaliser and the ESS.
    """
    scales = scale_prior.sample(key, (num_samples,))
    log_scales = jnp.log(scales)
    log_masses = log_scale_likelihood(log_scales, jnp.asarray(quad_form), num_obs)
    # A draw that underflows to s = 0 gives inf - inf; its likelihood is 0 there.
    log_masses = jnp.where(jnp.isfinite(log_masses), log_masses, -jnp.inf)
    log_normalizer = logsumexp(log_masses) - jnp.log(num_samples)
    return _weights(log_scales, log_masses, log_normalizer)


def posterior_mean_scale(weights: ScaleWeights) -> Float[Array, ""]:
    """``E[s | y]`` from a discrete representation."""
    return jnp.exp(logsumexp(weights.log_weights + weights.log_scales))
