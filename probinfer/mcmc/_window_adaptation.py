"""Stan's windowed warm-up: step size by dual averaging, mass matrix by Welford windows.

The warm-up of ``num_steps`` iterations is split (Stan reference manual, "HMC algorithm
parameters") into an initial fast buffer (75 steps: step size only), a series of slow
windows doubling from 25 steps (the inverse mass matrix is re-estimated from the draws of
each window; then, as Stan does, the step-size search runs again for the new metric and
dual averaging restarts from its result), and a terminal fast buffer (50 steps). For
short warm-ups the buffers shrink to 15% / 75% / 10%.

RWM and MALA (``Algorithm.has_cumulative_warmup``) keep the windows and adapt the step
size without restarts: their draws are so autocorrelated that one window holds few
effective draws (measured in docs/mcmc.md). A diagonal metric is estimated from every slow
draw since the first window ended. A dense one is estimated window by window, as Stan
does, but shrunk toward its own diagonal with weight ``10 dim / (n + 10 dim)`` for ``n``
draws: a covariance from few effective draws is nearly singular, and a random walk with
it explores even less in the directions it underestimates (the cumulative dense estimate
collapsed so: logistic regression, 4 x 20,000 RWM steps, R-hat 2.4-2.8; window by window
with shrinkage 1.02-1.03, ESS 290-320 against the diagonal's 80-190).
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray

from probinfer._members import member_cond
from probinfer._validation import is_real_dtype
from probinfer.mcmc._algorithm import (
    Algorithm,
    check_metric,
    check_step_size,
)
from probinfer.mcmc._base import LogDensityFn, PyTree
from probinfer.mcmc._dual_averaging import (
    DualAveragingState,
    dual_averaging_init,
    dual_averaging_update,
)
from probinfer.mcmc._integrators import IntegratorState, leapfrog
from probinfer.mcmc._metric import MassMatrix, euclidean_metric, factor_mass_matrix
from probinfer.mcmc._welford import (
    WelfordState,
    regularized_covariance,
    welford_init,
    welford_update,
)
from probinfer.model._target import value_and_aux


class WarmupSchedule(NamedTuple):
    """Per-iteration flags of the warm-up, arrays of shape ``(num_steps,)``.

    :func:`build_schedule` gives NumPy arrays; a row inside a compiled loop holds JAX scalars.

    Attributes:
        is_slow: the draw of this iteration feeds the mass-matrix estimate.
        is_window_end: after this iteration the mass matrix is updated.
    """

    is_slow: Array | np.ndarray
    is_window_end: Array | np.ndarray


class WindowAdaptationState(NamedTuple):
    """State of window adaptation for one chain.

    Attributes:
        mcmc_state: the kernel's state.
        step_size: the step size used by the next transition.
        inverse_mass_matrix: the current inverse mass matrix and its factor (a
            :class:`~probinfer.mcmc.MassMatrix`; ``.inverse`` is ``(dim,)`` or
            ``(dim, dim)``), refactored only when a window ends.
        dual_averaging: step-size adaptation state.
        welford: running moments of the current slow window (of every slow draw since
            the first window ended, for algorithms with a cumulative warm-up).
        num_metric_updates: metric windows completed so far.
    """

    mcmc_state: Any
    step_size: Array
    inverse_mass_matrix: MassMatrix
    dual_averaging: DualAveragingState
    welford: WelfordState
    num_metric_updates: Array


class WindowAdaptation(NamedTuple):
    """Window adaptation as a kernel-like pair, plus a one-call ``run``.

    Attributes:
        init: ``init(position, key) -> WindowAdaptationState`` (the key draws the momentum
            of Stan's step-size search).
        step: ``step(key, state, flags) -> (state, info)``: one kernel transition followed
            by ``update``; ``flags`` is this iteration's row of the schedule (a
            :class:`WarmupSchedule` of scalars: ``schedule[i]`` for iteration ``i``).
        update: ``update(key, state, mcmc_state, info, flags) -> state``: the
            adaptation updates that ``flags`` prescribe after a transition to
            ``mcmc_state`` (``key`` draws the momentum of the step-size search that
            follows a new metric).
        run: ``run(key, position, num_steps) -> (mcmc_state, parameters, info)``;
            ``parameters`` is a dict with ``step_size`` and ``inverse_mass_matrix``.
        parameters: ``parameters(state) -> dict``: the tuned parameters to sample with.
    """

    init: Callable[[PyTree, PRNGKeyArray], WindowAdaptationState]
    step: Callable[[PRNGKeyArray, WindowAdaptationState, WarmupSchedule], tuple[Any, Any]]
    update: Callable[
        [PRNGKeyArray, WindowAdaptationState, Any, Any, WarmupSchedule], WindowAdaptationState
    ]
    run: Callable[[PRNGKeyArray, PyTree, int], tuple[Any, dict[str, Array], Any]]
    parameters: Callable[[WindowAdaptationState], dict[str, Array]]


def build_schedule(num_steps: int) -> WarmupSchedule:
    """Stan's warm-up windows for ``num_steps`` iterations.

    Args:
        num_steps: number of warm-up iterations, >= 0.

    Returns:
        The per-iteration flags (numpy arrays). With fewer than 20 steps only the step
        size is adapted.

    Unlike Stan, the first slow window is also stretched to the end of the slow phase
    when the remainder after it would be shorter than it: for 151-174 steps Stan follows
    the first window (25 steps) with one of 1-24 steps (a covariance from a single draw at
    151), which here is merged into the first. Every other length gives Stan's windows.
    """
    is_slow = np.zeros(num_steps, bool)
    is_window_end = np.zeros(num_steps, bool)
    if num_steps < 20:
        return WarmupSchedule(is_slow, is_window_end)
    init_buffer, term_buffer, base_window = 75, 50, 25
    if init_buffer + term_buffer + base_window > num_steps:
        init_buffer = int(0.15 * num_steps)
        term_buffer = int(0.1 * num_steps)
        base_window = num_steps - init_buffer - term_buffer
    slow_end = num_steps - term_buffer
    start, size = init_buffer, base_window
    while start < slow_end:
        # A window absorbs the remainder rather than leave a short last window (Stan's
        # rule from the second window on; for the first, only a tail shorter than it).
        reach = 2 * size if start == init_buffer else 3 * size
        end = start + size if start + reach <= slow_end else slow_end
        is_slow[start:end] = True
        is_window_end[end - 1] = True
        start, size = end, 2 * size
    return WarmupSchedule(is_slow, is_window_end)


UPDATE_KEY_DATA = 0x5EED_ADA9  # folded into a transition's key for its adaptation update
MAX_WINDOWS = 48  # windows double from 25 steps: 48 cover any warm-up that fits in int32


class ScheduleBounds(NamedTuple):
    """A warm-up schedule as a few integers: its length is a runtime value, not a shape.

    A compiled loop that reads its flags from these (``flags(i)``) serves every warm-up
    length, where the per-iteration arrays of :func:`build_schedule` would have a
    different shape, and so a different program, for each.

    Attributes:
        slow_start: first slow iteration (the slow phase is one contiguous span).
        slow_end: one past the last slow iteration.
        window_ends: ``(MAX_WINDOWS,)`` the last iteration of each slow window, padded
            with -1.
    """

    slow_start: Array
    slow_end: Array
    window_ends: Array

    def flags(self, step_index: Array) -> WarmupSchedule:
        """Iteration ``step_index``'s row of the schedule (scalars)."""
        return WarmupSchedule(
            is_slow=(step_index >= self.slow_start) & (step_index < self.slow_end),
            is_window_end=jnp.any(self.window_ends == step_index),
        )


def schedule_bounds(num_steps: int) -> ScheduleBounds:
    """The :class:`ScheduleBounds` of :func:`build_schedule` ``(num_steps)``.

    Args:
        num_steps: number of warm-up iterations, >= 0.

    Returns:
        The bounds (int32 arrays); ``flags(i)`` equals ``build_schedule(num_steps)[i]``.
    """
    schedule = build_schedule(num_steps)
    slow = np.flatnonzero(schedule.is_slow)
    ends = np.flatnonzero(schedule.is_window_end)
    if slow.size and slow.size != slow[-1] - slow[0] + 1:
        raise ValueError("the warm-up schedule's slow phase is not one contiguous span")
    if ends.size > MAX_WINDOWS:
        raise ValueError(f"{ends.size} metric windows, more than MAX_WINDOWS = {MAX_WINDOWS}")
    window_ends = np.full(MAX_WINDOWS, -1, np.int32)
    window_ends[: ends.size] = ends
    start, end = (int(slow[0]), int(slow[-1]) + 1) if slow.size else (0, 0)
    return ScheduleBounds(
        jnp.asarray(start, jnp.int32), jnp.asarray(end, jnp.int32), jnp.asarray(window_ends)
    )


def update_key(key: PRNGKeyArray) -> PRNGKeyArray:
    """The adaptation update's key, derived from the transition's key.

    Folded in rather than split off, so that a transition draws with the same key whether
    or not an adaptation update follows it. Not with a small number: with JAX's
    partitionable threefry ``fold_in(k, i) == split(k, n)[i]``, which the kernels use.
    """
    return jax.random.fold_in(key, UPDATE_KEY_DATA)


# A dense estimate of an algorithm with a cumulative warm-up (RWM, MALA) is shrunk toward
# its diagonal as if this many draws per dimension had the diagonal covariance
# (logistic regression, RWM: 5, 10 and 30 give ESS 235-256, 289-318 and 319-340).
DIAGONAL_PRIOR_DRAWS_PER_DIM = 10


def _window_estimate(welford: WelfordState, *, shrink_to_diagonal: bool) -> Array:
    """The inverse mass matrix estimated from one slow window.

    A dense estimate from fewer than ``2 * dim`` draws is rank-deficient or nearly so, and
    Stan's shrinkage toward ``1e-3 I`` then leaves tiny variances in the unexplored
    directions (trajectories hit the maximum depth). Such a window gives the diagonal of
    its covariance instead; the later, longer windows give the dense estimate (with
    ``shrink_to_diagonal``, pulled toward its diagonal: see the module docstring).
    """
    estimate = regularized_covariance(welford)
    if estimate.ndim == 1:
        return estimate
    dim = estimate.shape[0]
    diagonal = jnp.diag(jnp.diagonal(estimate))
    if shrink_to_diagonal:
        prior_draws = DIAGONAL_PRIOR_DRAWS_PER_DIM * dim
        weight = welford.count / (welford.count + prior_draws)
        estimate = weight * estimate + (1 - weight) * diagonal
    return jnp.where(welford.count >= 2 * dim, estimate, diagonal)


def find_reasonable_step_size(
    key: PRNGKeyArray,
    position: PyTree,
    logdensity_fn: LogDensityFn,
    inverse_mass_matrix: Array | MassMatrix,
    initial_step_size: float | Array,
    max_iterations: int = 100,
) -> Array:
    """Stan's step-size initialization heuristic.

    Doubles (or halves) the step size until the acceptance probability of a single
    leapfrog step from ``position`` crosses 0.8 (Hoffman & Gelman, 2014, algorithm 4).

    Args:
        key: PRNG key for the momentum.
        position: starting point, any pytree.
        logdensity_fn: log density of a position.
        inverse_mass_matrix: ``(dim,)`` or ``(dim, dim)``, or a factored
            :class:`~probinfer.mcmc.MassMatrix`.
        initial_step_size: where the search starts, > 0.
        max_iterations: cap on the number of doublings or halvings.

    Returns:
        A step size, a scalar.
    """
    flat, unravel = ravel_pytree(position)
    metric = euclidean_metric(inverse_mass_matrix)

    value_and_aux_fn = value_and_aux(logdensity_fn)

    def flat_value_and_aux_fn(x: Array) -> tuple[Array, Any]:
        return value_and_aux_fn(unravel(x))

    integrate = leapfrog(flat_value_and_aux_fn, metric.velocity)
    (logdensity, aux), grad = jax.value_and_grad(flat_value_and_aux_fn, has_aux=True)(flat)
    start = IntegratorState(flat, metric.sample_momentum(key), logdensity, grad, aux)
    start_energy: Array = -logdensity + metric.kinetic_energy(start.momentum)

    def log_accept(step_size: Array) -> Array:
        end = integrate(start, step_size)
        delta = start_energy - (-end.logdensity + metric.kinetic_energy(end.momentum))
        return jnp.where(jnp.isfinite(delta), delta, -jnp.inf)

    initial_step_size = jnp.asarray(initial_step_size, flat.dtype)
    direction = jnp.where(log_accept(initial_step_size) > jnp.log(0.8), 1.0, -1.0)

    def keep_going(carry: tuple[Array, Array | int]) -> Array:
        step_size, iteration = carry
        crossed = direction * log_accept(step_size) <= direction * jnp.log(0.8)
        in_range = (step_size > 1e-10) & (step_size < 1e7)
        return ~crossed & in_range & (iteration < max_iterations)

    def scale(carry: tuple[Array, Array | int]) -> tuple[Array, Array | int]:
        step_size, iteration = carry
        return step_size * 2.0**direction, iteration + 1

    step_size, _ = jax.lax.while_loop(keep_going, scale, (initial_step_size, 0))
    return step_size


def check_target_acceptance(target: Any) -> float:
    """The target acceptance rate as a float, checked.

    Args:
        target: what the user passed.

    Returns:
        ``float(target)``.

    Raises:
        TypeError: when it is not one real number (a string, complex, an array).
        ValueError: when it is not in the open interval (0, 1) (NaN included).
    """
    fix = "NUTS/HMC usually use 0.8 (0.9-0.99 for posteriors with divergences)."
    if np.ndim(target) != 0 or not is_real_dtype(np.asarray(target).dtype):
        raise TypeError(f"`target_acceptance` must be a number in (0, 1), got {target!r}; {fix}")
    if not 0.0 < float(target) < 1.0:
        raise ValueError(f"`target_acceptance` must be in (0, 1), got {target}; {fix}")
    return float(target)


def window_adaptation(
    algorithm: Algorithm,
    logdensity_fn: LogDensityFn,
    *,
    metric: str | None = None,
    target_acceptance: float | None = None,
    initial_step_size: float | None = None,
    **options: Any,
) -> WindowAdaptation:
    """Stan-style warm-up for any :class:`~probinfer.mcmc.Algorithm`.

    Args:
        algorithm: ``probinfer.mcmc.rwm``, ``mala``, ``hmc`` or ``nuts``.
        logdensity_fn: log density of a position pytree.
        metric: ``"dense"`` (the inverse mass matrix is the full covariance estimate) or
            ``"diag"`` (its diagonal); by default the algorithm's rule
            (``algorithm.dense_metric_max_dim``): NUTS and HMC dense up to 200
            dimensions, diagonal above; RWM and MALA diagonal (measured in
            ``benchmarks/metric_default.py``).
        target_acceptance: acceptance rate for dual averaging, in (0, 1); default the
            algorithm's (0.8 for NUTS and HMC, 0.574 for MALA, 0.234 for RWM).
        initial_step_size: where the step-size search starts; default 1 for gradient
            methods (then Stan's doubling heuristic) and 2.38 / sqrt(dim) for RWM.
        **options: the algorithm's other options (``max_num_doublings``,
            ``num_integration_steps``, ...).

    Returns:
        A :class:`WindowAdaptation`.

    Raises:
        TypeError: for a target acceptance that is not one real number.
        ValueError: for a target acceptance outside (0, 1), an unknown metric or option.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from probinfer import mcmc
        >>> logdensity_fn = lambda x: -0.5 * jnp.sum(x**2)
        >>> warmup = mcmc.window_adaptation(mcmc.nuts, logdensity_fn)
        >>> state, params, _ = warmup.run(jax.random.key(0), jnp.zeros(3), 200)
        >>> kernel = mcmc.nuts(logdensity_fn, **params)
    """
    target = algorithm.target_acceptance if target_acceptance is None else target_acceptance
    if target is None:
        raise ValueError(
            f"`{algorithm.name}` has no acceptance rate for dual averaging to adapt its step "
            "size to; pass its `step_size` (for slice sampling, the width in units of the "
            "covariance) to the kernel directly."
        )
    target = check_target_acceptance(target)
    if initial_step_size is not None:
        check_step_size(initial_step_size)
    check_metric(metric)
    build_options, fixed_parameters = algorithm.split_options(options)
    kernel = algorithm.build_kernel(**build_options)

    def init(position: PyTree, key: PRNGKeyArray) -> WindowAdaptationState:
        flat, _ = ravel_pytree(position)
        dim = flat.shape[0]
        is_dense = dim <= algorithm.dense_metric_max_dim if metric is None else metric == "dense"
        inverse_mass_matrix = (
            jnp.eye(dim, dtype=flat.dtype) if is_dense else jnp.ones(dim, flat.dtype)
        )
        mcmc_state = algorithm.init(position, logdensity_fn)
        if algorithm.uses_gradient:
            start = 1.0 if initial_step_size is None else initial_step_size
            step_size = find_reasonable_step_size(
                key, position, logdensity_fn, inverse_mass_matrix, start
            )
        else:
            default = 2.38 / np.sqrt(dim)
            step_size = jnp.asarray(
                default if initial_step_size is None else initial_step_size, flat.dtype
            )
        return WindowAdaptationState(
            mcmc_state=mcmc_state,
            step_size=step_size,
            inverse_mass_matrix=factor_mass_matrix(inverse_mass_matrix),
            dual_averaging=dual_averaging_init(step_size),
            welford=welford_init(dim, is_dense, flat.dtype),
            num_metric_updates=jnp.asarray(0, jnp.int32),
        )

    def restart_step_size(
        key: PRNGKeyArray,
        position: PyTree,
        inverse_mass_matrix: MassMatrix,
        dual: DualAveragingState,
    ) -> DualAveragingState:
        # Stan, after each metric window: search for a step size for the new metric from
        # the current iterate (gradient methods), then restart with mu = log(10 eps). An
        # algorithm without gradients to search with restarts at its averaged step size,
        # with mu = log(eps) (no built-in one: RWM's warm-up is cumulative).
        if not algorithm.uses_gradient:
            return dual_averaging_init(jnp.exp(dual.log_step_size_avg), shrink_factor=1.0)
        step_size = find_reasonable_step_size(
            key,
            position,
            logdensity_fn,
            inverse_mass_matrix,
            jnp.exp(dual.log_step_size),
        )
        return dual_averaging_init(step_size)

    def update(
        key: PRNGKeyArray,
        state: WindowAdaptationState,
        mcmc_state: Any,
        info: Any,
        flags: WarmupSchedule,
    ) -> WindowAdaptationState:
        dual = dual_averaging_update(state.dual_averaging, info.acceptance_rate, target)
        flat, _ = ravel_pytree(mcmc_state.position)
        welford = jax.tree.map(
            lambda new, old: jnp.where(flags.is_slow, new, old),
            welford_update(state.welford, flat),
            state.welford,
        )
        # A real branch even for vectorized chains (which may reach a window end at
        # different iterations of a flat loop): the matrix is refactored once per window.
        is_window_end = flags.is_window_end
        inverse_mass_matrix = member_cond(
            is_window_end,
            lambda: factor_mass_matrix(
                _window_estimate(welford, shrink_to_diagonal=algorithm.has_cumulative_warmup)
            ),
            lambda: state.inverse_mass_matrix,
        )
        # Window by window as Stan; a cumulative warm-up's diagonal estimate only after
        # the first window, whose draws are the furthest from the posterior.
        is_reset = is_window_end
        if algorithm.has_cumulative_warmup and welford.m2.ndim == 1:
            is_reset = is_window_end & (state.num_metric_updates == 0)
        welford = jax.tree.map(
            lambda empty, w: jnp.where(is_reset, empty, w),
            welford_init(flat.shape[0], welford.m2.ndim == 2, flat.dtype),
            welford,
        )
        if not algorithm.has_cumulative_warmup:  # a cumulative warm-up never restarts
            dual = member_cond(
                is_window_end,
                lambda: restart_step_size(key, mcmc_state.position, inverse_mass_matrix, dual),
                lambda: dual,
            )
        return WindowAdaptationState(
            mcmc_state=mcmc_state,
            step_size=jnp.exp(dual.log_step_size),
            inverse_mass_matrix=inverse_mass_matrix,
            dual_averaging=dual,
            welford=welford,
            num_metric_updates=state.num_metric_updates + is_window_end.astype(jnp.int32),
        )

    def step(
        key: PRNGKeyArray, state: WindowAdaptationState, flags: WarmupSchedule
    ) -> tuple[WindowAdaptationState, Any]:
        params = algorithm.make_params(
            state.step_size, state.inverse_mass_matrix, **fixed_parameters
        )
        mcmc_state, info = kernel(key, state.mcmc_state, logdensity_fn, params)
        return update(update_key(key), state, mcmc_state, info, flags), info

    def parameters(state: WindowAdaptationState) -> dict[str, Array]:
        # Before any dual-averaging update (no warm-up, or just after a restart) the
        # average is undefined: keep the step size in use.
        averaged = jnp.exp(state.dual_averaging.log_step_size_avg)
        return {
            "step_size": jnp.where(state.dual_averaging.iteration > 0, averaged, state.step_size),
            "inverse_mass_matrix": state.inverse_mass_matrix.inverse,
        }

    def run(
        key: PRNGKeyArray, position: PyTree, num_steps: int
    ) -> tuple[Any, dict[str, Array], Any]:
        key_init, key_steps = jax.random.split(key)
        schedule = WarmupSchedule(*(jnp.asarray(a) for a in build_schedule(num_steps)))
        state = init(position, key_init)

        def one_step(
            s: WindowAdaptationState, inputs: tuple[Array, WarmupSchedule]
        ) -> tuple[WindowAdaptationState, Any]:
            i, flags = inputs
            return step(jax.random.fold_in(key_steps, i), s, flags)

        state, info = jax.lax.scan(one_step, state, (jnp.arange(num_steps), schedule))
        return state.mcmc_state, parameters(state), info

    return WindowAdaptation(init, step, update, run, parameters)
