"""Slice sampling along random directions, with stepping out and shrinkage (Neal, 2003).

One step from ``x`` with log density ``log p``:

1. a direction ``d = eps L u``, ``u`` uniform on the unit sphere, ``L L^T = C`` (the inverse
   mass matrix, i.e. the covariance the directions follow) and ``eps`` the width
   (``step_size``);
2. a level ``log y = log p(x) + log U``, ``U ~ Uniform(0, 1)``;
3. an interval ``[-V, 1 - V]`` (in units of ``d``, ``V ~ Uniform(0, 1)``) stepped out by
   whole widths while its ends lie in the slice ``{t : log p(x + t d) > log y}``, with one
   budget split at random between the two sides so that the step stays reversible when the
   budget binds (Neal, 2003, fig. 3);
4. ``t`` drawn uniformly from the interval, which shrinks towards 0 after each rejection,
   until ``x + t d`` lies in the slice.

In one dimension this is Neal's univariate stepping-out sampler; in several it is
hit-and-run slice sampling with directions shaped by ``C``. Every step moves (unless the
shrink budget runs out, which ``Info`` reports) and there is no acceptance rate to tune.
Points where the log density is ``-inf`` (outside a support, or outside a likelihood
contour) are simply outside the slice, so hard constraints need nothing special. NaN log
densities are treated the same way and counted in ``Info.num_nonfinite``.

References:
    Neal, R. M. (2003). Slice sampling. Annals of Statistics, 31(3), 705-767.
"""

from typing import Any

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray

from probinfer._validation import check_count
from probinfer.mcmc._algorithm import Algorithm, RawKernel
from probinfer.mcmc._base import LogDensityFn, MetricParams, TransitionInfo
from probinfer.mcmc._metric import euclidean_metric
from probinfer.mcmc._rwm import RWMState, init
from probinfer.model._target import value_and_aux

MAX_NUM_STEPS_OUT = 32
MAX_NUM_SHRINKS = 100


def build_kernel(
    max_num_steps_out: int = MAX_NUM_STEPS_OUT, max_num_shrinks: int = MAX_NUM_SHRINKS
) -> RawKernel:
    """Build the raw slice-sampling kernel.

    Args:
        max_num_steps_out: stepping-out budget shared by both ends of the interval (>= 1).
        max_num_shrinks: draws from the shrinking interval before the step gives up and
            stays put (>= 1).

    Returns:
        ``kernel(key, state, logdensity_fn, params)`` with
        :class:`~probinfer.mcmc.MetricParams`; its state is :class:`~probinfer.mcmc.RWMState`
        (position and log density).

    Raises:
        ValueError: for a budget that is not a positive int.
    """
    max_num_steps_out = check_count("max_num_steps_out", max_num_steps_out, 1)
    max_num_shrinks = check_count("max_num_shrinks", max_num_shrinks, 1)

    def kernel(
        key: PRNGKeyArray,
        state: RWMState,
        logdensity_fn: LogDensityFn,
        params: MetricParams,
    ) -> tuple[RWMState, TransitionInfo]:
        key_direction, key_level, key_offset, key_budget, key_shrink = jax.random.split(key, 5)
        flat, unravel = ravel_pytree(state.position)
        metric = euclidean_metric(params.inverse_mass_matrix)
        sphere = jax.random.normal(key_direction, flat.shape, flat.dtype)
        direction = params.step_size * metric.scale(sphere / jnp.linalg.norm(sphere))

        value_and_aux_fn = value_and_aux(logdensity_fn)

        def along_with_aux(t: Array) -> tuple[Array, Array, Any]:
            value, aux = value_and_aux_fn(unravel(flat + t * direction))
            is_nan = jnp.isnan(value)
            return jnp.where(is_nan, -jnp.inf, value), is_nan.astype(jnp.int32), aux

        def along(t: Array) -> tuple[Array, Array]:
            return along_with_aux(t)[:2]

        level = state.logdensity + jnp.log(jax.random.uniform(key_level, dtype=flat.dtype))
        lower = -jax.random.uniform(key_offset, dtype=flat.dtype)
        upper = lower + 1.0
        budget_lower = jax.random.randint(key_budget, (), 0, max_num_steps_out)
        budget_upper = max_num_steps_out - 1 - budget_lower

        def step_out(bound: Array, sign: float, budget: Array) -> tuple[Array, Array, Array]:
            value, num_nan = along(bound)

            def is_inside(carry: tuple[Array, Array, Array, Array]) -> Array:
                _, value, steps, _ = carry
                return (steps < budget) & (value > level)

            def widen(
                carry: tuple[Array, Array, Array, Array],
            ) -> tuple[Array, Array, Array, Array]:
                bound, _, steps, num_nan = carry
                bound = bound + sign
                value, is_nan = along(bound)
                return bound, value, steps + 1, num_nan + is_nan

            carry = (bound, value, jnp.asarray(0, jnp.int32), num_nan)
            bound, _, steps, num_nan = jax.lax.while_loop(is_inside, widen, carry)
            return bound, steps + 1, num_nan

        lower, evals_lower, nan_lower = step_out(lower, -1.0, budget_lower)
        upper, evals_upper, nan_upper = step_out(upper, 1.0, budget_upper)

        def is_searching(carry: tuple[Array, ...]) -> Array:
            *_, is_accepted, num_shrinks, _ = carry
            return ~is_accepted & (num_shrinks < max_num_shrinks)

        def shrink(carry: tuple[Any, ...]) -> tuple[Any, ...]:
            key, lower, upper, _, _, _, _, num_shrinks, num_nan = carry
            key, key_t = jax.random.split(key)
            t = jax.random.uniform(key_t, dtype=flat.dtype, minval=lower, maxval=upper)
            value, is_nan, aux = along_with_aux(t)
            is_accepted = value > level
            lower = jnp.where(~is_accepted & (t < 0), t, lower)
            upper = jnp.where(~is_accepted & (t >= 0), t, upper)
            return (
                key, lower, upper, t, value, aux, is_accepted, num_shrinks + 1, num_nan + is_nan
            )  # fmt: skip

        zero = jnp.zeros((), flat.dtype)
        carry = (
            key_shrink, lower, upper, zero, state.logdensity, state.aux, jnp.asarray(False),
            jnp.asarray(0, jnp.int32), nan_lower + nan_upper,
        )  # fmt: skip
        carry = jax.lax.while_loop(is_searching, shrink, carry)
        _, _, _, t, value, aux, is_accepted, num_shrinks, num_nan = carry
        new_state = jax.tree.map(
            lambda new, old: jnp.where(is_accepted, new, old),
            RWMState(unravel(flat + t * direction), value, aux),
            state,
        )
        info = TransitionInfo(
            acceptance_rate=is_accepted.astype(flat.dtype),
            is_accepted=is_accepted,
            is_divergent=jnp.asarray(False),
            num_grad_evals=evals_lower + evals_upper + num_shrinks,
            num_nonfinite=num_nan,
            tree_depth=jnp.asarray(0, jnp.int32),
            energy=-new_state.logdensity,
        )
        return new_state, info

    return kernel


slice_sampler = Algorithm(
    "slice",
    init,
    build_kernel,
    MetricParams,
    build_options=("max_num_steps_out", "max_num_shrinks"),
    target_acceptance=None,
    uses_gradient=False,
)
"""Slice sampling along a random direction, with stepping out and shrinkage (Neal, 2003).
``slice_sampler(logdensity_fn, step_size, inverse_mass_matrix=None)`` returns a
``Kernel``; the step size is the initial slice width."""
