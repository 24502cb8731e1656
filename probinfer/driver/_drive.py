"""`drive`: run any step function in compiled chunks, with progress, checkpoints and a status.

A *step function* ``step_fn(key, state, step_index, shared) -> (state, record)`` advances a
loop state by one step. :func:`drive` runs it in chunks of up to ``chunk_size`` steps, each
chunk one compiled program (a ``while_loop``: a short last chunk, or one that stops early
because ``is_done_fn`` says so, reuses the same program). Between chunks it fetches the
chunk's records to the host, moves the progress bar and writes a checkpoint. One chunk is
kept in flight: the next is dispatched before the previous one's records are fetched, so
host work overlaps device work (except for groups of members run from host threads, see
:mod:`probinfer.driver._threads`: their chunk returns when it has run, and is reported at
once). A drive of a fixed step count in one process, with no
progress bar, checkpoint or ``after_chunk_fn``, dispatches every chunk at once (each as
long as its buffer) and fetches the records in one transfer at the end.

The driver owns the loop key: step ``i`` gets ``fold_in(key, i)`` (with ``member_map``,
member ``m`` gets ``fold_in(split(key, M)[m], i)``), so a resumed run continues the same
stream and gives exactly the results of an uninterrupted one.

Two shapes of loop:

- a *population step* (``member_map=None``): ``step_fn`` sees the whole population (SMC
  particles, nested-sampling live points) and may reduce over it (normalise weights, find
  the worst live point). With a ``mesh`` the population axis is placed with
  ``NamedSharding(mesh, P("population"))`` and ``jit`` partitions the step, so the same
  reductions run unchanged on one device or many;
- *independent members* (MCMC chains, ``member_map`` one of :data:`MEMBER_MAPS`):
  ``step_fn`` sees one member and the whole chunk loop is mapped over members, so
  ``sequential`` members each pay only for their own trajectories.

A step whose cost differs between members (a NUTS transition's trajectory) can be given as
a :class:`StagedStep`: ``begin``, then ``advance`` until ``is_done``, then ``finish``. With
``interleave=True`` the chunk is one flat loop of ``advance`` calls in which each member
finishes its step and begins its next as soon as its own work is done, so vectorized
members do not wait for the slowest one at every step; the results are those of the
plain step.

``step_fn`` and ``is_done_fn`` key the compiled-program cache: pass module-level functions
or hashable callables (a ``NamedTuple`` with ``__call__``), and pass data through
``shared`` (values, not closures), so that a second run with new data reuses the program.
"""

from __future__ import annotations

import abc
import enum
import math
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.experimental import multihost_utils
from jaxtyping import Array, PRNGKeyArray

from probinfer._members import (
    MEMBER_MAPS,
    any_member,
    map_members,
    members_where,
    tree_where,
)
from probinfer._validation import check_count
from probinfer.checkpoint import (
    DriveProgress,
    combine_fingerprints,
    fingerprint,
    load_progress,
    load_records,
    save_progress,
    save_records,
)
from probinfer.driver._compile import CompileWatch, call_compiled, compiled_program, count_trace
from probinfer.driver._progress import ProgressReporter
from probinfer.driver._threads import groups_for, run_in_groups

PyTree = Any
StepFn = Callable[[PRNGKeyArray, PyTree, Array, PyTree], tuple[PyTree, PyTree]]
POPULATION_AXIS = "population"
# Loop carries: (step count, state, [work,] records buffers, group record, done).
_StagedCarry = tuple[Array, PyTree, PyTree, PyTree, PyTree, Array]
_ChunkCarry = tuple[Array, PyTree, PyTree, PyTree, Array]
# A drive that shows nothing between chunks keeps its records on the device up to this
# many bytes before fetching them (a bound on the device memory they take).
DEVICE_RECORDS_BYTES = 2**26


class DriveStatus(enum.Enum):
    """How a drive ended; each member carries a readable message."""

    COMPLETED = "the run reached its step count or its stop condition"
    STEP_LIMIT = (
        "the stop condition was not met within `max_steps` steps; raise `max_steps` or check "
        "why the run does not converge"
    )

    @property
    def message(self) -> str:
        """What happened and, where needed, what to do."""
        return self.value


class DriveResult(NamedTuple):
    """What a drive produced.

    Attributes:
        state: the final loop state (on the device).
        records: the steps' records as host arrays, the step axis first (second, after
            the member axis, with ``member_map``); the steps of an earlier part resumed
            from this driver's checkpoint are included, steps before ``first_step`` not.
        num_steps: steps done in all: the index after the last step.
        status: how it ended.
        compile_seconds: time spent compiling in this call.
        run_seconds: wall time of the steps, compilation excluded (earlier parts of a
            resumed run included).
        num_groups: the groups of members run at once from host threads (1: one
            program); a drive that continues this one's members (sampling after warm-up)
            passes it as ``continued_groups``.
    """

    state: PyTree
    records: PyTree
    num_steps: int
    status: DriveStatus
    compile_seconds: float
    run_seconds: float
    num_groups: int = 1


class StagedStep(abc.ABC):
    """A step function in stages: ``begin``, ``advance`` until ``is_done``, ``finish``.

    Calling it runs one whole step (``begin``, a ``while_loop`` of ``advance``,
    ``finish``), so it is a step function like any other; :func:`drive` instead runs a
    chunk of them as one flat loop of ``advance`` calls, so that independent members each
    start their next step as soon as their own is finished. ``begin`` must return work
    that needs at least one ``advance``. Subclasses must be hashable (a frozen
    dataclass): the step keys the compiled programs.
    """

    @abc.abstractmethod
    def begin(self, key: PRNGKeyArray, state: PyTree, step_index: Array, shared: PyTree) -> PyTree:
        """The work of step ``step_index`` before its first ``advance``."""

    @abc.abstractmethod
    def advance(self, work: PyTree, state: PyTree, shared: PyTree) -> PyTree:
        """One unit of the step's work (e.g. one leapfrog step); ``state`` is the step's
        starting state. In a flat loop it may also be called on work that is done, or
        of a member that has no steps left in the chunk, as often as other members need
        iterations; those results are discarded, so it must only not fail on them."""

    @abc.abstractmethod
    def is_done(self, work: PyTree) -> Array:
        """Whether the step's work is complete."""

    @abc.abstractmethod
    def finish(
        self, key: PRNGKeyArray, state: PyTree, work: PyTree, step_index: Array, shared: PyTree
    ) -> tuple[PyTree, PyTree]:
        """``(new state, record)`` from the completed work (``key`` as ``begin``'s)."""

    def __call__(
        self, key: PRNGKeyArray, state: PyTree, step_index: Array, shared: PyTree
    ) -> tuple[PyTree, PyTree]:
        work = self.begin(key, state, step_index, shared)
        work = jax.lax.while_loop(
            lambda w: ~self.is_done(w), lambda w: self.advance(w, state, shared), work
        )
        return self.finish(key, state, work, step_index, shared)


class _RowPacking:
    """A record pytree as one flat row per dtype, so a step writes a few rows, not a leaf each.

    Under ``vmap`` with a per-member row index every leaf's write is a scatter, whose fixed
    cost on CPU exceeds the copy of a small row: one scatter per dtype instead.
    """

    def __init__(self, record_like: PyTree) -> None:
        leaves, self.treedef = jax.tree.flatten(record_like)
        self.shapes = [tuple(leaf.shape) for leaf in leaves]
        self.dtypes = sorted({jnp.dtype(leaf.dtype).name for leaf in leaves})
        self.groups = {
            name: [k for k, leaf in enumerate(leaves) if jnp.dtype(leaf.dtype).name == name]
            for name in self.dtypes
        }

    def buffers(self, num_rows: int) -> dict[str, Array]:
        """Empty ``(num_rows, row length)`` buffers, one per dtype."""
        return {
            name: jnp.zeros(
                (num_rows, sum(math.prod(self.shapes[k]) for k in self.groups[name])), name
            )
            for name in self.dtypes
        }

    def pack(self, record: PyTree) -> dict[str, Array]:
        """One step's record as one row per dtype."""
        leaves = jax.tree.leaves(record)
        return {
            name: jnp.concatenate([jnp.ravel(leaves[k]) for k in self.groups[name]])
            for name in self.dtypes
        }

    def unpack(self, buffers: dict[str, Array]) -> PyTree:
        """The record pytree with a leading row axis from packed buffers."""
        leaves: list[Array | None] = [None] * len(self.shapes)
        for name in self.dtypes:
            column = 0
            for k in self.groups[name]:
                size = math.prod(self.shapes[k])
                rows = buffers[name][:, column : column + size]
                leaves[k] = rows.reshape((rows.shape[0], *self.shapes[k]))
                column += size
        return jax.tree.unflatten(self.treedef, leaves)


def _run_staged(
    step_fn: StagedStep,
    is_done: Callable[[PyTree], Array],
    state: PyTree,
    key: PRNGKeyArray,
    shared: PyTree,
    start: Array,
    limit: Array,
    record_like: PyTree,
    num_rows: int,
    thin: Array,
    combine_fn: Callable[[PyTree, PyTree], PyTree] | None,
) -> tuple[PyTree, PyTree, Array, Array]:
    """Up to ``limit`` steps of a :class:`StagedStep` as one loop over ``advance`` calls.

    A member whose step is done finishes it, records it and begins its next step within
    the same iteration; the finishing is a branch on :func:`any_member`, so vectorized
    members pay for it only on the iterations where one of them finishes. ``begin`` must
    return work that needs at least one ``advance`` (a step with no work would be
    advanced once). Records are thinned as in :func:`_run_chunk`.
    """
    packing = _RowPacking(record_like)

    def begin(index: Array, state: PyTree) -> PyTree:
        return step_fn.begin(jax.random.fold_in(key, index), state, index, shared)

    def is_active(i: Array, done: Array) -> Array:
        return (i < limit) & ~done

    def keep_going(carry: _StagedCarry) -> Array:
        i, *_, done = carry
        # The same for every member: under `vmap` a per-member predicate would make the
        # loop select each member's whole carry, records buffers included, on every
        # iteration (a copy of the buffers per leapfrog step); members that are through
        # instead wait in the body, masked.
        return any_member(is_active(i, done))

    def body(carry: _StagedCarry) -> _StagedCarry:
        i, state, work, buffers, group, done = carry
        # A member that is through is still advanced (its work is dropped at the end; a
        # select to keep it as it was cost 18-28% per iteration on eight schools) but
        # never finishes: its state, count and records stay as they are.
        work = step_fn.advance(work, state, shared)
        is_finishing = step_fn.is_done(work) & is_active(i, done)
        index = start + i

        def complete() -> tuple:
            # Every member computes; only the finishing ones keep the result.
            key_step = jax.random.fold_in(key, index)
            # Rare work inside (`member_cond`: a window's new metric) runs only when a
            # finishing member needs it, not for a member in the middle of its step.
            with members_where(is_finishing):
                new_state, record = step_fn.finish(key_step, state, work, index, shared)
                new_work = begin(index + 1, new_state)
            new_group = _thinned_record(group, record, index, thin, combine_fn)
            return (
                tree_where(is_finishing, new_state, state),
                tree_where(is_finishing, new_work, work),
                tree_where(is_finishing, new_group, group),
                jnp.where(is_finishing, is_done(new_state), done),
                packing.pack(new_group),
            )

        def skip() -> tuple:
            return state, work, group, done, empty_row  # the row is not kept

        state, work, group, done, row = jax.lax.cond(any_member(is_finishing), complete, skip)
        # The row is written outside the branch: a branch that may leave the buffers
        # unchanged makes XLA copy them whole on every iteration that skips it.
        buffers = _keep_record(buffers, row, i, index, thin, is_finishing)
        return i + is_finishing.astype(i.dtype), state, work, buffers, group, done

    buffers = packing.buffers(num_rows)
    group = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), record_like)
    empty_row = packing.pack(group)
    carry = (
        jnp.asarray(0, start.dtype), state, begin(start, state), buffers, group, is_done(state)
    )  # fmt: skip
    count, state, _, buffers, _, done = jax.lax.while_loop(keep_going, body, carry)
    return state, packing.unpack(buffers), start + count, done


def _thinned_record(
    group: PyTree,
    record: PyTree,
    index: Array,
    thin: Array,
    combine_fn: Callable[[PyTree, PyTree], PyTree] | None,
) -> PyTree:
    """The record of step ``index``'s group of ``thin`` steps so far.

    ``group`` is the record of the group's earlier steps; a group's first step starts it
    afresh. Without ``combine_fn`` the newest record stands for the group.
    """
    if combine_fn is None:
        return record
    return tree_where(index % thin == 0, record, combine_fn(group, record))


def _keep_record(
    buffers: PyTree,
    record: PyTree,
    i: Array,
    index: Array,
    thin: Array,
    active: Array | bool = True,
) -> PyTree:
    """``buffers`` with ``record`` in row ``i // thin`` when step ``index`` (the chunk's
    ``i``-th) ends its group of ``thin`` steps and ``active`` holds."""
    row, is_kept = i // thin, active & ((index + 1) % thin == 0)
    return jax.tree.map(lambda b, r: b.at[row].set(jnp.where(is_kept, r, b[row])), buffers, record)


class _HostRecords:
    """A drive's records on the host, chunk by chunk.

    With a known step count they are copied into arrays allocated for the whole drive at
    the first chunk, so the host holds one copy (no concatenation at the end); otherwise
    the chunks are concatenated at the end.
    """

    def __init__(self, step_axis: int, num_rows: int | None) -> None:
        self.step_axis = step_axis
        self.num_rows = num_rows
        self.chunks: list[PyTree] = []
        self.arrays: PyTree = None
        self.filled = 0

    def add(self, records: PyTree, count: int) -> PyTree:
        """Keep the first ``count`` steps of a chunk's host records; returns them."""
        axis = self.step_axis

        def first(a: np.ndarray) -> np.ndarray:
            return a[(slice(None),) * axis + (slice(0, count),)]

        kept = jax.tree.map(first, records)
        if self.num_rows is None:
            self.chunks.append(kept)
            return kept
        if self.arrays is None:
            self.arrays = jax.tree.map(
                lambda a: np.empty(
                    a.shape[:axis] + (self.num_rows,) + a.shape[axis + 1 :], a.dtype
                ),
                kept,
            )
        rows = (slice(None),) * axis + (slice(self.filled, self.filled + count),)
        for array, chunk in zip(jax.tree.leaves(self.arrays), jax.tree.leaves(kept), strict=True):
            array[rows] = chunk
        self.filled += count
        return kept

    def result(self, records_like_fn: Callable[[], PyTree]) -> PyTree:
        """All kept steps (``records_like_fn()``: a chunk's shapes, for an empty drive)."""
        axis = self.step_axis
        if self.arrays is not None:
            return jax.tree.map(
                lambda a: a[(slice(None),) * axis + (slice(0, self.filled),)], self.arrays
            )
        if self.chunks:
            return jax.tree.map(lambda *chunks: np.concatenate(chunks, axis=axis), *self.chunks)
        return jax.tree.map(
            lambda s: np.zeros(s.shape[:axis] + (0,) + s.shape[axis + 1 :], s.dtype),
            records_like_fn(),
        )


class _ChunkProgram(NamedTuple):
    """The static part of a chunk program (hashable: it keys the compiled programs)."""

    step_fn: StepFn
    is_done_fn: Callable[[PyTree], Array] | None
    chunk_rows: int  # the records buffer's rows: the most records a chunk can keep
    member_map: str | None
    interleave: bool  # a StagedStep as one flat loop of `advance` calls
    combine_fn: Callable[[PyTree, PyTree], PyTree] | None  # a thinned group's record


def _run_chunk(
    program: _ChunkProgram, state: PyTree, key: PRNGKeyArray, shared: PyTree, start: Array,
    total: Array, chunk_size: Array, thin: Array,
) -> tuple[PyTree, PyTree, Array, Array]:  # fmt: skip
    """Up to ``chunk_size`` (at most ``chunk_rows * thin``) steps from ``start``, never past
    ``total``, keeping the record of every ``thin``-th step.

    ``chunk_size`` and ``thin`` are runtime values, so runs whose chunks differ in length
    share the program. ``start`` is a multiple of ``thin``: step ``start + i`` writes row
    ``i // thin``, kept when it ends its group (``(start + i + 1) % thin == 0``), with the
    record ``program.combine_fn`` makes of the group's steps. Returns the state, the records
    buffer (``chunk_rows`` rows, the first ``(next_start - start) // thin`` of them filled),
    the next step index, and whether ``is_done_fn`` holds.
    """
    count_trace("chunk")
    limit = jnp.minimum(jnp.minimum(chunk_size, program.chunk_rows * thin), total - start)

    def run(state: PyTree, key: PRNGKeyArray) -> tuple[PyTree, PyTree, Array, Array]:
        def step(index: Array, state: PyTree) -> tuple[PyTree, PyTree]:
            return program.step_fn(jax.random.fold_in(key, index), state, index, shared)

        record_shapes = _check_step_output(jax.eval_shape(step, start, state), state)

        def is_done(state: PyTree) -> Array:
            if program.is_done_fn is None:
                return jnp.asarray(False)
            return jnp.asarray(program.is_done_fn(state), bool)

        if program.interleave:
            assert isinstance(program.step_fn, StagedStep)  # checked by `drive`
            return _run_staged(
                program.step_fn,
                is_done,
                state,
                key,
                shared,
                start,
                limit,
                record_shapes,
                program.chunk_rows,
                thin,
                program.combine_fn,
            )

        buffers = jax.tree.map(
            lambda s: jnp.zeros((program.chunk_rows, *s.shape), s.dtype), record_shapes
        )
        group = jax.tree.map(lambda s: jnp.zeros(s.shape, s.dtype), record_shapes)

        def keep_going(carry: _ChunkCarry) -> Array:
            i, *_, done = carry
            return (i < limit) & ~done

        def body(carry: _ChunkCarry) -> _ChunkCarry:
            i, state, buffers, group, _ = carry
            index = start + i
            state, record = step(index, state)
            group = _thinned_record(group, record, index, thin, program.combine_fn)
            buffers = _keep_record(buffers, group, i, index, thin)
            return i + 1, state, buffers, group, is_done(state)

        carry = (jnp.asarray(0, start.dtype), state, buffers, group, is_done(state))
        count, state, buffers, _, done = jax.lax.while_loop(keep_going, body, carry)
        return state, buffers, start + count, done

    if program.member_map is None:
        return run(state, key)
    state, buffers, next_start, done = map_members(run, program.member_map)(state, key)
    return state, buffers, next_start[0], done[0]


def _dispatch(program: _ChunkProgram, watch: CompileWatch, num_groups: int, *args: Any) -> Any:
    """Run one chunk, its members split into ``num_groups`` groups run at once from host
    threads when there are several (the seam tests use to interrupt a run)."""
    if num_groups == 1:
        return call_compiled(_run_chunk, (program,), args, watch)

    def group_program(group_args: tuple[Any, ...]) -> Any:
        return compiled_program(_run_chunk, (program,), group_args, watch)

    return run_in_groups(group_program, watch, num_groups, *args)


def population_sharding(mesh: jax.sharding.Mesh, tree: PyTree, population_size: int) -> PyTree:
    """Shardings that split the population axis over ``mesh`` and replicate the rest.

    Args:
        mesh: a mesh with an axis named ``"population"``.
        tree: a pytree of arrays.
        population_size: leaves whose leading axis has this length are split.

    Returns:
        A pytree of ``NamedSharding`` like ``tree``.

    Raises:
        ValueError: if the mesh has no ``"population"`` axis or its size does not divide
            the population.
    """
    if POPULATION_AXIS not in mesh.axis_names:
        raise ValueError(
            f"the mesh has axes {mesh.axis_names}; name one {POPULATION_AXIS!r}, e.g. "
            f"`jax.sharding.Mesh(jax.devices(), ({POPULATION_AXIS!r},))`."
        )
    num_shards = mesh.shape[POPULATION_AXIS]
    if population_size % num_shards:
        raise ValueError(
            f"the population of {population_size} does not split evenly over the mesh's "
            f"{num_shards} devices; use a multiple of {num_shards}."
        )
    split = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec(POPULATION_AXIS))
    replicated = jax.sharding.NamedSharding(mesh, jax.sharding.PartitionSpec())

    def sharding(leaf: Any) -> jax.sharding.NamedSharding:
        shape = jnp.shape(leaf)
        return split if shape and shape[0] == population_size else replicated

    return jax.tree.map(sharding, tree)


def to_host(tree: PyTree) -> PyTree:
    """``tree`` as host arrays, whole on every process.

    With one process this is ``jax.device_get``; with several (``jax.distributed``) an
    array may span devices of other processes, and every process gets the whole of it
    (``process_allgather``, a collective: every process must call this together).

    Args:
        tree: a pytree of arrays.

    Returns:
        The same pytree of NumPy arrays.
    """
    if jax.process_count() == 1:
        return jax.device_get(tree)

    def fetch(leaf: Any) -> Any:
        # An array on this process's devices alone (a run not split over processes) is
        # already whole; gathering it would stack every process's copy.
        if isinstance(leaf, jax.Array) and not leaf.is_fully_addressable:
            return multihost_utils.process_allgather(leaf, tiled=True)
        return jax.device_get(leaf)

    return jax.tree.map(fetch, tree)


def _load_progress_together(
    folder: Path, run_fingerprint: str, state: PyTree
) -> DriveProgress | None:
    """:func:`load_progress`, with several processes checked to agree before any of them
    goes on (else they would wait for each other's collectives forever): the same step,
    and a refusal (another run's folder, a corrupted file) on all or none."""
    try:
        saved, refusal = load_progress(folder, run_fingerprint, state), None
    except ValueError as error:
        saved, refusal = None, error
    if jax.process_count() > 1:
        try:
            multihost_utils.assert_equal(
                np.asarray([-1 if saved is None else saved.step, refusal is not None]),
                f"the processes found different progress in the checkpoint folder {folder}: "
                "give every process the same folder, on a file system they all reach",
            )
        except AssertionError:
            if refusal is not None:
                raise refusal from None
            raise
    if refusal is not None:
        raise refusal
    return saved


MAX_STEPS = 2**31 - 1
"""The most steps one drive takes: step indices are int32 on the device."""


SHARED_FOLDER_TOKEN = "shared-folder-token.txt"
"""Written by process 0 into a checkpoint folder and read by every process at the start of
a multi-process drive: a folder that some process cannot see is refused there and then."""


def _check_folder_is_shared(folder: Path) -> None:
    """With several processes, check that every process sees the files process 0 writes in
    ``folder`` (else the checkpoint would hold only process 0's view, and the mismatch
    would surface only at a resume).

    Raises:
        ValueError: on every process, naming the processes that do not see the folder.
        RuntimeError: on the other processes, when process 0 cannot write there.
    """
    if jax.process_count() == 1:
        return
    # int32: arrays are int32 unless x64 is on.
    token = str(int(multihost_utils.broadcast_one_to_all(np.asarray(time.time_ns() % 2**31))))
    path = folder / SHARED_FOLDER_TOKEN

    def write_token() -> None:
        folder.mkdir(parents=True, exist_ok=True)
        path.write_text(token)

    # Its broadcast is a barrier: the token is on disk before any process reads it.
    _run_on_process_zero(write_token, folder)

    def sees_token() -> bool:
        try:
            return path.read_text().strip() == token
        except OSError:
            return False

    sees = sees_token()
    for delay in (0.05, 0.1, 0.2, 0.4, 0.8):  # a network file system may show it late
        if sees:
            break
        time.sleep(delay)
        sees = sees_token()
    seen = np.asarray(multihost_utils.process_allgather(np.asarray(sees)))
    if not seen.all():
        blind = [int(index) for index in np.flatnonzero(~seen.astype(bool))]
        raise ValueError(
            f"the checkpoint folder {folder} is not shared: process(es) {blind} do not see "
            "the file process 0 wrote there. Give every process the same folder, on a file "
            "system they all reach."
        )


def _run_on_process_zero(action: Callable[[], None], folder: Path) -> None:
    """Run ``action`` (a write into the checkpoint folder) on process 0 alone, and with
    several processes stop them all if it fails: one process stopping alone would leave
    the others waiting at their next collective. A collective (a barrier) either way.

    Args:
        action: writes into ``folder``.
        folder: the checkpoint folder (named in the other processes' error).

    Raises:
        Exception: process 0's error, on process 0.
        RuntimeError: on the other processes, when process 0's action failed.
    """
    error = None
    if jax.process_index() == 0:
        try:
            action()
        except Exception as caught:  # an OSError, a full disk: every process must hear
            error = caught
    if jax.process_count() > 1:
        failed = bool(multihost_utils.broadcast_one_to_all(np.asarray(error is not None)))
        if failed and error is None:
            raise RuntimeError(
                f"process 0 could not write into the checkpoint folder {folder} (its error "
                "says why); every process stops. Fix that, then run the same command again "
                "to resume from the last checkpoint written."
            )
    if error is not None:
        raise error


def _write_on_process_zero(
    folder: Path,
    run_fingerprint: str,
    progress: DriveProgress,
    chunk: tuple[int, PyTree] | None,
) -> None:
    """Write a chunk's checkpoint (its records, if any, then the progress that refers to
    them) on process 0 alone (:func:`_run_on_process_zero`): each process has the whole
    records and state, and the folder is shared.

    Args:
        folder: the checkpoint folder.
        run_fingerprint: see :func:`probinfer.checkpoint.fingerprint`.
        progress: the state and step reached.
        chunk: ``(start, records)`` of the chunk's records, or None.
    """

    def write() -> None:
        if chunk is not None:
            save_records(folder, *chunk)
        save_progress(folder, run_fingerprint, progress)

    _run_on_process_zero(write, folder)


def _leading_size(tree: PyTree) -> int:
    sizes = {jnp.shape(leaf)[0] for leaf in jax.tree.leaves(tree) if jnp.ndim(leaf) > 0}
    if len(sizes) != 1:
        raise ValueError(
            "with `member_map`, every leaf of the state needs the same leading member axis; "
            f"got leading sizes {sorted(sizes)}."
        )
    size = sizes.pop()
    if size == 0:
        raise ValueError(
            "with `member_map`, the state's leading member axis has length 0; pass a state "
            "with at least one member."
        )
    return size


def _check_arguments(
    key: Any, state: PyTree, shared: PyTree, callables: dict[str, Any]
) -> tuple[PyTree, PyTree]:
    """Check what `drive` is given before anything is traced; returns ``state`` (Python
    numbers as weak-typed arrays) and ``shared`` as arrays.

    Raises:
        TypeError: naming a function that is not callable, a key that is not a
            `jax.random` key, or a state or shared leaf that is neither an array nor a
            Python number.
    """
    for name, fn in callables.items():
        if fn is not None and not callable(fn):
            raise TypeError(f"`{name}` must be callable, got {type(fn).__name__}.")
    is_key = (
        isinstance(key, jax.Array)
        and jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
        and key.ndim == 0
    ) or (  # the raw data of one key, as `jax.random.PRNGKey` gives
        isinstance(key, jax.Array | np.ndarray) and key.dtype == np.uint32 and key.ndim == 1
    )
    if not is_key:
        described = (
            f"an array of dtype {key.dtype} and shape {key.shape}"
            if isinstance(key, jax.Array | np.ndarray)
            else type(key).__name__
        )
        raise TypeError(
            f"`key` must be one `jax.random` key, got {described}; pass `jax.random.key(seed)`."
        )
    for path, leaf in jax.tree_util.tree_leaves_with_path(state):
        is_array = isinstance(leaf, jax.Array | bool | int | float) or (
            isinstance(leaf, np.ndarray | np.generic)
            and (jnp.issubdtype(leaf.dtype, jnp.number) or leaf.dtype == np.bool_)
        )
        if not is_array:
            described = (
                f"an array of dtype {leaf.dtype}"
                if isinstance(leaf, np.ndarray | np.generic)
                else f"a {type(leaf).__name__}"
            )
            raise TypeError(
                f"`state` leaf {jax.tree_util.keystr(path) or '(the state)'} is "
                f"{described}; the loop state must be a pytree of numeric arrays (wrap "
                "numbers with `jnp.asarray`)."
            )
    state = jax.tree.map(
        lambda leaf: jnp.asarray(leaf) if isinstance(leaf, bool | int | float) else leaf, state
    )
    try:
        return state, jax.tree.map(jnp.asarray, shared)
    except TypeError as error:
        raise TypeError(
            f"`shared` must be a pytree of arrays (the values every step reads), but {error}"
        ) from None


def _one_step(step_fn: StepFn, key: Any, state: PyTree, shared: PyTree) -> Any:
    """Step 0's output, as a chunk computes it (traced for its types only)."""
    return step_fn(jax.random.fold_in(key, 0), state, jnp.asarray(0, jnp.int32), shared)


# Jitted so that JAX's trace cache serves later drives with the same step and types.
_one_step_jitted = jax.jit(_one_step, static_argnums=0)
WEAK_TYPE_PASSES = 3  # a leaf's type may depend on another's: cast until none changes


def _without_weak_types(
    step_fn: StepFn, state: PyTree, key: Any, shared: PyTree, member_map: str | None
) -> PyTree:
    """``state`` with each weakly typed leaf (a Python number, or an array computed from
    Python numbers only) cast to the dtype a step gives it back in.

    A chunk program returns the state strongly typed, so a weakly typed first state would
    compile the program a second time for the next chunk (``nngp.fit_hyperparameters``:
    2.2 of the 6 s per depth went to that second compile, measured). A leaf that the step
    keeps weak stays weak (the chunks then agree). Costs a trace of ``step_fn`` (one
    member's step with ``member_map``; cached by JAX across drives), only when a leaf is
    weakly typed. A step whose output does not fit the state is left to the chunk
    program's own check, which names the problem.
    """
    for _ in range(WEAK_TYPE_PASSES):
        leaves = jax.tree.leaves(state)
        if not any(getattr(leaf, "weak_type", False) for leaf in leaves):
            return state
        if member_map is not None and any(jnp.ndim(leaf) == 0 for leaf in leaves):
            return state  # not a population of members: the member map names it
        member = state
        if member_map is not None:
            member = jax.tree.map(
                lambda leaf: jax.ShapeDtypeStruct(
                    leaf.shape[1:], leaf.dtype, weak_type=getattr(leaf, "weak_type", False)
                ),
                state,
            )
        output = _one_step_jitted.eval_shape(step_fn, key, member, shared)
        if not isinstance(output, tuple | list) or len(output) != 2:
            return state
        if jax.tree.structure(output[0]) != jax.tree.structure(member):
            return state

        def cast(leaf: Any, like: Any, new: jax.ShapeDtypeStruct) -> Any:
            castable = (
                getattr(leaf, "weak_type", False)
                and not new.weak_type
                and new.shape == like.shape
                and (jnp.issubdtype(new.dtype, jnp.number) or new.dtype == jnp.bool_)
            )
            return leaf.astype(new.dtype) if castable else leaf

        cast_state = jax.tree.map(cast, state, member, output[0])
        if all(a is b for a, b in zip(leaves, jax.tree.leaves(cast_state), strict=True)):
            return state
        state = cast_state
    return state


def _check_step_output(output: Any, state: PyTree) -> PyTree:
    """The record of ``step_fn``'s abstract ``output``, after checking that its new state
    has the structure, shapes and dtypes of ``state`` (a loop carries it).

    Raises:
        TypeError: naming ``step_fn``, the first leaf that differs and the fix.
    """
    if not isinstance(output, tuple | list) or len(output) != 2:
        raise TypeError(
            f"`step_fn` must return a pair `(state, record)`, got {type(output).__name__}"
            f"{'' if not isinstance(output, tuple | list) else f' of length {len(output)}'}"
            "; return `()` as the record to keep nothing."
        )
    new_state, record = output
    old_leaves, old_structure = jax.tree.flatten(jax.eval_shape(lambda s: s, state))
    new_leaves, new_structure = jax.tree.flatten(new_state)
    if new_structure != old_structure:
        raise TypeError(
            f"`step_fn` must return a state of the input state's structure (the loop "
            f"carries it), got {new_structure} for {old_structure}."
        )
    paths = [path for path, _ in jax.tree_util.tree_leaves_with_path(new_state)]
    for path, old, new in zip(paths, old_leaves, new_leaves, strict=True):
        same_dtype = old.dtype == new.dtype or old.weak_type  # a weak type is promoted
        if old.shape != new.shape or not same_dtype:
            raise TypeError(
                f"`step_fn` must return a state of the input state's shapes and dtypes (the "
                f"loop carries it), but state leaf {jax.tree_util.keystr(path) or '(the state)'} "
                f"went from {old.dtype.name}{list(old.shape)} to {new.dtype.name}"
                f"{list(new.shape)}; keep each leaf's shape, and cast with `.astype(...)`."
            )
    return record


def drive(
    step_fn: StepFn,
    state: PyTree,
    key: PRNGKeyArray,
    *,
    shared: PyTree = (),
    num_steps: int | None = None,
    is_done_fn: Callable[[PyTree], Array] | None = None,
    max_steps: int | None = None,
    chunk_size: int = 100,
    chunk_rows: int | None = None,
    member_map: str | None = None,
    interleave: bool = False,
    split_vectorized: bool = False,
    continued_groups: int | None = None,
    mesh: jax.sharding.Mesh | None = None,
    population_size: int | None = None,
    record_fn: Callable[[PyTree], PyTree] | None = None,
    thin: int = 1,
    combine_fn: Callable[[PyTree, PyTree], PyTree] | None = None,
    progress: ProgressReporter | None = None,
    progress_fn: Callable[[PyTree], dict[str, Any]] | None = None,
    after_chunk_fn: Callable[[PyTree, int], None] | None = None,
    chunk_records_fn: Callable[[PyTree], None] | None = None,
    first_step: int = 0,
    description: str = "run",
    checkpoint: str | Path | None = None,
    run_fingerprint: str = "",
    watch: CompileWatch | None = None,
) -> DriveResult:
    """Run ``step_fn`` for ``num_steps`` steps, or until ``is_done_fn`` holds.

    Args:
        step_fn: ``(key, state, step_index, shared) -> (state, record)``; ``record`` is a
            pytree of arrays kept for every step (return ``()`` to keep nothing).
        state: the initial loop state (with a leading member axis under ``member_map``).
        key: the loop key (see the module docstring for how steps derive theirs).
        shared: arrays every step reads (data, schedules), passed as values.
        num_steps: run exactly this many steps; or give ``is_done_fn`` and ``max_steps``.
        is_done_fn: ``state -> bool``: stop once it holds (checked before every step).
        max_steps: with ``is_done_fn``, the most steps to take.
        chunk_size: steps per chunk (progress and checkpoints between chunks); a runtime
            value of the chunk program.
        chunk_rows: the records buffer's rows, a shape of the chunk program (default
            ``chunk_size // thin``; at least that): drives with the same ``chunk_rows`` and
            other chunk sizes share one program.
        member_map: map independent members as one of :data:`MEMBER_MAPS`, or None for a
            population step.
        interleave: run a :class:`StagedStep` as one flat loop of ``advance`` calls, each
            member beginning its next step as soon as its own is done, instead of each
            step whole (vectorized members then wait, in lock step, for the slowest at
            every step). It pays from 2 vectorized members whose work differs (NUTS:
            ``benchmarks/scale.py`` at bf5fec3, 1.6-3.2x); with one member the loop's
            fixed cost per iteration makes it about 0.4-0.5x a whole step.
        split_vectorized: on a CPU with several usable cores, run ``vectorized`` members
            as equal groups of at least two, one host thread each, as ``sequential``
            members are (:mod:`probinfer.driver._threads`): for steps that cost many
            gradient evaluations (NUTS, HMC: 0.7-3.1x on 2 cores, the losses on runs under
            0.2 s); a step of one gradient evaluation (MALA) is too cheap for it (0.4-1.1x).
            Results may differ from one program's in the last bits (a ``vmap`` of fewer
            members can round differently), so a resumed drive keeps the group count its
            checkpoint records.
        continued_groups: the group count of an earlier drive whose members this one
            continues (``DriveResult.num_groups``; e.g. warm-up before sampling), kept by
            vectorized members as a checkpoint's would be when this drive's own
            checkpoint records none (there is none, or it predates the record): a run
            resumed in its first drive then rounds alike in the next one.
        mesh: split the population over this mesh's ``"population"`` axis (population
            steps and ``vectorized`` members).
        population_size: with ``mesh`` and no ``member_map``, the population's size (its
            leaves with that leading length are split).
        record_fn: applied to each chunk's records on the device before they are fetched
            (e.g. to keep only what the host needs); its output is what is returned and
            checkpointed.
        thin: keep the record of every ``thin``-th step only (steps ``thin - 1``,
            ``2 * thin - 1``, ...), so that a long run holds ``num_steps // thin`` records;
            ``num_steps``, ``chunk_size`` and ``first_step`` must be multiples of it. A
            runtime value: drives that differ only in ``thin`` share the program.
        combine_fn: ``(group's record so far, next step's record) -> record``: how the
            records of a group of ``thin`` steps make the kept one (e.g. sum the steps'
            gradient evaluations, flag a divergence anywhere in the group); None keeps the
            group's last record. It keys the compiled program, like ``step_fn``.
        progress: a shared progress bar, or None.
        progress_fn: ``records of a chunk (host) -> {field: value}`` shown on the bar.
        after_chunk_fn: ``(state, steps done) -> None``, called on the host after every
            chunk (e.g. to save a model in a format of the caller's own).
        chunk_records_fn: ``records of a chunk (host) -> None``, called on the host with
            every chunk's records (of the steps it ran) before ``after_chunk_fn`` (e.g. to
            keep a training curve saved with the model).
        first_step: the index of the first step, for a loop resumed from a checkpoint of
            the caller's own (``num_steps`` or ``max_steps`` count from 0, not from here).
        description: the bar's label for this drive.
        checkpoint: a folder: progress and records are written atomically after every
            chunk, and a drive started again with the same folder and fingerprint resumes
            where it stopped (a finished one just loads). With several processes, a folder
            all of them reach (process 0 writes it for all).
        run_fingerprint: a description of everything that defines the run besides what the
            driver sees (target, data, settings); combined with the driver's own settings.
        watch: accumulates compile time across the drives of one run.

    Returns:
        The :class:`DriveResult`.

    Raises:
        ValueError: for inconsistent settings, or a checkpoint of another run.
        TypeError: for functions that are not callable, a ``key`` that is not one
            `jax.random` key, a ``state`` or ``shared`` that is not a pytree of arrays, or a
            ``step_fn`` that changes the state's structure, shapes or dtypes.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from probinfer.driver import drive
        >>> def random_walk(key, x, step_index, shared):
        ...     x = x + shared * jax.random.normal(key)
        ...     return x, x
        >>> result = drive(random_walk, jnp.zeros(()), jax.random.key(0), shared=jnp.asarray(0.1),
        ...                num_steps=250, chunk_size=100)
        >>> result.records.shape, result.status.name
        ((250,), 'COMPLETED')
    """
    if (num_steps is None) == (is_done_fn is None):
        raise ValueError("pass `num_steps`, or `is_done_fn` with `max_steps`, but not both.")
    if is_done_fn is not None:
        if max_steps is None:
            raise ValueError("`is_done_fn` needs `max_steps`, the most steps to take.")
        if member_map is not None:
            raise ValueError(
                "`is_done_fn` stops the whole population; independent members "
                "(`member_map`) run a fixed `num_steps`."
            )
    if member_map is not None and member_map not in MEMBER_MAPS:
        raise ValueError(f"`member_map` must be one of {MEMBER_MAPS} or None, got {member_map!r}.")
    state, shared = _check_arguments(
        key,
        state,
        shared,
        {
            "step_fn": step_fn,
            "is_done_fn": is_done_fn,
            "record_fn": record_fn,
            "combine_fn": combine_fn,
            "progress_fn": progress_fn,
            "after_chunk_fn": after_chunk_fn,
            "chunk_records_fn": chunk_records_fn,
        },
    )
    total = check_count(
        "num_steps" if num_steps is not None else "max_steps",
        num_steps if num_steps is not None else max_steps,
        0,
    )
    chunk_size = check_count("chunk_size", chunk_size, 1)
    first_step = check_count("first_step", first_step, 0)
    thin = check_count("thin", thin, 1)
    if thin > 1:
        if num_steps is None:
            raise ValueError(
                "`thin` needs a fixed `num_steps`: a drive that stops when `is_done_fn` "
                "holds could end inside a group of steps."
            )
        for name, value in (
            ("num_steps", total), ("chunk_size", chunk_size), ("first_step", first_step)
        ):  # fmt: skip
            if value % thin:
                raise ValueError(
                    f"`{name}={value}` is not a multiple of `thin={thin}`; the records keep "
                    f"whole groups of `thin` steps, so pass a multiple of {thin}."
                )
    chunk_rows = (
        chunk_size // thin if chunk_rows is None else check_count("chunk_rows", chunk_rows, 1)
    )
    if chunk_rows * thin < chunk_size:
        raise ValueError(
            f"`chunk_rows={chunk_rows}` cannot hold the records of a chunk of "
            f"`chunk_size={chunk_size}` steps with `thin={thin}`; pass `chunk_rows >= "
            f"{-(-chunk_size // thin)}`."
        )
    # What the device counts in int32: the steps, the first one, a full chunk's steps.
    largest = max(total, first_step, chunk_rows * thin)
    if largest > MAX_STEPS:
        raise ValueError(
            f"a drive counts its steps in int32: {largest:,} steps (`num_steps`/`max_steps`, "
            f"`first_step`, or `chunk_rows` x `thin`) exceed {MAX_STEPS:,}; split the run "
            "into several drives (each resuming from the last state)."
        )
    watch = CompileWatch() if watch is None else watch
    if interleave and not isinstance(step_fn, StagedStep):
        raise ValueError("`interleave=True` needs a `StagedStep`; a plain step runs whole.")
    program = _ChunkProgram(step_fn, is_done_fn, chunk_rows, member_map, interleave, combine_fn)
    keys = key
    if member_map is not None:
        keys = jax.random.split(key, _leading_size(state))

    def place(state: PyTree, keys: PRNGKeyArray) -> tuple[PyTree, PRNGKeyArray]:
        if mesh is None:
            return state, keys
        if member_map is not None and member_map.startswith("parallel"):
            raise ValueError(
                f"`member_map={member_map!r}` splits members over all devices itself; drop "
                "`mesh`, or use `member_map='vectorized'` with it."
            )
        size = _leading_size(state) if member_map is not None else population_size
        if size is None:
            raise ValueError("with `mesh` and no `member_map`, pass `population_size`.")
        state = jax.device_put(state, population_sharding(mesh, state, size))
        if member_map is not None:
            keys = jax.device_put(keys, population_sharding(mesh, keys, size))
        return state, keys

    state, keys = place(state, keys)

    def select(buffers: PyTree) -> PyTree:
        return buffers if record_fn is None else record_fn(buffers)

    def fetch(buffers: PyTree) -> PyTree:
        return to_host(select(buffers))

    def records_structure(state: PyTree, keys: PRNGKeyArray) -> PyTree:
        """Shapes of a chunk's fetched records (a trace, no compilation)."""

        def records(state: PyTree, keys: PRNGKeyArray) -> PyTree:
            zero, one = jnp.asarray(0, jnp.int32), jnp.asarray(1, jnp.int32)
            buffers = _run_chunk(program, state, keys, shared, zero, zero, zero, one)[1]
            return buffers if record_fn is None else record_fn(buffers)

        return jax.eval_shape(records, state, keys)

    step_axis = 0 if member_map is None else 1
    host = _HostRecords(step_axis, None if is_done_fn is not None else (total - first_step) // thin)
    done, seconds, is_finished, is_done = first_step, 0.0, first_step >= total, False
    folder = None if checkpoint is None else Path(checkpoint)
    import probinfer  # the package's version (imported here: it imports this module)

    full_fingerprint = combine_fingerprints(
        # A caller's own description without named parts is one part, "run".
        run_fingerprint if "=" in run_fingerprint else fingerprint(run=run_fingerprint),
        fingerprint(
            # A stop-condition drive may be resumed with a larger `max_steps`: left out.
            drive=(num_steps, chunk_size, member_map, interleave, first_step, thin),
            drive_seed=jax.random.key_data(key),
            library=probinfer.__version__,
        ),
    )
    saved = None
    if folder is not None:
        saved = _load_progress_together(folder, full_fingerprint, state)
        _check_folder_is_shared(folder)
        if saved is not None:
            state, _ = place(jax.tree.map(jnp.asarray, saved.state), keys)
            done, seconds = saved.step, saved.seconds
            # Re-evaluated, not read back: a stop condition met exactly at the step limit is
            # still met, and a run that hit the limit goes on when the limit is raised.
            is_done = is_done_fn is not None and bool(is_done_fn(state))
            is_finished = is_done or done >= total
            records_like = records_structure(state, keys)
            for _, records in load_records(folder, done, records_like):
                leaves = jax.tree.leaves(records)  # saved with their steps only
                host.add(records, leaves[0].shape[step_axis] if leaves else 0)
    num_groups = 1
    if member_map is not None and mesh is None:
        num_groups = groups_for(
            member_map,
            _leading_size(state),
            state,
            split_vectorized=split_vectorized,
            resumed_groups=continued_groups
            if saved is None or saved.num_groups is None
            else saved.num_groups,
        )
    # Here, after a resume has replaced the state by its (strongly typed) checkpoint.
    state = _without_weak_types(step_fn, state, key, shared, member_map)
    if progress is not None:
        progress.update(description=description, advance=done)

    compiled_before = watch.compile_seconds
    tic = last_tic = time.perf_counter()
    next_start = jnp.asarray(done, jnp.int32)
    total_device = jnp.asarray(total, jnp.int32)
    steps_per_chunk = jnp.asarray(chunk_size, jnp.int32)
    thin_device = jnp.asarray(thin, jnp.int32)
    if (
        is_done_fn is None
        and progress is None
        and folder is None
        and after_chunk_fn is None
        and chunk_records_fn is None
        and jax.process_count() == 1
    ):
        # Nothing on the host reads a chunk before the end and every chunk's end is known:
        # all chunks are dispatched at once, as full as the buffer allows, and their
        # records stay on the device, fetched in one transfer at the end, or, when those
        # held pass DEVICE_RECORDS_BYTES, all but the newest (which keeps the device busy
        # meanwhile), so the host never waits for a running chunk.
        held: list[tuple[PyTree, int]] = []
        held_bytes = 0
        full_chunk = jnp.asarray(chunk_rows * thin, jnp.int32)

        def release(records_and_counts: list[tuple[PyTree, int]]) -> None:
            fetched = jax.device_get([records for records, _ in records_and_counts])
            for records, (_, count) in zip(fetched, records_and_counts, strict=True):
                host.add(records, count // thin)

        while done < total:
            state, buffers, next_start, _ = _dispatch(
                program, watch, num_groups, state, keys, shared, next_start, total_device,
                full_chunk, thin_device,
            )  # fmt: skip
            count = min(chunk_rows * thin, total - done)
            records = select(buffers)
            chunk_bytes = sum(leaf.nbytes for leaf in jax.tree.leaves(records))
            held.append((records, count))
            held_bytes += chunk_bytes
            done += count
            if held_bytes > DEVICE_RECORDS_BYTES and len(held) > 1:
                release(held[:-1])
                held, held_bytes = held[-1:], chunk_bytes
        release(held)
        is_finished = True
    dispatched_until = done  # host-known steps dispatched (exact for fixed step counts)
    pending = None
    while True:
        dispatched = None
        if not is_finished and dispatched_until < total:
            state, buffers, next_start, done_flag = _dispatch(
                program, watch, num_groups, state, keys, shared, next_start, total_device,
                steps_per_chunk, thin_device,
            )  # fmt: skip
            dispatched = (state, buffers, next_start, done_flag)
            if is_done_fn is None:  # a fixed step count: the chunk's end is known
                dispatched_until = min(total, dispatched_until + chunk_size)
            if num_groups > 1:  # the groups' dispatch returns when they have run: no overlap
                pending, dispatched = dispatched, None
        if pending is not None:
            chunk_state, buffers, chunk_end, done_flag = pending
            chunk_end, is_done = int(chunk_end), bool(done_flag)
            count = chunk_end - done
            records = None
            if count > 0:
                records = host.add(fetch(buffers), count // thin)
            is_finished = is_done or chunk_end >= total
            if is_finished and is_done_fn is not None:
                dispatched_until = total  # stop dispatching
            now = time.perf_counter()
            if folder is not None:
                # Gathered by every process (a collective), written by one.
                host_state = to_host(chunk_state)
                elapsed = now - tic - (watch.compile_seconds - compiled_before)
                chunk = None if records is None else (done, records)
                _write_on_process_zero(
                    folder,
                    full_fingerprint,
                    DriveProgress(host_state, chunk_end, seconds + elapsed, num_groups),
                    chunk,
                )
            if chunk_records_fn is not None and records is not None:
                chunk_records_fn(records)
            if after_chunk_fn is not None:
                after_chunk_fn(chunk_state, chunk_end)
            if progress is not None:
                fields = None if progress_fn is None or records is None else progress_fn(records)
                progress.update(
                    advance=count, rate=count / max(now - last_tic, 1e-9), fields=fields
                )
            last_tic = now
            done = chunk_end
        if dispatched is None and (pending is None or is_finished):
            break
        pending = dispatched
    seconds += time.perf_counter() - tic - (watch.compile_seconds - compiled_before)
    records = host.result(lambda: records_structure(state, keys))
    status = (
        DriveStatus.STEP_LIMIT
        if is_done_fn is not None and not is_done and done >= total
        else DriveStatus.COMPLETED
    )
    return DriveResult(
        state=state,
        records=records,
        num_steps=done,
        status=status,
        compile_seconds=watch.compile_seconds,
        run_seconds=seconds,
        num_groups=num_groups,
    )
