"""Members side by side on a multi-core CPU: groups of members, one host thread each.

A ``sequential`` chunk program maps its members one after another on one core: XLA:CPU
runs a small model's operations (a NUTS chain with tens of parameters) single-threaded,
and programs dispatched from one host thread run one at a time. Programs dispatched from
different host threads do run at once, so a drive of sequential members on a CPU with
several usable cores splits the members into equal groups (equal, so that all groups share
one compiled program), runs each group's chunk from a worker thread and joins the results.
Each member's computation is the one it has in the whole program, so the results are the
same (bitwise; tested); on this project's 2-core machine 4 chains of a small model take
about half the wall time.

``vectorized`` members are grouped the same way when the drive asks for it
(``split_vectorized``: NUTS and HMC chains, whose steps are trajectories of many gradient
evaluations): a vectorized program of a few chains also runs on one core. Their results
are those of one program up to floating-point rounding: a ``vmap`` of 2 members may round
differently from one of 4 (bitwise alike on 7 of 8 zoo models over 1,000 + 1,000 NUTS
steps, not on linear regression), so with vectorized chains the thread count joins the
machine and the device count among what the last bits depend on; a resumed drive keeps the
group count its checkpoint records (``groups_for``'s ``resumed_groups``). Measured on an
AMD EPYC with 2 cores (jax 0.9.2, 4 chains, 1,000 + 1,000 steps, time of warm-up and
sampling, one program over two groups):

- NUTS: 1.2-1.7x on the correlated 100-d Gaussian, 0.9-1.2x on eight schools, 1.5x on
  logistic regression, 1.4x on ``lgssm``, 1.6x on ``gp_poisson``; 0.85-0.92x on the 10-d iid
  Gaussian and 0.73-0.76x on linear regression, runs of 0.15-0.2 s where the grouping's
  cost per chunk (about 1 ms) is a fifth of the time; at 16 and 128 chains on eight schools
  1.3-1.6x and 1.6-2.1x, at 16 chains on the 100-d Gaussian 2.2-3.1x.
- HMC: 1.8-2.2x on the 100-d Gaussian, 1.4-1.5x on logistic regression, 1.4-1.8x on
  ``gp_poisson``, 1.1-1.5x on linear regression, 1.0-1.2x on eight schools.
- MALA (not grouped): 0.4-0.9x (level on ``gp_poisson``), a step of one gradient being
  too cheap for the split.

A vectorized group holds at least two members (a group of one is not vectorized). Under
jaxlib 0.10.0-0.11.0 (excluded by the requirements) vectorized members are not grouped:
two vectorized groups of 4 NUTS chains of a 100-d Gaussian waited for each other forever
there (jax 0.10.2, 2 cores: both pool workers parked in
``CpuPjRtRawLoadedExecutable::Execute``, the batched LAPACK calls' blocking wait).

The number of threads is :func:`host_threads`: the usable cores, or the environment
variable ``PROBINFER_CPU_THREADS`` (``1`` turns the grouping off, e.g. when several
processes share the cores).
"""

from __future__ import annotations

import functools
import os
import re
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp
from jaxlib.version import __version__ as jaxlib_version

from probinfer.driver._compile import CompileWatch, call_compiled

PyTree = Any
THREADS_VARIABLE = "PROBINFER_CPU_THREADS"
_POOL: ThreadPoolExecutor | None = None
_POOL_THREADS = 0
_POOL_LOCK = threading.Lock()


def host_threads() -> int:
    """Host threads that run groups of members at once.

    Returns:
        ``PROBINFER_CPU_THREADS`` if set, else the cores this process may use (its CPU
        affinity; a container's CPU quota is not read: set the variable there).

    Raises:
        ValueError: if ``PROBINFER_CPU_THREADS`` is not a positive integer.
    """
    value = os.environ.get(THREADS_VARIABLE)
    if value is not None:
        try:
            threads = int(value)
        except ValueError:
            threads = 0
        if threads < 1:
            raise ValueError(
                f"{THREADS_VARIABLE}={value!r} must be a positive integer (1 runs all "
                "chains on one thread); unset it to use every usable core."
            )
        return threads
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def member_groups(num_members: int, threads: int) -> int:
    """How many equal groups to split ``num_members`` into for ``threads`` threads.

    Args:
        num_members: members of the drive.
        threads: threads available (:func:`host_threads`).

    Returns:
        The number of groups whose members finish soonest when each thread runs one group
        at a time (group size times rounds of groups), the fewest such groups on a tie:
        4 members on 2 threads make 2 groups, 5 make 5, 8 on 3 threads make 8. 1 when
        there is one thread or one member.
    """
    if min(threads, num_members) <= 1:
        return 1
    sizes = [s for s in range(num_members, 0, -1) if num_members % s == 0]
    size = min(sizes, key=lambda s: s * -(-(num_members // s) // threads))  # first: largest
    return num_members // size


def vectorized_groups(num_members: int, threads: int) -> int:
    """How many equal groups of vectorized members to run at once on ``threads`` threads.

    Args:
        num_members: members of the drive.
        threads: threads available (:func:`host_threads`).

    Returns:
        The most groups, at most one per thread, that split the members equally into
        groups of at least two (one member alone is not vectorized): 4 members on 2
        threads make 2 groups, 6 on 4 make 3, 5 on 2 make 1, as does 1 thread.
    """
    return max(g for g in range(1, threads + 1) if splits_vectorized(num_members, g))


def splits_vectorized(num_members: int, num_groups: int) -> bool:
    """Whether ``num_groups`` groups of vectorized members can be run: one program (1), or
    equal groups of at least two members each."""
    return num_groups == 1 or (
        num_groups > 1 and num_members % num_groups == 0 and num_members // num_groups >= 2
    )


@functools.cache
def jaxlib_blocks_batched_lapack() -> bool:
    """Whether the installed jaxlib is one whose batched CPU LAPACK calls can deadlock.

    jaxlib 0.10.0-0.11.0 split a batched LAPACK call over XLA:CPU's pool and block a pool
    thread until its parts are done (``ParallelBatchMap`` in ``jaxlib/cpu/_lapack.so``):
    two such calls at once, or two programs that make them, can wait for each other forever
    on a few cores. ``pyproject.toml`` excludes these versions (keep the two ranges alike);
    a ``--no-deps`` or conda install can still bring one.

    Returns:
        True for jaxlib 0.10.0 to 0.11.0.
    """
    parts = re.match(r"(\d+)\.(\d+)\.(\d+)", jaxlib_version)
    version = tuple(int(part) for part in parts.groups()) if parts else (0, 0, 0)
    return (0, 10, 0) <= version <= (0, 11, 0)


def groups_for(
    member_map: str | None,
    num_members: int,
    state: PyTree,
    *,
    split_vectorized: bool = False,
    resumed_groups: int | None = None,
) -> int:
    """How many groups of members a drive runs at once from host threads (1: none).

    Only ``sequential`` members, and ``vectorized`` ones with ``split_vectorized``, whose
    state lies on one CPU device of a single-process run are grouped, and not while
    ``jax.debug_nans``/``jax.debug_infs`` is on: JAX checks a program's outputs only on the
    thread that set it. Sequential groups ran in every case tried (a dense 400-d Gaussian,
    a 200,000-row logistic regression, a batched 16 x 300 x 100 product); vectorized ones
    are not made where :func:`jaxlib_blocks_batched_lapack` holds.

    Args:
        member_map: the drive's member map.
        num_members: members of the drive.
        state: their state (the member axis first).
        split_vectorized: group ``vectorized`` members too (see the module docstring for
            when it pays).
        resumed_groups: the group count of the run being resumed or continued (None: a
            new run, or not recorded). Vectorized members keep it where they may be
            grouped at all and it is 1 or splits them into equal groups of two or more
            (it may exceed the threads: the groups then take turns), because a ``vmap``
            over another number of members can round differently; sequential members
            round alike in any grouping and take the count for this machine.

    Returns:
        The number of groups (:func:`member_groups` for sequential members,
        :func:`vectorized_groups` for vectorized ones, or ``resumed_groups``).
    """
    if member_map == "sequential":
        split = member_groups
    elif member_map == "vectorized" and split_vectorized and not jaxlib_blocks_batched_lapack():
        split = vectorized_groups
    else:
        return 1
    if jax.process_count() > 1:
        return 1
    settings = jax.config.values  # this thread's values, `with jax.debug_nans(...)` included
    if settings["jax_debug_nans"] or settings["jax_debug_infs"]:
        return 1
    for leaf in jax.tree.leaves(state):
        devices = getattr(leaf, "sharding", None)
        devices = None if devices is None else devices.device_set
        if devices is not None and (len(devices) != 1 or next(iter(devices)).platform != "cpu"):
            return 1
    if jax.default_backend() != "cpu":
        return 1
    if split is vectorized_groups and resumed_groups is not None:
        if splits_vectorized(num_members, resumed_groups):
            return resumed_groups
    return split(num_members, host_threads())


def _split(num_groups: int, tree: PyTree) -> list[PyTree]:
    size = jax.tree.leaves(tree)[0].shape[0] // num_groups
    return [
        jax.tree.map(lambda x, g=g: x[g * size : (g + 1) * size], tree) for g in range(num_groups)
    ]


def _join(parts: list[PyTree]) -> PyTree:
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def _pool(threads: int) -> ThreadPoolExecutor:
    """The worker pool, made again when the thread count asked for changes."""
    global _POOL, _POOL_THREADS
    with _POOL_LOCK:
        if _POOL is None or _POOL_THREADS != threads:
            if _POOL is not None:
                _POOL.shutdown(wait=False)
            _POOL = ThreadPoolExecutor(threads, thread_name_prefix="probinfer-members")
            _POOL_THREADS = threads
        return _POOL


def _forget_pool() -> None:
    # A forked child has the parent's pool object but none of its threads.
    global _POOL, _POOL_THREADS
    _POOL, _POOL_THREADS = None, 0


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def run_in_groups(
    group_program: Callable[[tuple[Any, ...]], Callable[..., Any]],
    watch: CompileWatch,
    num_groups: int,
    state: PyTree,
    keys: PyTree,
    *rest: Any,
) -> tuple[PyTree, PyTree, Any, Any]:
    """Run a chunk on ``num_groups`` groups of members at once and join them.

    Args:
        group_program: ``args -> compiled program`` for one group's arguments ``(state,
            keys, *rest)``; the program returns ``(state, records, next_start, done)``,
            the member axis first in ``state``, ``keys`` and ``records``. It is compiled on
            the calling thread: JAX settings such as ``jax.enable_x64`` hold per thread.
        watch: accumulates the compile time of the split and join programs.
        num_groups: equal groups to split the members into (from :func:`member_groups`).
        state: the members' states.
        keys: the members' keys.
        *rest: the chunk's other arguments, the same for every group.

    Returns:
        The program's output for all members; ``next_start`` and ``done`` are the first
        group's (every group runs the same steps).
    """
    parts = [
        (*part, *rest) for part in call_compiled(_split, (num_groups,), ((state, keys),), watch)
    ]
    program = group_program(parts[0])  # equal groups: one program for all

    def run(args: tuple[Any, ...]) -> tuple[PyTree, PyTree, Any, Any]:
        # Waiting here, on the worker, matters: dispatched without the wait, the groups'
        # programs overlapped far less (measured: eight schools' warm-up 0.13 s, not 0.07).
        return jax.block_until_ready(program(*args))

    outputs = list(_pool(min(host_threads(), num_groups)).map(run, parts))
    joined_state, joined_records = call_compiled(
        _join, (), ([(out[0], out[1]) for out in outputs],), watch
    )
    return joined_state, joined_records, outputs[0][2], outputs[0][3]
