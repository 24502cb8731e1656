"""The leapfrog (velocity Verlet) integrator for Hamiltonian dynamics on flat vectors."""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
from jaxtyping import Array


class IntegratorState(NamedTuple):
    """A point in phase space, flat.

    Attributes:
        position: flat position, shape ``(dim,)``.
        momentum: flat momentum, shape ``(dim,)``.
        logdensity: log density at ``position``.
        logdensity_grad: gradient at ``position``, shape ``(dim,)``.
        aux: auxiliary values of the log density at ``position`` (``()`` if none).
    """

    position: Array
    momentum: Array
    logdensity: Array
    logdensity_grad: Array
    aux: Any = ()


def leapfrog(
    flat_value_and_aux_fn: Callable[[Array], tuple[Array, Any]],
    velocity_fn: Callable[[Array], Array],
) -> Callable[[IntegratorState, Array], IntegratorState]:
    """Build one leapfrog step ``(state, step_size) -> state``.

    With ``U = -log p``: ``p_{1/2} = p + (eps/2) grad log p(x)``,
    ``x' = x + eps M^{-1} p_{1/2}``, ``p' = p_{1/2} + (eps/2) grad log p(x')``.
    A negative ``step_size`` integrates backward in time (used by NUTS).

    Args:
        flat_value_and_aux_fn: ``flat position -> (log density, aux)``.
        velocity_fn: ``p -> M^{-1} p`` for the metric.

    Returns:
        The step function; one gradient evaluation per call.
    """
    value_and_grad = jax.value_and_grad(flat_value_and_aux_fn, has_aux=True)

    def step(state: IntegratorState, step_size: Array) -> IntegratorState:
        momentum = state.momentum + 0.5 * step_size * state.logdensity_grad
        position = state.position + step_size * velocity_fn(momentum)
        (logdensity, aux), logdensity_grad = value_and_grad(position)
        momentum = momentum + 0.5 * step_size * logdensity_grad
        return IntegratorState(position, momentum, logdensity, logdensity_grad, aux)

    return step
