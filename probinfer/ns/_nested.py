"""Nested sampling with k-deletion and likelihood-constrained MCMC moves (Skilling, 2006).

The state is ``n`` live points drawn from the prior. One iteration:

1. remove the ``k`` live points of lowest likelihood (they become *dead points*); the
   highest of their log likelihoods is the new contour ``t``;
2. account for them (:mod:`probinfer.ns._evidence`): the expected log volume falls by
   ``1/n + 1/(n - 1) + ... + 1/(n - k + 1)`` and the running ``log Z`` gains
   ``sum L_i (X_{i-1} - X_i)``;
3. replace them: each of ``k`` new points starts at a surviving live point chosen at random
   and moves by a constrained move (:func:`probinfer.mcmc.constrained`: any MCMC kernel on
   the prior restricted to ``log L > t``); the ``k`` moves run in parallel (``vmap``). The
   kernel's metric is the live points' covariance, so slice directions (and random-walk
   proposals) are whitened by the current contour's shape; a random walk's step size is
   adapted between iterations towards its target acceptance.

Every surviving point lies inside the new contour and the constrained moves leave the
restricted prior invariant, so each replacement is (after enough steps) an independent
draw from the prior above ``t``: the condition the volume accounting relies on.

The run stops when the live points can hold at most a fraction ``f`` of the evidence found:
``L_max X < f Z`` (:func:`remaining_log_fraction`); the final live points are then
accounted for in order (:func:`probinfer.ns.removal_counts`).

Non-finite log likelihoods: ``-inf`` is a zero likelihood (such a point is removed first,
with weight 0); NaN and ``+inf`` are invalid, set to ``-inf`` and counted.

References:
    Skilling, J. (2006). Nested sampling for general Bayesian computation. Bayesian
    Analysis, 1(4), 833-860.
    Neal, R. M. (2003). Slice sampling. Annals of Statistics, 31(3), 705-767.
    Handley, W., Hobson, M. & Lasenby, A. (2015). PolyChord: next-generation nested
    sampling. MNRAS, 453(4), 4384-4398 (slice moves whitened by the live points).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray

from probinfer._validation import check_count
from probinfer.mcmc._algorithm import (
    DENSE_MASS_MATRIX_MAX_DIM,
    Algorithm,
    adapt_step_size,
    check_metric,
)
from probinfer.mcmc._constrained import constrained
from probinfer.mcmc._metric import population_covariance
from probinfer.model._target import Target
from probinfer.ns._ellipsoid import (
    BoundDraws,
    bounding_ellipsoid,
    draw_above_contour,
    sample_ellipsoid,
)
from probinfer.ns._emulator import (
    Emulator,
    EmulatorState,
    add_dead_points,
    emulate,
    init_emulator,
    train_emulator,
)
from probinfer.ns._evidence import shrink
from probinfer.smc._weights import zero_invalid

PyTree = Any
# The ellipsoidal bound's default volume margin over its bootstrap expansion (dynesty's).
DEFAULT_ENLARGE = 1.25


class NestedState(NamedTuple):
    """The live points and the evidence accumulated from the dead ones.

    Attributes:
        positions: live points, a pytree with a leading axis ``n``.
        loglikelihood: ``(n,)`` their log likelihoods.
        log_volume: expected log prior volume inside the last contour (0 at the start).
        log_z: log evidence of the dead points so far (``-inf`` at the start).
        step_size: the move's step size in whitened units (slice width, walk scale).
        emulator: the likelihood emulator's state
            (:class:`~probinfer.ns.EmulatorState`), or ``()`` without one.
    """

    positions: PyTree
    loglikelihood: Array
    log_volume: Array
    log_z: Array
    step_size: Array
    emulator: Any = ()


class NestedInfo(NamedTuple):
    """One iteration: the dead points and the moves' diagnostics.

    Attributes:
        dead_positions: the ``k`` removed points (leading axis ``k``), in removal order.
        dead_loglikelihood: ``(k,)`` their log likelihoods, increasing.
        log_z: the dead points' log evidence after the iteration.
        remaining_log_fraction: ``log(L_max X / Z)`` after it: the most the live points
            can add, relative to what was found.
        acceptance_rate: mean acceptance of the moves' transitions (1 for slice); on an
            iteration that drew from the bound, the bound's acceptance.
        is_bounded: whether the replacements were drawn from the ellipsoidal bound.
        num_evals: likelihood evaluations of the iteration (true likelihood only).
        num_nonfinite: new points whose log likelihood was NaN or ``+inf``.
        is_emulated: whether the moves ran on the emulator.
        num_emulator_evals: emulator evaluations of the iteration.
        num_unconfirmed: emulated replacements the likelihood did not confirm (moved
            again with the likelihood).
        emulator_error: the emulator's last held-out error in nats (NaN without one).
    """

    dead_positions: PyTree
    dead_loglikelihood: Array
    log_z: Array
    remaining_log_fraction: Array
    acceptance_rate: Array
    is_bounded: Array
    num_evals: Array
    num_nonfinite: Array
    is_emulated: Array
    num_emulator_evals: Array
    num_unconfirmed: Array
    emulator_error: Array


class NestedSampler(NamedTuple):
    """Nested sampling closed over its target and settings.

    Attributes:
        init: ``init(positions, key=None) -> (NestedState, num_nonfinite)`` from ``n``
            prior draws (``key``: the emulator's initial weights, needed with one).
        step: ``step(key, state) -> (state, NestedInfo)``: one iteration.
        num_delete: ``k``, points replaced per iteration.
    """

    init: Callable[..., tuple[NestedState, Array]]
    step: Callable[[PRNGKeyArray, NestedState], tuple[NestedState, NestedInfo]]
    num_delete: int


def check_live_points(num_live: int, num_delete: int, dim: int) -> None:
    """Refuse live-point counts a run cannot work with.

    Args:
        num_live: live points ``n``.
        num_delete: points replaced per iteration ``k``.
        dim: the flat dimension ``d``.

    Raises:
        ValueError: for ``n < d + 1`` (the live points' covariance, which shapes the moves,
            would be singular) or ``k >= n`` (no survivor to start a replacement from).
    """
    if num_live < dim + 1:
        raise ValueError(
            f"`live_points={num_live}` is fewer than the dimension + 1 = {dim + 1}: the live "
            "points' covariance that shapes the moves would be singular; use at least "
            f"{dim + 1} (typically 25 per dimension or more)."
        )
    if num_delete >= num_live:
        raise ValueError(
            f"`num_delete={num_delete}` must be smaller than `live_points={num_live}` (the "
            "replacements start from surviving live points)."
        )


def remaining_log_fraction(state: NestedState) -> Array:
    """``log(L_max X / Z)``: how much the live points could still add, relative to ``Z``.

    Args:
        state: the sampler's state.

    Returns:
        A scalar; ``+inf`` before any evidence is found, ``-inf`` when every live point has
        zero likelihood (nothing is left to find: the run stops).
    """
    max_loglikelihood = jnp.max(state.loglikelihood)
    fraction = jnp.where(
        state.log_z == -jnp.inf, jnp.inf, max_loglikelihood + state.log_volume - state.log_z
    )
    return jnp.where(max_loglikelihood == -jnp.inf, -jnp.inf, fraction)


def min_bound_efficiency(num_steps: int) -> float:
    """The bound's acceptance below which the MCMC move replaces it: ``1 / (2 num_steps)``.

    A bounded draw costs ``1 / efficiency`` likelihood evaluations; a slice move costs
    ``num_steps`` transitions of 3-5 evaluations each, so below this acceptance the bound
    costs at least half as much as the move and, with many modes or curved contours,
    keeps getting worse. Above it the bound is preferred even when somewhat dearer: its
    draws are exact and independent of the survivors.

    Args:
        num_steps: the MCMC move's transitions per replacement.

    Returns:
        The minimum acceptance.
    """
    return 1.0 / (2.0 * num_steps)


def default_num_steps(algorithm: Algorithm, dim: int) -> int:
    """Constrained-move transitions per replacement: ``5 d`` for slice, ``20 d`` otherwise.

    ``5 d`` slice steps is PolyChord's default. Measured on 2-d targets over 20 seeds: with
    ``3 d`` steps the new points stay correlated
    with their starts on Gaussian shells and two separated modes, and ``log_z_err``
    understates the error (rms of error / ``log_z_err`` 1.5); with ``5 d`` it is 0.8-0.9.
    On the zoo's 6-d linear regression (10 seeds each) the rms was 1.40 with ``2 d`` steps
    (BlackJAX's recommended minimum), 1.25 with ``3 d`` and 1.01 with ``5 d``.
    A random walk inside a contour moves much less per step than a slice.

    Args:
        algorithm: the move's algorithm.
        dim: the flat dimension.

    Returns:
        The number of transitions.
    """
    return (5 if algorithm.name == "slice" else 20) * max(dim, 1)


def default_step_size(algorithm: Algorithm, dim: int) -> float:
    """A first step size in the live points' whitened units.

    Slice: a width of ``sqrt(d + 2)``, about half the chord of the contour along a random
    direction (a contour filled uniformly with unit covariance is a ball of that radius).
    Random walk: ``2.38 / sqrt(d)``, then adapted. Gradient moves: ``d^(-1/4)``.

    Args:
        algorithm: the move's algorithm.
        dim: the flat dimension.

    Returns:
        The step size.
    """
    if algorithm.name == "slice":
        return float((dim + 2) ** 0.5)
    if algorithm.name == "rwm":
        return float(2.38 / dim**0.5)
    return float(dim**-0.25)


def nested_sampling(
    target: Target,
    algorithm: Algorithm,
    *,
    num_delete: int,
    num_steps: int,
    step_size: float,
    metric: str | None = None,
    emulator: Emulator | None = None,
    bound: str | None = None,
    enlarge: float = DEFAULT_ENLARGE,
    max_bound_rounds: int | None = None,
    **options: Any,
) -> NestedSampler:
    """Nested sampling with ``k``-deletion and any MCMC algorithm as the constrained move.

    With an ``emulator`` (:mod:`probinfer.ns._emulator`), a network learns the log
    likelihood from the live and recent dead points as the run goes; while its held-out
    error is below the tolerance, the constrained moves run on the emulator, and the
    likelihood is called once per replacement to confirm that the new point lies above the
    contour. A replacement it does not confirm is moved again from its start with the
    likelihood itself (sequentially, so only those cost likelihood calls). Every live and
    dead point keeps its true log likelihood, so the accounting is unchanged; what the
    emulator changes is where the new points fall: uniformly in the part of the contour
    where both agree, which biases ``log Z`` by an amount that shrinks with the emulator's
    error (measured in ``docs/ns.md``).

    Args:
        target: the prior/likelihood split (``density.target``); the prior must be
            normalised for ``log Z`` to be the evidence.
        algorithm: the constrained move, e.g. ``probinfer.mcmc.slice_sampler`` or ``rwm``.
        num_delete: ``k``, live points replaced per iteration (>= 1, < ``n``).
        num_steps: transitions per replacement (see :func:`default_num_steps`).
        step_size: the move's first step size in whitened units
            (:func:`default_step_size`).
        metric: whiten by the live points' full covariance (``"dense"``, the default up to
            200 dimensions) or its diagonal (``"diag"``).
        emulator: :class:`~probinfer.ns.Emulator` settings to emulate the likelihood, or
            None.
        bound: ``"ellipsoid"`` to draw replacements exactly, by rejection from an ellipsoid
            around the surviving live points (:mod:`probinfer.ns._ellipsoid`) or from the
            whole cube while that is smaller, on every iteration where the expected
            acceptance (the contour's expected volume over the region's) is at least
            :func:`min_bound_efficiency`, and by the MCMC move on the others. Only for
            positions that are flat ``(d,)`` points of the unit cube with the uniform prior
            there (:class:`probinfer.model.UnitCube`: a prior transform's input). None:
            MCMC moves only.
        enlarge: the bound's volume margin (``>= 1``) on top of its bootstrap expansion.
        max_bound_rounds: rounds of ``k`` proposals from the bound per iteration at most;
            slots still empty then are filled by MCMC moves. Default
            ``4 / min_bound_efficiency``, four times the rounds expected at the least
            efficiency the bound is used at.
        **options: the algorithm's build options (e.g. ``max_num_steps_out``).

    Returns:
        A :class:`NestedSampler` for one run.

    Raises:
        ValueError: for bad settings, or (at ``init``) fewer than ``k + 1`` or ``d + 1``
            live points.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from probinfer import mcmc, ns
        >>> from probinfer.model import Target
        >>> box = lambda u: jnp.where(jnp.all((u > 0) & (u < 1)), 0.0, -jnp.inf)
        >>> target = Target.from_parts(box, lambda u: -0.5 * jnp.sum(((u - 0.5) / 0.1) ** 2))
        >>> sampler = ns.nested_sampling(target, mcmc.slice_sampler, num_delete=20,
        ...                              num_steps=6, step_size=2.0)
        >>> state, _ = sampler.init(jax.random.uniform(jax.random.key(0), (200, 2)))
        >>> step = jax.jit(sampler.step)
        >>> for i in range(100):
        ...     state, info = step(jax.random.key(i), state)
        >>> float(ns.remaining_log_fraction(state)) < -5.0
        True
    """
    num_delete = check_count("num_delete", num_delete, 1)
    num_steps = check_count("num_steps", num_steps, 1)
    check_metric(metric)
    if not step_size > 0:
        raise ValueError(f"`step_size` must be > 0, got {step_size}.")
    if bound not in (None, "ellipsoid"):
        raise ValueError(f"`bound` must be None or 'ellipsoid', got {bound!r}.")
    if bound is not None and emulator is not None:
        raise ValueError(
            "`bound='ellipsoid'` and an `emulator` do not combine: the emulator saves the "
            "likelihood calls of MCMC moves, while a bounded draw costs one call per "
            "proposal; use one or the other."
        )
    if not enlarge >= 1.0:
        raise ValueError(f"`enlarge` must be >= 1 (a volume factor), got {enlarge}.")
    min_efficiency = min_bound_efficiency(num_steps)
    if max_bound_rounds is None:
        max_bound_rounds = int(np.ceil(4.0 / min_efficiency))
    max_rounds = check_count("max_bound_rounds", max_bound_rounds, 1)
    move = constrained(algorithm, target, num_steps=num_steps, **options)
    target_acceptance = algorithm.target_acceptance

    def init(positions: PyTree, key: PRNGKeyArray | None = None) -> tuple[NestedState, Array]:
        num_live = jax.tree.leaves(positions)[0].shape[0]
        dim = ravel_pytree(jax.tree.map(lambda x: x[0], positions))[0].shape[0]
        check_live_points(num_live, num_delete, dim)
        loglikelihood, num_nonfinite = zero_invalid(jax.vmap(target.loglikelihood_fn)(positions))
        dtype = loglikelihood.dtype
        emulator_state: Any = ()
        if emulator is not None:
            if key is None:
                raise ValueError("with an `emulator`, `init` needs a `key` for its weights.")
            emulator_state = init_emulator(key, emulator, dim, num_live, dtype)
        state = NestedState(
            positions=positions,
            loglikelihood=loglikelihood,
            log_volume=jnp.zeros((), dtype),
            log_z=jnp.full((), -jnp.inf, dtype),
            step_size=jnp.asarray(step_size, dtype),
            emulator=emulator_state,
        )
        return state, num_nonfinite

    def true_moves(
        keys: PRNGKeyArray, starts: PyTree, threshold: Array, params: Any
    ) -> tuple[PyTree, Array, Array, Array]:
        """Constrained moves on the likelihood: positions, log L, acceptance, evaluations."""
        moved, info = jax.vmap(move.step, in_axes=(0, 0, None, None))(
            keys, jax.vmap(move.init)(starts), threshold, params
        )
        # `init` evaluates each start once; the kernel counts its own evaluations.
        num_evals = keys.shape[0] + jnp.sum(info.num_evals, dtype=jnp.int32)
        return moved.mcmc_state.position, moved.loglikelihood, info.acceptance_rate, num_evals

    def emulated_moves(
        keys: PRNGKeyArray,
        redo_keys: PRNGKeyArray,
        starts: PyTree,
        threshold: Array,
        params: Any,
        emulator_state: EmulatorState,
    ) -> tuple[PyTree, Array, Array, Array, Array, Array]:
        """Constrained moves on the emulator, each confirmed by one likelihood call; the
        unconfirmed moved again on the likelihood, one at a time (only they cost calls)."""
        assert emulator is not None
        emulated_fn = emulate(emulator_state.network, emulator)

        def log_terms_fn(position: PyTree) -> tuple[Array, Array]:
            return target.logprior_fn(position), emulated_fn(ravel_pytree(position)[0])

        emulated_move = constrained(algorithm, Target(log_terms_fn), num_steps=num_steps, **options)
        moved, info = jax.vmap(emulated_move.step, in_axes=(0, 0, None, None))(
            keys, jax.vmap(emulated_move.init)(starts), threshold, params
        )
        candidates = moved.mcmc_state.position
        confirmed_loglikelihood = jax.vmap(target.loglikelihood_fn)(candidates)
        is_confirmed = confirmed_loglikelihood > threshold

        def settle(
            lane: tuple[PRNGKeyArray, PyTree, PyTree, Array, Array],
        ) -> tuple[PyTree, Array, Array]:
            key, start, candidate, loglikelihood, confirmed = lane

            def keep(_: None) -> tuple[PyTree, Array, Array]:
                return candidate, loglikelihood, jnp.zeros((), jnp.int32)

            def redo(_: None) -> tuple[PyTree, Array, Array]:
                new, redo_info = move.step(key, move.init(start), threshold, params)
                return (
                    new.mcmc_state.position,
                    new.loglikelihood,
                    (1 + redo_info.num_evals).astype(jnp.int32),
                )

            return jax.lax.cond(confirmed, keep, redo, None)

        positions, loglikelihood, redo_evals = jax.lax.map(
            settle, (redo_keys, starts, candidates, confirmed_loglikelihood, is_confirmed)
        )
        num_evals = keys.shape[0] + jnp.sum(redo_evals, dtype=jnp.int32)
        num_emulator_evals = keys.shape[0] + jnp.sum(info.num_evals, dtype=jnp.int32)
        num_unconfirmed = jnp.sum(~is_confirmed, dtype=jnp.int32)
        return (
            positions, loglikelihood, info.acceptance_rate, num_evals, num_emulator_evals,
            num_unconfirmed,
        )  # fmt: skip

    def bounded_replacements(
        key: PRNGKeyArray,
        propose_fn: Callable[[PRNGKeyArray, int], Array],
        is_bounded: Array,
        threshold: Array,
        keys: PRNGKeyArray,
        starts: PyTree,
        params: Any,
    ) -> tuple[PyTree, Array, Array, Array, Array]:
        """Replacements drawn by rejection from a bounding region when ``is_bounded``;
        the MCMC moves fill the slots it leaves empty: all of them on an unbounded
        iteration, those still empty after ``max_rounds`` on a bounded one (a contour the
        region bounds badly). Each part is traced once and runs only when needed."""
        unravel = ravel_pytree(jax.tree.map(lambda x: x[0], starts))[1]

        def draw() -> BoundDraws:
            return draw_above_contour(
                key,
                propose_fn,
                lambda flat_position: target.log_terms_fn(unravel(flat_position)),
                threshold,
                num_delete,
                max_rounds,
            )

        flat_starts = jax.vmap(lambda p: ravel_pytree(p)[0])(starts)
        zero = jnp.zeros((), jnp.int32)

        def no_draws() -> BoundDraws:
            # Built from known shapes: `eval_shape(draw)` would trace the likelihood again.
            return BoundDraws(
                positions=jnp.zeros_like(flat_starts),
                loglikelihood=jnp.zeros(num_delete, threshold.dtype),
                is_filled=jnp.zeros(num_delete, bool),
                num_evals=zero,
                num_accepted=zero,
                num_nonfinite=zero,
            )

        draws = jax.lax.cond(is_bounded, draw, no_draws)

        def no_moves() -> tuple[PyTree, Array, Array, Array]:
            no_loglikelihood = jnp.zeros(num_delete, threshold.dtype)
            return starts, no_loglikelihood, no_loglikelihood, zero

        moved, moved_loglikelihood, moved_acceptance, moved_evals = jax.lax.cond(
            jnp.all(draws.is_filled),
            no_moves,
            lambda: true_moves(keys, starts, threshold, params),
        )

        def select(drawn: Array, walked: Array) -> Array:
            mask = draws.is_filled.reshape((-1,) + (1,) * (drawn.ndim - 1))
            return jnp.where(mask, drawn, walked)

        positions = jax.tree.map(select, jax.vmap(unravel)(draws.positions), moved)
        loglikelihood = select(draws.loglikelihood, moved_loglikelihood)
        efficiency = draws.num_accepted / jnp.maximum(draws.num_evals, 1)
        acceptance = jnp.where(
            is_bounded, efficiency.astype(moved_acceptance.dtype), moved_acceptance
        )
        return (
            positions, loglikelihood, acceptance, draws.num_evals + moved_evals,
            draws.num_nonfinite,
        )  # fmt: skip

    def step(key: PRNGKeyArray, state: NestedState) -> tuple[NestedState, NestedInfo]:
        key_start, key_move = jax.random.split(key)
        num_live = state.loglikelihood.shape[0]
        dtype = state.loglikelihood.dtype
        order = jnp.argsort(state.loglikelihood)
        dead, survivors = order[:num_delete], order[num_delete:]
        dead_loglikelihood = state.loglikelihood[dead]
        threshold = dead_loglikelihood[-1]

        # Expected shrinkage: removal j of the iteration sees n - j live points.
        log_shrinkages = -1.0 / (num_live - jnp.arange(num_delete, dtype=dtype))
        contributions, log_volume = shrink(dead_loglikelihood, log_shrinkages, state.log_volume)
        log_z = jnp.logaddexp(state.log_z, jax.nn.logsumexp(contributions))

        # Replacements: constrained moves from random survivors, whitened by the live cloud.
        flat = jax.vmap(lambda p: ravel_pytree(p)[0])(state.positions)
        dense = flat.shape[1] <= DENSE_MASS_MATRIX_MAX_DIM if metric is None else metric == "dense"
        uniform = jnp.full(num_live, -jnp.log(num_live), dtype)
        params = algorithm.make_params(state.step_size, population_covariance(flat, uniform, dense))
        starts = survivors[jax.random.randint(key_start, (num_delete,), 0, num_live - num_delete)]
        start_positions = jax.tree.map(lambda x: x[starts], state.positions)
        zero = jnp.zeros((), jnp.int32)
        emulator_state = state.emulator
        is_bounded = jnp.asarray(False)
        num_bound_nonfinite = zero
        if emulator is None:
            keys = jax.random.split(key_move, num_delete)
            if bound is None:
                new_positions, new_loglikelihood, acceptance, num_evals = true_moves(
                    keys, start_positions, threshold, params
                )
            else:
                # Draw from the smaller of the ellipsoid and the whole cube while it is
                # expected to accept often enough: the contour's expected volume (its prior
                # mass: the prior is uniform on the unit cube) over the region's.
                key_ellipsoid, key_bound = jax.random.split(jax.random.fold_in(key, 1))
                ellipsoid = bounding_ellipsoid(key_ellipsoid, flat[survivors], enlarge)
                is_cube = ellipsoid.log_volume >= 0.0
                dim = flat.shape[1]

                def propose_fn(key: PRNGKeyArray, num: int) -> Array:
                    in_cube = jax.random.uniform(key, (num, dim), dtype)
                    return jnp.where(is_cube, in_cube, sample_ellipsoid(key, ellipsoid, num))

                predicted_log_efficiency = log_volume - jnp.minimum(ellipsoid.log_volume, 0.0)
                is_bounded = predicted_log_efficiency >= np.log(min_efficiency)
                (
                    new_positions, new_loglikelihood, acceptance, num_evals, num_bound_nonfinite,
                ) = bounded_replacements(
                    key_bound, propose_fn, is_bounded, threshold, keys, start_positions, params
                )  # fmt: skip
            is_emulated, num_emulator_evals, num_unconfirmed = jnp.asarray(False), zero, zero
            emulator_error = jnp.full((), jnp.nan, dtype)
        else:
            # Learn from the dead points and the live set, then move on the emulator while
            # it is accurate (a scalar condition: only one branch runs).
            settings = emulator
            key_move, key_redo, key_train = jax.random.split(key_move, 3)
            keys = jax.random.split(key_move, num_delete)
            emulator_state = add_dead_points(emulator_state, flat[dead], dead_loglikelihood)
            emulator_state = jax.lax.cond(
                emulator_state.num_iterations % settings.train_every == 0,
                lambda e: train_emulator(key_train, e, settings, flat, state.loglikelihood),
                lambda e: e,
                emulator_state,
            )
            emulator_state = emulator_state._replace(
                num_iterations=emulator_state.num_iterations + 1
            )
            is_emulated = emulator_state.is_ready
            (
                new_positions, new_loglikelihood, acceptance, num_evals, num_emulator_evals,
                num_unconfirmed,
            ) = jax.lax.cond(
                is_emulated,
                lambda: emulated_moves(
                    keys, jax.random.split(key_redo, num_delete), start_positions, threshold,
                    params, emulator_state,
                ),
                lambda: (*true_moves(keys, start_positions, threshold, params), zero, zero),
            )  # fmt: skip
            emulator_error = emulator_state.held_out_error
        new_loglikelihood, num_nonfinite = zero_invalid(new_loglikelihood)
        num_nonfinite = num_nonfinite + num_bound_nonfinite
        positions = jax.tree.map(
            lambda live, new: live.at[dead].set(new), state.positions, new_positions
        )
        loglikelihood = state.loglikelihood.at[dead].set(new_loglikelihood)

        acceptance_rate = jnp.mean(acceptance)
        new_step_size = state.step_size
        if target_acceptance is not None:
            # Bounded iterations ran no MCMC move: nothing to learn the step size from.
            new_step_size = jnp.where(
                is_bounded,
                state.step_size,
                adapt_step_size(state.step_size, acceptance_rate, target_acceptance),
            )
        new_state = NestedState(
            positions=positions,
            loglikelihood=loglikelihood,
            log_volume=log_volume,
            log_z=log_z,
            step_size=new_step_size,
            emulator=emulator_state,
        )
        info = NestedInfo(
            dead_positions=jax.tree.map(lambda x: x[dead], state.positions),
            dead_loglikelihood=dead_loglikelihood,
            log_z=log_z,
            remaining_log_fraction=remaining_log_fraction(new_state),
            acceptance_rate=acceptance_rate,
            is_bounded=is_bounded,
            num_evals=num_evals,
            num_nonfinite=num_nonfinite,
            is_emulated=is_emulated,
            num_emulator_evals=num_emulator_evals,
            num_unconfirmed=num_unconfirmed,
            emulator_error=emulator_error,
        )
        return new_state, info

    return NestedSampler(init, step, num_delete)
