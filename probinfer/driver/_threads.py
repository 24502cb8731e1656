"""Sequential members side by side on a multi-core CPU: groups of members, one thread each.

A ``sequential`` chunk program maps its members one after another on one core: XLA:CPU
runs a small model's operations (a NUTS chain with tens of parameters) single-threaded,
and programs dispatched from one host thread run one at a time. Programs dispatched from
different host threads do run at once, so a drive of sequential members on a CPU with
several usable cores splits the members into equal groups (equal, so that all groups share
one compiled program), runs each group's chunk from a worker thread and joins the results.
Each member's computation is the one it has in the whole program, so the results are the
same (bitwise; tested); on this project's 2-core machine 4 chains of a small model take
about half the wall time.

The number of threads is :func:`host_threads`: the usable cores, or the environment
variable ``PROBINFER_CPU_THREADS`` (``1`` turns the grouping off, e.g. when several
processes share the cores).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import jax
import jax.numpy as jnp

from probinfer.driver._compile import CompileWatch, call_compiled

PyTree = Any
THREADS_VARIABLE = "PROBINFER_CPU_THREADS"
_POOL: ThreadPoolExecutor | None = None
_POOL_LOCK = threading.Lock()


def host_threads() -> int:
    """Host threads that run groups of sequential members at once.

    Returns:
        ``PROBINFER_CPU_THREADS`` if set, else the cores this process may use.

    Raises:
        ValueError: if ``PROBINFER_CPU_THREADS`` is not a positive integer.
    """
    value = os.environ.get(THREADS_VARIABLE)
    if value is not None:
        if not value.strip().isdigit() or int(value) < 1:
            raise ValueError(
                f"{THREADS_VARIABLE}={value!r} must be a positive integer (1 runs sequential "
                "chains on one thread); unset it to use every usable core."
            )
        return int(value)
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def member_groups(num_members: int, threads: int) -> int:
    """How many equal groups to split ``num_members`` into for ``threads`` threads.

    Args:
        num_members: members of the drive.
        threads: threads available (:func:`host_threads`).

    Returns:
        The number of groups: the fewest equal groups that keep every thread busy
        (``num_members`` groups of one when no larger equal size does), or 1 when there
        is one thread or one member.
    """
    busy = min(threads, num_members)
    if busy <= 1:
        return 1
    size = next(s for s in range(num_members // busy, 0, -1) if num_members % s == 0)
    return num_members // size


def _split(num_groups: int, tree: PyTree) -> list[PyTree]:
    size = jax.tree.leaves(tree)[0].shape[0] // num_groups
    return [
        jax.tree.map(lambda x, g=g: x[g * size : (g + 1) * size], tree) for g in range(num_groups)
    ]


def _join(parts: list[PyTree]) -> PyTree:
    return jax.tree.map(lambda *xs: jnp.concatenate(xs), *parts)


def _pool() -> ThreadPoolExecutor:
    global _POOL
    with _POOL_LOCK:
        if _POOL is None:
            _POOL = ThreadPoolExecutor(host_threads(), thread_name_prefix="probinfer-members")
        return _POOL


def run_in_groups(
    group_program: Callable[[tuple[Any, ...]], Callable[..., Any]],
    watch: CompileWatch,
    num_groups: int,
    state: PyTree,
    keys: PyTree,
    *rest: Any,
) -> tuple[PyTree, PyTree, Any, Any]:
    """Run a sequential chunk on ``num_groups`` groups of members at once and join them.

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
        # Blocking here keeps this group's program on this thread until it has run.
        return jax.block_until_ready(program(*args))

    outputs = list(_pool().map(run, parts))
    joined_state, joined_records = call_compiled(
        _join, (), ([(out[0], out[1]) for out in outputs],), watch
    )
    return joined_state, joined_records, outputs[0][2], outputs[0][3]
