"""Metropolis-adjusted Langevin algorithm (Roberts & Tweedie, 1996), preconditioned.

Proposal ``x' = x + (eps^2 / 2) C grad log p(x) + eps L z`` with ``L L^T = C`` (the inverse
mass matrix), corrected by the Metropolis-Hastings ratio with the Gaussian proposal density
``q(x' | x) = Normal(x + (eps^2/2) C grad, eps^2 C)``.
"""

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray

from probinfer.mcmc._algorithm import Algorithm, RawKernel
from probinfer.mcmc._base import (
    GradientState,
    LogDensityFn,
    MetricParams,
    TransitionInfo,
    init_gradient_state,
    safe_log_ratio,
)
from probinfer.mcmc._metric import euclidean_metric


def build_kernel() -> RawKernel:
    """Build the raw MALA kernel.

    Returns:
        ``kernel(key, state, logdensity_fn, params)`` with :class:`~probinfer.mcmc.MetricParams`.
    """

    def kernel(
        key: PRNGKeyArray, state: GradientState, logdensity_fn: LogDensityFn, params: MetricParams
    ) -> tuple[GradientState, TransitionInfo]:
        key_proposal, key_accept = jax.random.split(key)
        flat, unravel = ravel_pytree(state.position)
        grad, _ = ravel_pytree(state.logdensity_grad)
        step_size = params.step_size
        metric = euclidean_metric(params.inverse_mass_matrix)

        def drift(x: Array, g: Array) -> Array:
            return x + 0.5 * step_size**2 * metric.velocity(g)

        noise = jax.random.normal(key_proposal, flat.shape, flat.dtype)
        proposal_flat = drift(flat, grad) + step_size * metric.scale(noise)
        proposal = init_gradient_state(unravel(proposal_flat), logdensity_fn)
        proposal_grad, _ = ravel_pytree(proposal.logdensity_grad)
        # log q(proposal | current) and log q(current | proposal), up to a shared constant,
        # from one stacked Mahalanobis norm (one triangular solve for a dense metric).
        displacements = jnp.stack(
            [proposal_flat - drift(flat, grad), flat - drift(proposal_flat, proposal_grad)]
        )
        log_forward, log_backward = -0.5 * metric.mahalanobis(displacements) / step_size**2
        log_accept, is_nonfinite = safe_log_ratio(
            proposal.logdensity + log_backward, state.logdensity + log_forward
        )
        is_accepted = jnp.log(jax.random.uniform(key_accept, dtype=flat.dtype)) < log_accept
        new_state = jax.tree.map(lambda new, old: jnp.where(is_accepted, new, old), proposal, state)
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


mala = Algorithm(
    "mala",
    init_gradient_state,
    build_kernel,
    MetricParams,
    target_acceptance=0.574,
    uses_gradient=True,
    # Diagonal by default: dense / diagonal ESS/s is 0.21-2.87 at `probinfer bench`'s
    # budget (benchmarks/results/metric_default/metric_default_mala.md): lgssm 2.87 and
    # logistic regression 2.11, but gp_poisson 0.21 (R-hat 1.32 against 1.03) and the
    # 100-d correlated Gaussian 0.51; `metric="dense"` for correlated posteriors.
    has_cumulative_warmup=True,
)
"""The Metropolis-adjusted Langevin algorithm: one Langevin step, Metropolis-corrected.
``mala(logdensity_fn, step_size, inverse_mass_matrix=None)`` returns a ``Kernel``."""
