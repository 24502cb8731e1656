"""Tempering schedules: pure functions ``state -> next inverse temperature``.

A schedule never owns a loop: the tempered SMC step asks it for the next ``beta`` given the
current state (particles' log likelihoods, weights and ``beta``).

- :func:`adaptive_tempering`: the largest step whose conditional ESS stays at a target
  fraction of the particles, found by bisection (Jasra et al., 2011; Zhou, Johansen &
  Aston, 2016), so the ladder adapts to how informative the likelihood is.
- :func:`fixed_schedule`: the next value of a given increasing ladder.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike

from probinfer.smc._weights import conditional_ess

NextTemperatureFn = Callable[[Any], Array]


def tempered_increments(loglikelihood: Array, delta: Array) -> Array:
    """``delta * log L`` with ``0 * -inf = 0`` (a zero likelihood at a zero step).

    Args:
        loglikelihood: ``(N,)`` log likelihoods (``-inf`` allowed).
        delta: the temperature step, a scalar >= 0.

    Returns:
        ``(N,)`` log incremental weights.
    """
    return jnp.where(delta > 0, delta * loglikelihood, 0.0)


def adaptive_tempering(
    target_ess: float = 0.5, *, num_bisection_steps: int = 50
) -> NextTemperatureFn:
    """Next ``beta`` so that the conditional ESS of the reweighting is ``target_ess * N``.

    Args:
        target_ess: fraction of the particles, in (0, 1); smaller steps for larger values.
        num_bisection_steps: bisection iterations on the step (``2^-50`` resolution).

    Returns:
        ``state -> next beta`` (1 when the whole remaining step keeps the target).

    Raises:
        ValueError: for ``target_ess`` outside (0, 1).
    """
    if not 0.0 < target_ess < 1.0:
        raise ValueError(
            f"`target_ess` must be in (0, 1), got {target_ess}; 0.5 is usual (larger: more, "
            "smaller tempering steps)."
        )

    def next_inverse_temperature(state: Any) -> Array:
        beta: Array = state.inverse_temperature
        num = state.log_weights.shape[0]

        def excess(delta: Array) -> Array:
            increments = tempered_increments(state.loglikelihood, delta)
            return conditional_ess(state.log_weights, increments) - target_ess * num

        def bisect(_: int, bounds: tuple[Array, Array]) -> tuple[Array, Array]:
            lower, upper = bounds
            middle = 0.5 * (lower + upper)
            keeps = excess(middle) >= 0
            return jnp.where(keeps, middle, lower), jnp.where(keeps, upper, middle)

        remaining = 1.0 - beta
        lower: Array
        lower, _ = jax.lax.fori_loop(
            0, num_bisection_steps, bisect, (jnp.zeros_like(beta), remaining)
        )
        # At least a step that moves beta (1e-12 near 0, where CPUs flush the denormal
        # `nextafter(0, 1)` to 0; one ulp higher up), so that a run always ends.
        next_beta = jnp.where(excess(remaining) >= 0, 1.0, beta + lower)
        floor = jnp.maximum(jnp.nextafter(beta, 2.0), beta + 1e-12)
        return jnp.minimum(jnp.maximum(next_beta, floor), 1.0)

    return next_inverse_temperature


def fixed_schedule(inverse_temperatures: ArrayLike) -> NextTemperatureFn:
    """The next value of an increasing ladder that ends at 1.

    Args:
        inverse_temperatures: increasing values in (0, 1], the last one 1.

    Returns:
        ``state -> next beta``.

    Raises:
        ValueError: for a ladder that is not increasing, leaves (0, 1] or does not end at 1.
    """
    ladder = np.asarray(inverse_temperatures, np.float64)
    if ladder.ndim != 1 or ladder.size == 0 or ladder[-1] != 1.0:
        raise ValueError("`inverse_temperatures` must be a 1-d ladder ending at 1.")
    if np.any(np.diff(ladder) <= 0) or ladder[0] <= 0:
        raise ValueError("`inverse_temperatures` must increase strictly from above 0 to 1.")

    def next_inverse_temperature(state: Any) -> Array:
        beta = state.inverse_temperature
        values = jnp.asarray(ladder, beta.dtype)
        index = jnp.searchsorted(values, beta, side="right")
        return values[jnp.minimum(index, values.shape[0] - 1)]

    return next_inverse_temperature
