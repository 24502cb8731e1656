"""Hamiltonian Monte Carlo with a static trajectory length (Duane et al., 1987; Neal, 2011).

Draw ``p ~ Normal(0, M)``, integrate Hamiltonian dynamics with ``H(x, p) = -log p(x) +
p^T M^{-1} p / 2`` for ``L`` leapfrog steps of size ``eps``, and accept the end point with
probability ``min(1, exp(H_0 - H_L))``.

With ``jitter_num_steps=True`` (the default) each transition draws ``L`` uniformly from
``1..num_integration_steps`` (Neal, 2011, section 5.4.2.2). A fixed ``L`` makes HMC
periodic on near-Gaussian targets once the mass matrix is adapted: with every direction
rescaled to unit variance, a trajectory of length near ``2 pi k`` returns close to where it
started (on the zoo's 10-d Gaussian, a fixed 16 steps mixed the variances 30x slower).
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray

from probinfer.mcmc._algorithm import DENSE_MASS_MATRIX_MAX_DIM, Algorithm
from probinfer.mcmc._base import (
    GradientState,
    KernelStages,
    LogDensityFn,
    TransitionInfo,
    init_gradient_state,
    safe_log_ratio,
)
from probinfer.mcmc._integrators import IntegratorState, leapfrog
from probinfer.mcmc._metric import euclidean_metric
from probinfer.model._target import value_and_aux


class HMCParams(NamedTuple):
    """Parameters of HMC.

    Attributes:
        step_size: leapfrog step size, > 0.
        inverse_mass_matrix: ``(dim,)`` or ``(dim, dim)``.
        num_integration_steps: leapfrog steps (the most steps with ``jitter_num_steps``).
    """

    step_size: Array
    inverse_mass_matrix: Array
    num_integration_steps: int | Array = 16


class _Trajectory(NamedTuple):
    """The work of one HMC transition."""

    start: IntegratorState
    point: IntegratorState
    num_steps: Array  # this transition's leapfrog steps
    num_done: Array
    key_accept: PRNGKeyArray


def build_stages(
    divergence_threshold: float = 1000.0, jitter_num_steps: bool = True
) -> KernelStages:
    """Build the HMC transition as :class:`~probinfer.mcmc.KernelStages` (one leapfrog each).

    Args:
        divergence_threshold: energy error above which a trajectory is flagged divergent.
        jitter_num_steps: draw the number of leapfrog steps uniformly from
            ``1..num_integration_steps`` at each transition (avoids periodic trajectories).

    Returns:
        The stages; their raw kernel ``(key, state, logdensity_fn, params)`` takes
        :class:`HMCParams`.
    """

    def integrator(
        state: GradientState, logdensity_fn: LogDensityFn, params: HMCParams
    ) -> Callable[[IntegratorState, Array], IntegratorState]:
        _, unravel = ravel_pytree(state.position)
        metric = euclidean_metric(params.inverse_mass_matrix)
        flat_fn = value_and_aux(logdensity_fn)
        return leapfrog(lambda x: flat_fn(unravel(x)), metric.velocity)

    def begin(
        key: PRNGKeyArray, state: GradientState, logdensity_fn: LogDensityFn, params: HMCParams
    ) -> _Trajectory:
        num_integration_steps = params.num_integration_steps
        if not isinstance(num_integration_steps, jax.core.Tracer) and (
            int(np.asarray(num_integration_steps)) < 1
        ):
            raise ValueError(
                f"`num_integration_steps` must be >= 1, got {num_integration_steps}; HMC "
                "usually takes 10-100 leapfrog steps per transition."
            )
        key_momentum, key_accept, key_steps = jax.random.split(key, 3)
        num_steps = (
            jax.random.randint(key_steps, (), 1, num_integration_steps + 1)
            if jitter_num_steps
            else jnp.asarray(num_integration_steps)
        )
        flat, _ = ravel_pytree(state.position)
        grad, _ = ravel_pytree(state.logdensity_grad)
        metric = euclidean_metric(params.inverse_mass_matrix)
        momentum = metric.sample_momentum(key_momentum)
        start = IntegratorState(flat, momentum, state.logdensity, grad, state.aux)
        zero = jnp.asarray(0, jnp.int32)
        return _Trajectory(start, start, num_steps.astype(jnp.int32), zero, key_accept)

    def advance(
        trajectory: _Trajectory,
        state: GradientState,
        logdensity_fn: LogDensityFn,
        params: HMCParams,
    ) -> _Trajectory:
        step = integrator(state, logdensity_fn, params)
        return trajectory._replace(
            point=step(trajectory.point, params.step_size), num_done=trajectory.num_done + 1
        )

    def end(
        trajectory: _Trajectory,
        state: GradientState,
        logdensity_fn: LogDensityFn,
        params: HMCParams,
    ) -> tuple[GradientState, TransitionInfo]:
        del logdensity_fn
        _, unravel = ravel_pytree(state.position)
        metric = euclidean_metric(params.inverse_mass_matrix)
        start, point = trajectory.start, trajectory.point
        energy_start = -start.logdensity + metric.kinetic_energy(start.momentum)
        energy_end = -point.logdensity + metric.kinetic_energy(point.momentum)
        log_accept, is_nonfinite = safe_log_ratio(-energy_end, -energy_start)
        is_divergent = is_nonfinite | (energy_end - energy_start > divergence_threshold)
        uniform = jax.random.uniform(trajectory.key_accept, dtype=start.position.dtype)
        is_accepted = jnp.log(uniform) < log_accept

        proposal = GradientState(
            unravel(point.position), point.logdensity, unravel(point.logdensity_grad), point.aux
        )
        new_state = jax.tree.map(lambda new, old: jnp.where(is_accepted, new, old), proposal, state)
        info = TransitionInfo(
            acceptance_rate=jnp.exp(log_accept),
            is_accepted=is_accepted,
            is_divergent=is_divergent,
            num_grad_evals=trajectory.num_steps,
            num_nonfinite=is_nonfinite.astype(jnp.int32),
            tree_depth=jnp.asarray(0, jnp.int32),
            energy=jnp.where(is_accepted, energy_end, energy_start),
        )
        return new_state, info

    def is_done(trajectory: _Trajectory) -> Array:
        return trajectory.num_done >= trajectory.num_steps

    return KernelStages(begin, advance, is_done, end, varies_in_length=jitter_num_steps)


hmc = Algorithm(
    "hmc",
    init_gradient_state,
    None,
    HMCParams,
    build_stages=build_stages,
    build_options=("divergence_threshold", "jitter_num_steps"),
    target_acceptance=0.8,
    uses_gradient=True,
    dense_metric_max_dim=DENSE_MASS_MATRIX_MAX_DIM,
)
"""Hamiltonian Monte Carlo with a fixed number of leapfrog steps (``num_integration_steps``,
default 16) and a Metropolis correction. ``hmc(logdensity_fn, step_size,
inverse_mass_matrix=None, **options)`` returns a ``Kernel``."""
