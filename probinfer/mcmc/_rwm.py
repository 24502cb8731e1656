"""Random-walk Metropolis with a Gaussian proposal.

Proposal ``x' = x + eps * L z`` with ``z ~ Normal(0, I)`` and ``L L^T = C``, the proposal
covariance (passed as ``inverse_mass_matrix`` so that adaptation treats every kernel alike);
accepted with probability ``min(1, p(x') / p(x))`` (Metropolis et al., 1953).
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray

from probinfer.mcmc._algorithm import Algorithm, RawKernel
from probinfer.mcmc._base import (
    LogDensityFn,
    MetricParams,
    PyTree,
    TransitionInfo,
    safe_log_ratio,
)
from probinfer.mcmc._metric import euclidean_metric
from probinfer.model._target import value_and_aux


class RWMState(NamedTuple):
    """State of random-walk Metropolis.

    Attributes:
        position: the current point, any pytree of arrays.
        logdensity: log density at ``position``.
        aux: the auxiliary values of an :class:`~probinfer.model.AuxLogDensity` at
            ``position`` (``()`` for a plain log density).
    """

    position: PyTree
    logdensity: Array
    aux: PyTree = ()


def init(position: PyTree, logdensity_fn: LogDensityFn) -> RWMState:
    """Evaluate the log density at ``position``.

    Args:
        position: any pytree of arrays.
        logdensity_fn: log density of a position.

    Returns:
        The initial :class:`RWMState`.
    """
    return RWMState(position, *value_and_aux(logdensity_fn)(position))


def build_kernel() -> RawKernel:
    """Build the raw random-walk Metropolis kernel.

    Returns:
        ``kernel(key, state, logdensity_fn, params)`` with
        :class:`~probinfer.mcmc.MetricParams` (``inverse_mass_matrix`` is the proposal
        covariance ``C``).
    """

    def kernel(
        key: PRNGKeyArray, state: RWMState, logdensity_fn: LogDensityFn, params: MetricParams
    ) -> tuple[RWMState, TransitionInfo]:
        key_proposal, key_accept = jax.random.split(key)
        flat, unravel = ravel_pytree(state.position)
        step_size = params.step_size
        metric = euclidean_metric(params.inverse_mass_matrix)
        noise = jax.random.normal(key_proposal, flat.shape, flat.dtype)
        proposal = unravel(flat + step_size * metric.scale(noise))
        proposal_logdensity, proposal_aux = value_and_aux(logdensity_fn)(proposal)
        log_accept, is_nonfinite = safe_log_ratio(proposal_logdensity, state.logdensity)
        is_accepted = jnp.log(jax.random.uniform(key_accept, dtype=flat.dtype)) < log_accept
        new_state = jax.tree.map(
            lambda new, old: jnp.where(is_accepted, new, old),
            RWMState(proposal, proposal_logdensity, proposal_aux),
            state,
        )
        info = TransitionInfo(
            acceptance_rate=jnp.exp(log_accept),
            is_accepted=is_accepted,
            is_divergent=jnp.asarray(False),
            num_grad_evals=jnp.asarray(1, jnp.int32),
            num_nonfinite=is_nonfinite.astype(jnp.int32),
            tree_depth=jnp.asarray(0, jnp.int32),
            energy=-new_state.logdensity,
        )
        return new_state, info

    return kernel


rwm = Algorithm(
    "rwm",
    init,
    build_kernel,
    MetricParams,
    target_acceptance=0.234,
    uses_gradient=False,
    # Diagonal by default: dense / diagonal ESS/s is 0.40-2.55 at `probinfer bench`'s
    # budget, 1.01 in geometric mean over the five zoo models both converge on
    # (benchmarks/results/metric_default/metric_default_rwm.md), for a d^2 proposal;
    # `metric="dense"` wins where correlations are strong (logistic regression 2.55).
    has_cumulative_warmup=True,
)
"""Random-walk Metropolis with a Gaussian proposal of covariance
``step_size**2 * inverse_mass_matrix``. ``rwm(logdensity_fn, step_size,
inverse_mass_matrix=None)`` returns a ``Kernel``."""
