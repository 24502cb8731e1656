"""The No-U-Turn Sampler with multinomial trajectory sampling (Hoffman & Gelman, 2014;
Betancourt, 2017), as Stan implements it.

One transition draws ``p ~ Normal(0, M)`` and doubles a leapfrog trajectory in a random
direction until it turns back on itself, diverges, or reaches ``2^max_num_doublings``
steps. Each doubling builds a new subtree leaf by leaf; the next state is sampled from the
trajectory with weights ``exp(-H)``: uniformly (multinomially) inside a subtree and biased
towards the new subtree when merging (Betancourt, 2017, appendix A).

The U-turn criterion is the generalized one on momenta: a span with momentum sum ``rho`` and
end velocities ``v_-``, ``v_+`` (``v = M^{-1} p``) has turned when ``v_- . rho <= 0`` or
``v_+ . rho <= 0``. Like Stan (since 2.23), every merge of two spans checks the merged span
and also the two spans extended by one point of the other, which catches the U-turns a
pure power-of-two check misses.

The subtree is built iteratively, one leaf (one gradient) per ``advance`` of the
transition's :class:`~probinfer.mcmc.KernelStages`, so a transition's cost is exactly its
number of leapfrog steps and a loop over many chains can start a chain's next transition
as soon as its own trajectory ends. The U-turn checks of every sub-span a leaf completes
are done in one pass from a few checkpoints (indexed as in NumPyro's iterative builder),
written one row per even leaf, rather than by recursion. The momentum's normals and each
leaf's uniform come from a counter-based hash of one seed per transition
(:mod:`probinfer.mcmc._counter_random`), which XLA fuses into the surrounding work.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray

from probinfer._members import tree_where
from probinfer.mcmc._algorithm import DENSE_MASS_MATRIX_MAX_DIM, Algorithm
from probinfer.mcmc._base import (
    GradientState,
    KernelStages,
    LogDensityFn,
    MetricParams,
    PyTree,
    TransitionInfo,
    init_gradient_state,
)
from probinfer.mcmc._counter_random import counter_normal, counter_uniform
from probinfer.mcmc._integrators import IntegratorState, leapfrog
from probinfer.mcmc._metric import Metric, euclidean_metric
from probinfer.model._target import value_and_aux

DEFAULT_MAX_NUM_DOUBLINGS = 10  # Stan's max_depth


class _Checkpoints(NamedTuple):
    """Memory of the subtree under construction: what the U-turn checks of later leaves need.

    An even leaf ``m`` writes row ``popcount(m)`` (odd leaves write the spare last row).
    When an odd leaf ``n`` completes the spans of ``2^j`` leaves (``j = 1..t``, ``t`` the
    number of trailing one bits of ``n``), the span of ``2^j`` starts at the leaf written
    to row ``popcount(n) - j``, still there: every even leaf between has more one bits.
    Each row holds, for its leaf ``m``, the parts of Stan's three checks (the span; its
    left half extended by one leaf; its right half extended by one leaf back) that do not
    depend on the leaf that completes the span, so the checks read ``(rows, dim)`` arrays
    once, with no temporary per row.
    """

    velocity: Array  # (rows + 1, dim): v(m)
    sum_before: Array  # (rows + 1, dim): the subtree's momentum sum before m
    previous_velocity: Array  # (rows + 1, dim): v(m - 1)
    sum_before_less_previous: Array  # (rows + 1, dim): sum_before - p(m - 1)
    velocity_dot_sum: Array  # (rows + 1,): v(m) . sum_before
    previous_dot_sum: Array  # (rows + 1,): v(m - 1) . (sum_before - p(m - 1))
    is_left_turning: Array  # (rows + 1,): the span from the previous row's leaf to m - 1,
    # extended by m, has turned (Stan's check on a merged span's left half)


class _LoopState(NamedTuple):
    # The trajectory built so far (its two ends in time order, left = backward end).
    left: IntegratorState
    right: IntegratorState
    left_velocity: Array
    right_velocity: Array
    momentum_sum: Array
    log_weight: Array
    proposal: IntegratorState
    proposal_energy: Array
    num_doublings: Array
    # The subtree under construction.
    direction: Array
    leaf_index: Array
    leaf: IntegratorState
    leaf_velocity: Array
    subtree_first_momentum: Array
    subtree_momentum_sum: Array
    subtree_log_weight: Array
    subtree_proposal: IntegratorState
    subtree_proposal_energy: Array
    checkpoints: _Checkpoints
    # Bookkeeping.
    is_done: Array
    is_subtree_rejected: Array  # the last subtree was divergent or turned inside
    is_divergent: Array
    sum_acceptance: Array
    num_leaves: Array
    num_nonfinite: Array


def checkpoint_row(leaf_index: Array, num_rows: int) -> Array:
    """The checkpoint row a leaf writes: ``popcount(leaf_index)`` if even, else ``num_rows``."""
    return jnp.where(leaf_index % 2 == 0, jax.lax.population_count(leaf_index), num_rows)


def span_rows(leaf_index: Array, rows: Array) -> tuple[Array, Array]:
    """Masks over ``rows`` for the checks at odd leaf ``n = leaf_index`` (see
    :class:`_Checkpoints`): the rows holding the first leaf of each span of ``2^j`` leaves
    that ``n`` completes (``j = 1..t``, row ``popcount(n) - j``), and among them those
    that are also the first leaf of such a span's right half (``j >= 2``: the extended
    half-span checks). Both are empty for an even leaf.
    """
    ones = jax.lax.population_count(leaf_index)
    num_spans = jax.lax.population_count(leaf_index ^ (leaf_index + 1)) - 1  # trailing ones
    is_span_start = (rows >= ones - num_spans) & (rows < ones)
    return is_span_start, is_span_start & (rows > ones - num_spans)


def _dot(a: Array, b: Array) -> Array:
    # A product and a sum, not `jnp.dot`: under `vmap` over chains a dot becomes a batched
    # `dot_general`, which XLA:CPU runs several times slower than a fused reduction.
    return jnp.sum(a * b, axis=-1)


def _is_turning(velocity_left: Array, velocity_right: Array, momentum_sum: Array) -> Array:
    return (_dot(velocity_left, momentum_sum) <= 0) | (_dot(velocity_right, momentum_sum) <= 0)


class _Transition(NamedTuple):
    """The work of one NUTS transition: the loop state and the draws made up front."""

    loop: _LoopState
    initial_energy: Array
    directions: Array  # (levels,): one direction per doubling
    merge_uniforms: Array  # (levels,): one merge uniform per doubling
    seed: Array  # (2,) uint32: keys the transition's counter-based draws


class _Context(NamedTuple):
    """What every stage of a transition derives from its state and parameters."""

    flat: Array
    unravel: Callable[[Array], PyTree]
    metric: Metric
    integrate: Callable[[IntegratorState, Array], IntegratorState]


def _context(state: GradientState, logdensity_fn: LogDensityFn, params: MetricParams) -> _Context:
    flat, unravel = ravel_pytree(state.position)
    metric = euclidean_metric(params.inverse_mass_matrix)
    flat_fn = value_and_aux(logdensity_fn)
    integrate = leapfrog(lambda x: flat_fn(unravel(x)), metric.velocity)
    return _Context(flat, unravel, metric, integrate)


def _energy(point: IntegratorState, velocity: Array) -> Array:
    value = -point.logdensity + 0.5 * _dot(point.momentum, velocity)
    return jnp.where(jnp.isnan(value), jnp.inf, value)


def build_stages(
    max_num_doublings: int = DEFAULT_MAX_NUM_DOUBLINGS, divergence_threshold: float = 1000.0
) -> KernelStages:
    """Build the NUTS transition as :class:`~probinfer.mcmc.KernelStages` (one leaf each).

    Args:
        max_num_doublings: maximum tree depth; a transition takes at most
            ``2^max_num_doublings - 1`` leapfrog steps.
        divergence_threshold: energy error ``H - H_0`` above which the trajectory is
            flagged divergent and the subtree being built is discarded.

    Returns:
        The stages; their raw kernel ``(key, state, logdensity_fn, params)`` takes
        :class:`~probinfer.mcmc.MetricParams`.

    Raises:
        ValueError: if ``max_num_doublings`` is not a positive integer.
    """
    if not isinstance(max_num_doublings, int) or max_num_doublings < 1:
        raise ValueError(
            f"`max_num_doublings` must be a positive int, got {max_num_doublings!r}; "
            "Stan's default is 10."
        )
    num_levels = max_num_doublings + 1
    # A subtree has at most 2^(max_num_doublings - 1) leaves, so an even leaf index has at
    # most max_num_doublings - 2 one bits; one more row is the odd leaves' spare.
    num_rows = max(max_num_doublings - 1, 1)
    rows = jnp.arange(num_rows + 1)

    def begin(
        key: PRNGKeyArray, state: GradientState, logdensity_fn: LogDensityFn, params: MetricParams
    ) -> _Transition:
        context = _context(state, logdensity_fn, params)
        flat = context.flat
        grad, _ = ravel_pytree(state.logdensity_grad)
        dtype = flat.dtype
        # All of the transition's randomness by counter from one seed (one Threefry call
        # of `jax.random`, whose rolled loop costs more than a small model's leapfrog
        # step): the momentum's normals, a direction and a merge uniform per doubling,
        # then one uniform per leaf (drawn in `advance`). The logarithms are taken where
        # the uniforms are used: XLA:CPU rounds a logarithm fused into this array's loop
        # differently from one in a separate loop, and a program on one device and one on
        # several must agree. (The normals' inverse error function agrees between them in
        # optimized programs, as users compile; with most XLA optimizations off it can
        # round one ulp apart: tests/test_driver.py.)
        seed = jax.random.bits(key, (2,), jnp.uint32)
        momentum = context.metric.momentum_from_noise(
            counter_normal(seed, jnp.arange(flat.shape[0]), dtype)
        )
        uniforms = counter_uniform(seed, jnp.arange(2 * num_levels), dtype)
        initial = IntegratorState(flat, momentum, state.logdensity, grad, state.aux)
        initial_velocity = context.metric.velocity(momentum)
        initial_energy = _energy(initial, initial_velocity)
        zeros_rows = jnp.zeros((num_rows + 1, flat.shape[0]), dtype)
        zeros_row_scalars = jnp.zeros((num_rows + 1,), dtype)
        zero = jnp.zeros((), dtype)
        loop = _LoopState(
            left=initial,
            right=initial,
            left_velocity=initial_velocity,
            right_velocity=initial_velocity,
            momentum_sum=momentum,
            log_weight=zero,
            proposal=initial,
            proposal_energy=initial_energy,
            num_doublings=jnp.asarray(0, jnp.int32),
            direction=jnp.asarray(1, jnp.int32),
            leaf_index=jnp.asarray(0, jnp.int32),
            leaf=initial,
            leaf_velocity=initial_velocity,
            subtree_first_momentum=momentum,
            subtree_momentum_sum=jnp.zeros_like(flat),
            subtree_log_weight=-jnp.inf * jnp.ones((), dtype),
            subtree_proposal=initial,
            subtree_proposal_energy=initial_energy,
            checkpoints=_Checkpoints(
                velocity=zeros_rows,
                sum_before=zeros_rows,
                previous_velocity=zeros_rows,
                sum_before_less_previous=zeros_rows,
                velocity_dot_sum=zeros_row_scalars,
                previous_dot_sum=zeros_row_scalars,
                is_left_turning=jnp.zeros((num_rows + 1,), bool),
            ),
            is_done=jnp.asarray(False),
            is_subtree_rejected=jnp.asarray(False),
            is_divergent=jnp.asarray(False),
            sum_acceptance=zero,
            num_leaves=jnp.asarray(0, jnp.int32),
            num_nonfinite=jnp.asarray(0, jnp.int32),
        )
        return _Transition(
            loop=loop,
            initial_energy=initial_energy,
            directions=jnp.where(uniforms[:num_levels] < 0.5, 1, -1).astype(jnp.int32),
            merge_uniforms=uniforms[num_levels:],
            seed=seed,
        )

    def write_checkpoint(
        ckpt: _Checkpoints,
        n: Array,
        velocity: Array,
        sum_before: Array,
        previous_velocity: Array,
        previous_momentum: Array,
        momentum: Array,
    ) -> _Checkpoints:
        """Leaf ``n``'s row (the spare row for an odd leaf)."""
        row = checkpoint_row(n, num_rows)
        below = jnp.maximum(row - 1, 0)  # the span's previous start (row - 1)
        # Stan's check on the left half of a span that starts at the previous row's leaf
        # and ends just before n, extended by n.
        is_left_turning = (row >= 1) & _is_turning(
            ckpt.velocity[below], velocity, sum_before - ckpt.sum_before[below] + momentum
        )
        less_previous = sum_before - previous_momentum
        # A select over the rows, not `.at[row].set`: under `vmap` over chains the latter
        # is a scatter, which costs XLA:CPU more than rewriting a few small rows.
        is_row = rows == row

        def put(rows_array: Array, value: Array) -> Array:
            return jnp.where(is_row.reshape(is_row.shape + (1,) * value.ndim), value, rows_array)

        return _Checkpoints(
            put(ckpt.velocity, velocity),
            put(ckpt.sum_before, sum_before),
            put(ckpt.previous_velocity, previous_velocity),
            put(ckpt.sum_before_less_previous, less_previous),
            put(ckpt.velocity_dot_sum, _dot(velocity, sum_before)),
            put(ckpt.previous_dot_sum, _dot(previous_velocity, less_previous)),
            put(ckpt.is_left_turning, is_left_turning),
        )

    def subtree_turning(
        ckpt: _Checkpoints, n: Array, velocity: Array, sum_including: Array
    ) -> Array:
        # Every span of 2^j leaves (j >= 1) that ends at odd leaf n, checked on its own
        # and, as Stan does, with each half extended by the other's nearest leaf.
        is_span_start, is_right_half_start = span_rows(n, rows)
        velocity_dot_sum = _dot(velocity, sum_including)
        sum_row, velocity_row = sum_including[None], velocity[None]
        # v . (S - s) as v . S - v . s, so that each row array is read once; the rounding
        # is of the order of forming S - s first.
        is_span_turning = (_dot(ckpt.velocity, sum_row) - ckpt.velocity_dot_sum <= 0) | (
            velocity_dot_sum - _dot(ckpt.sum_before, velocity_row) <= 0
        )
        is_right_turning = (_dot(ckpt.previous_velocity, sum_row) - ckpt.previous_dot_sum <= 0) | (
            velocity_dot_sum - _dot(ckpt.sum_before_less_previous, velocity_row) <= 0
        )
        return jnp.any(is_span_start & is_span_turning) | jnp.any(
            is_right_half_start & (ckpt.is_left_turning | is_right_turning)
        )

    def merge(
        transition: _Transition,
        leaf: IntegratorState,
        velocity: Array,
        subtree_sum: Array,
        subtree_log_weight: Array,
        subtree_proposal: IntegratorState,
        subtree_proposal_energy: Array,
        ckpt: _Checkpoints,
        first_momentum: Array,
        direction: Array,
    ) -> tuple:
        loop = transition.loop
        forward = direction > 0
        first_velocity = ckpt.velocity[0]  # row 0 is the subtree's first leaf
        old_left_velocity = loop.left_velocity
        old_right_velocity = loop.right_velocity
        # Time order: the backward part ("bck") then the forward part ("fwd").
        bck_left_v = jnp.where(forward, old_left_velocity, velocity)
        bck_right_v = jnp.where(forward, old_right_velocity, first_velocity)
        bck_right_p = jnp.where(forward, loop.right.momentum, first_momentum)
        fwd_left_v = jnp.where(forward, first_velocity, old_left_velocity)
        fwd_left_p = jnp.where(forward, first_momentum, loop.left.momentum)
        fwd_right_v = jnp.where(forward, velocity, old_right_velocity)
        sum_bck = jnp.where(forward, loop.momentum_sum, subtree_sum)
        sum_fwd = jnp.where(forward, subtree_sum, loop.momentum_sum)
        merged_sum = loop.momentum_sum + subtree_sum
        is_trajectory_turning = (
            _is_turning(bck_left_v, fwd_right_v, merged_sum)
            | _is_turning(bck_left_v, fwd_left_v, sum_bck + fwd_left_p)
            | _is_turning(bck_right_v, fwd_right_v, sum_fwd + bck_right_p)
        )
        # Biased progressive sampling: prefer the new subtree (Betancourt, 2017).
        log_uniform = jnp.log(transition.merge_uniforms[loop.num_doublings])
        take = log_uniform < subtree_log_weight - loop.log_weight
        return (
            tree_where(forward, loop.left, leaf),
            tree_where(forward, leaf, loop.right),
            jnp.where(forward, loop.left_velocity, velocity),
            jnp.where(forward, velocity, loop.right_velocity),
            merged_sum,
            jnp.logaddexp(loop.log_weight, subtree_log_weight),
            tree_where(take, subtree_proposal, loop.proposal),
            jnp.where(take, subtree_proposal_energy, loop.proposal_energy),
            is_trajectory_turning,
        )

    def keep(transition: _Transition, *_: object) -> tuple:
        loop = transition.loop
        return (
            loop.left,
            loop.right,
            loop.left_velocity,
            loop.right_velocity,
            loop.momentum_sum,
            loop.log_weight,
            loop.proposal,
            loop.proposal_energy,
            jnp.asarray(False),
        )

    def advance(
        transition: _Transition,
        state: GradientState,
        logdensity_fn: LogDensityFn,
        params: MetricParams,
    ) -> _Transition:
        context = _context(state, logdensity_fn, params)
        loop = transition.loop
        dtype = context.flat.dtype
        n = loop.leaf_index
        is_new_subtree = n == 0
        direction = jnp.where(
            is_new_subtree, transition.directions[loop.num_doublings], loop.direction
        )
        start = jax.lax.cond(
            is_new_subtree,
            lambda: tree_where(direction > 0, loop.right, loop.left),
            lambda: loop.leaf,
        )
        leaf = context.integrate(start, direction * params.step_size)
        velocity = context.metric.velocity(leaf.momentum)
        leaf_energy = _energy(leaf, velocity)
        delta = leaf_energy - transition.initial_energy
        is_nonfinite = ~jnp.isfinite(delta)
        is_divergent = is_nonfinite | (delta > divergence_threshold)
        leaf_log_weight = -delta

        # Uniform progressive sampling inside the subtree.
        previous_log_weight = jnp.where(is_new_subtree, -jnp.inf, loop.subtree_log_weight)
        subtree_log_weight = jnp.logaddexp(previous_log_weight, leaf_log_weight)
        uniform = counter_uniform(transition.seed, 2 * num_levels + loop.num_leaves, dtype)
        take_leaf = jnp.log(uniform) < (leaf_log_weight - subtree_log_weight)
        take_leaf = take_leaf | is_new_subtree
        subtree_proposal = tree_where(take_leaf, leaf, loop.subtree_proposal)
        subtree_proposal_energy = jnp.where(take_leaf, leaf_energy, loop.subtree_proposal_energy)

        sum_before = jnp.where(
            is_new_subtree, jnp.zeros_like(context.flat), loop.subtree_momentum_sum
        )
        sum_including = sum_before + leaf.momentum
        ckpt = write_checkpoint(
            loop.checkpoints,
            n,
            velocity,
            sum_before,
            loop.leaf_velocity,
            loop.leaf.momentum,
            leaf.momentum,
        )
        # Spans of two or more leaves end only at odd leaf indices.
        is_subtree_turning = jax.lax.cond(
            n % 2 == 1,
            subtree_turning,
            lambda *_: jnp.asarray(False),
            ckpt,
            n,
            velocity,
            sum_including,
        )
        first_momentum = jnp.where(is_new_subtree, leaf.momentum, loop.subtree_first_momentum)

        is_subtree_invalid = is_subtree_turning | is_divergent
        is_subtree_complete = n + 1 == 2**loop.num_doublings
        is_subtree_over = is_subtree_invalid | is_subtree_complete
        merges = is_subtree_complete & ~is_subtree_invalid
        (
            left,
            right,
            left_velocity,
            right_velocity,
            momentum_sum,
            log_weight,
            proposal,
            proposal_energy,
            is_turning,
        ) = jax.lax.cond(
            merges,
            merge,
            keep,
            transition,
            leaf,
            velocity,
            sum_including,
            subtree_log_weight,
            subtree_proposal,
            subtree_proposal_energy,
            ckpt,
            first_momentum,
            direction,
        )
        num_doublings = jnp.where(is_subtree_over, loop.num_doublings + 1, loop.num_doublings)
        is_done = (is_subtree_invalid | is_turning) | (num_doublings >= max_num_doublings)

        loop = _LoopState(
            left=left,
            right=right,
            left_velocity=left_velocity,
            right_velocity=right_velocity,
            momentum_sum=momentum_sum,
            log_weight=log_weight,
            proposal=proposal,
            proposal_energy=proposal_energy,
            num_doublings=num_doublings,
            direction=direction,
            leaf_index=jnp.where(is_subtree_over, 0, n + 1),
            leaf=leaf,
            leaf_velocity=velocity,
            subtree_first_momentum=first_momentum,
            subtree_momentum_sum=sum_including,
            subtree_log_weight=subtree_log_weight,
            subtree_proposal=subtree_proposal,
            subtree_proposal_energy=subtree_proposal_energy,
            checkpoints=ckpt,
            is_done=is_done,
            is_subtree_rejected=is_subtree_invalid,
            is_divergent=loop.is_divergent | is_divergent,
            sum_acceptance=loop.sum_acceptance
            + jnp.where(is_nonfinite, 0.0, jnp.minimum(1.0, jnp.exp(-delta))),
            num_leaves=loop.num_leaves + 1,
            num_nonfinite=loop.num_nonfinite + is_nonfinite.astype(jnp.int32),
        )
        return transition._replace(loop=loop)

    def end(
        transition: _Transition,
        state: GradientState,
        logdensity_fn: LogDensityFn,
        params: MetricParams,
    ) -> tuple[GradientState, TransitionInfo]:
        del logdensity_fn, params
        loop = transition.loop
        flat, unravel = ravel_pytree(state.position)
        proposal = loop.proposal
        new_state = GradientState(
            unravel(proposal.position),
            proposal.logdensity,
            unravel(proposal.logdensity_grad),
            proposal.aux,
        )
        info = TransitionInfo(
            acceptance_rate=loop.sum_acceptance / loop.num_leaves,
            is_accepted=jnp.any(proposal.position != flat),
            is_divergent=loop.is_divergent,
            num_grad_evals=loop.num_leaves,
            num_nonfinite=loop.num_nonfinite,
            # Stan's treedepth__: the doublings kept; a rejected last subtree is not one.
            tree_depth=loop.num_doublings - loop.is_subtree_rejected.astype(jnp.int32),
            energy=loop.proposal_energy,
        )
        return new_state, info

    return KernelStages(begin, advance, lambda transition: transition.loop.is_done, end)


nuts = Algorithm(
    "nuts",
    init_gradient_state,
    None,
    MetricParams,
    build_stages=build_stages,
    build_options=("max_num_doublings", "divergence_threshold"),
    target_acceptance=0.8,
    uses_gradient=True,
    dense_metric_max_dim=DENSE_MASS_MATRIX_MAX_DIM,
)
"""The No-U-Turn Sampler (multinomial, with Stan's generalized U-turn checks across
subtrees). ``nuts(logdensity_fn, step_size, inverse_mass_matrix=None,
max_num_doublings=10, divergence_threshold=1000)`` returns a ``Kernel``."""
