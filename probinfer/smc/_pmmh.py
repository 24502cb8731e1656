"""Particle marginal Metropolis-Hastings (Andrieu, Doucet & Holenstein, 2010).

Random-walk Metropolis on static parameters ``theta`` whose likelihood is replaced by a
particle filter's unbiased estimate: propose ``theta' = theta + eps L z``, run the filter at
``theta'``, accept with probability ``min(1, p(theta') p_hat(y | theta') / (p(theta)
p_hat(y | theta)))``. The current estimate is kept, never recomputed, which makes the chain
exact for the posterior ``p(theta | y)`` whatever the filter's noise (a pseudo-marginal
method); the noise only slows mixing (aim for a log-likelihood sd near 1, Doucet et al.,
2015).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray

from probinfer.mcmc._algorithm import check_step_size
from probinfer.mcmc._metric import euclidean_metric
from probinfer.smc._particle_filter import FilterResult

PyTree = Any


class PMMHState(NamedTuple):
    """State of PMMH.

    Attributes:
        theta: the static parameters, any pytree.
        logprior: log prior density at ``theta``.
        loglikelihood: the particle filter's estimate at ``theta`` (kept until a move).
    """

    theta: PyTree
    logprior: Array
    loglikelihood: Array


class PMMHInfo(NamedTuple):
    """Diagnostics of one PMMH step.

    Attributes:
        acceptance_rate: the Metropolis acceptance probability.
        is_accepted: whether the chain moved.
        proposal_loglikelihood: the estimate at the proposal (``-inf``: every particle's
            weight vanished; the proposal is rejected).
        num_nonfinite: the filter's NaN or ``+inf`` weights, plus 1 when the acceptance
            ratio itself was NaN (counted, then rejected).
    """

    acceptance_rate: Array
    is_accepted: Array
    proposal_loglikelihood: Array
    num_nonfinite: Array


class PMMH(NamedTuple):
    """PMMH closed over its filter, prior and data.

    Attributes:
        init: ``init(key, theta) -> PMMHState`` (runs the filter once).
        step: ``step(key, state) -> (state, PMMHInfo)``.
    """

    init: Callable[[PRNGKeyArray, PyTree], PMMHState]
    step: Callable[[PRNGKeyArray, PMMHState], tuple[PMMHState, PMMHInfo]]


def pmmh(
    filter_fn: Callable[[PRNGKeyArray, PyTree, PyTree], FilterResult],
    logprior_fn: Callable[[PyTree], Array],
    observations: PyTree,
    step_size: float | Array,
    *,
    covariance: Array | None = None,
) -> PMMH:
    """PMMH with a Gaussian random walk on ``theta``.

    Args:
        filter_fn: ``(key, observations, theta) -> FilterResult``, from
            :func:`probinfer.smc.particle_filter`.
        logprior_fn: log prior of ``theta``.
        observations: the data, leading time axis.
        step_size: the random walk's scale, > 0.
        covariance: ``(dim,)`` or ``(dim, dim)`` proposal covariance over the flattened
            ``theta``; identity when omitted.

    Returns:
        A :class:`PMMH` ``(init, step)``.

    Raises:
        TypeError: for a step size that is not a real number.
        ValueError: for a non-positive or non-finite step size.
    """
    check_step_size(step_size)

    def init(key: PRNGKeyArray, theta: PyTree) -> PMMHState:
        result = filter_fn(key, observations, theta)
        return PMMHState(theta, logprior_fn(theta), result.loglikelihood)

    def step(key: PRNGKeyArray, state: PMMHState) -> tuple[PMMHState, PMMHInfo]:
        key_proposal, key_filter, key_accept = jax.random.split(key, 3)
        flat, unravel = ravel_pytree(state.theta)
        matrix = jnp.ones_like(flat) if covariance is None else covariance
        noise = jax.random.normal(key_proposal, flat.shape, flat.dtype)
        theta = unravel(flat + step_size * euclidean_metric(matrix).scale(noise))
        logprior = logprior_fn(theta)
        result = filter_fn(key_filter, observations, theta)
        loglikelihood = result.loglikelihood
        delta = (logprior + loglikelihood) - (state.logprior + state.loglikelihood)
        # A current estimate of 0 (-inf) accepts any finite proposal (delta = +inf).
        is_nan = jnp.isnan(delta)
        log_accept = jnp.where(is_nan, -jnp.inf, jnp.minimum(delta, 0.0))
        is_accepted = jnp.log(jax.random.uniform(key_accept, dtype=flat.dtype)) < log_accept
        proposal = PMMHState(theta, logprior, loglikelihood)
        new = jax.tree.map(lambda a, b: jnp.where(is_accepted, a, b), proposal, state)
        num_nonfinite = result.num_nonfinite + is_nan.astype(jnp.int32)
        return new, PMMHInfo(jnp.exp(log_accept), is_accepted, loglikelihood, num_nonfinite)

    return PMMH(init, step)
