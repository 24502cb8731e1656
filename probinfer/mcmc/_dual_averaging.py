"""Dual averaging of the log step size toward a target acceptance rate.

Nesterov (2009) primal-dual averaging as adapted by Hoffman & Gelman (2014, section 3.2):
``H_t = (1 - 1/(t + t0)) H_{t-1} + (target - a_t) / (t + t0)``,
``log eps_t = mu - sqrt(t) / gamma * H_t``,
``log eps_avg_t = t^-kappa log eps_t + (1 - t^-kappa) log eps_avg_{t-1}``, with
``mu = log(10 eps_0)``. The sampler uses ``eps_t`` during warm-up and ``eps_avg`` after.
"""

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array

GAMMA = 0.05
T0 = 10.0
KAPPA = 0.75


class DualAveragingState(NamedTuple):
    """State of dual averaging.

    Attributes:
        log_step_size: current iterate ``log eps_t`` (used while adapting).
        log_step_size_avg: averaged iterate ``log eps_avg_t`` (used after adaptation).
        iteration: ``t``, the number of updates since the last restart.
        average_error: ``H_t``, the running average of ``target - acceptance``.
        mu: shrinkage point ``log(10 eps_0)``.
    """

    log_step_size: Array
    log_step_size_avg: Array
    iteration: Array
    average_error: Array
    mu: Array


def dual_averaging_init(step_size: Array, shrink_factor: float = 10.0) -> DualAveragingState:
    """Start (or restart) dual averaging from ``step_size``.

    Args:
        step_size: initial step size, > 0.
        shrink_factor: the iterates shrink toward ``log(shrink_factor * step_size)``;
            Hoffman & Gelman's 10 favours exploring large steps from a crude start.

    Returns:
        The initial state.
    """
    log_step_size = jnp.log(step_size)
    zero = jnp.zeros_like(log_step_size)
    mu = log_step_size + jnp.log(shrink_factor)
    return DualAveragingState(log_step_size, zero, jnp.asarray(0, jnp.int32), zero, mu)


def dual_averaging_update(
    state: DualAveragingState, acceptance_rate: Array, target_acceptance: float
) -> DualAveragingState:
    """One dual-averaging update from the acceptance rate of the last transition.

    Args:
        state: current state.
        acceptance_rate: acceptance statistic of the last transition, in [0, 1]; NaN
            counts as 0 (a transition that failed numerically should shrink the step).
        target_acceptance: the acceptance rate to aim for, in (0, 1).

    Returns:
        The updated state.
    """
    acceptance_rate = jnp.where(jnp.isnan(acceptance_rate), 0.0, acceptance_rate)
    t = state.iteration + 1
    weight = 1.0 / (t + T0)
    average_error = (1.0 - weight) * state.average_error + weight * (
        target_acceptance - acceptance_rate
    )
    log_step_size = state.mu - jnp.sqrt(t) / GAMMA * average_error
    eta = t ** (-KAPPA)
    log_step_size_avg = eta * log_step_size + (1.0 - eta) * state.log_step_size_avg
    return DualAveragingState(log_step_size, log_step_size_avg, t, average_error, state.mu)
