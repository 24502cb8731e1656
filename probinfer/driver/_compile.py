"""Compiled programs, cached by (function, static settings, argument shapes and shardings).

Programs are compiled ahead of time (``jit(...).lower(...).compile()``) so that compile time
is measured apart from run time, and cached here, which is what lets a second run with new
data values or a new seed skip compilation. The cache keeps the most recently used
:data:`MAX_COMPILED_PROGRAMS` programs: each entry keeps its static settings (a target spec
and whatever its functions close over) alive.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import jax

PyTree = Any

MAX_COMPILED_PROGRAMS = 64
TRACE_COUNTS: dict[str, int] = {}
_COMPILED: OrderedDict[Any, Any] = OrderedDict()
# Held while the cache is read or written, so that threads may share it.
_LOCK = threading.Lock()


class CompileWatch:
    """Accumulates the seconds spent compiling during one run."""

    def __init__(self) -> None:
        self.compile_seconds = 0.0


def count_trace(name: str) -> None:
    """Count one trace of program ``name`` (tests use the counts to prove cache hits).

    Args:
        name: the program's name.
    """
    TRACE_COUNTS[name] = TRACE_COUNTS.get(name, 0) + 1


def _signature(tree: PyTree) -> tuple[Any, ...]:
    leaves, treedef = jax.tree.flatten(tree)
    return (
        treedef,
        tuple(
            (x.shape, x.dtype, getattr(x, "weak_type", False), getattr(x, "sharding", None))
            for x in leaves
        ),
    )


def compiled_program(
    function: Callable[..., Any],
    static: tuple[Any, ...],
    args: tuple[Any, ...],
    watch: CompileWatch,
) -> Any:
    """The program of ``function(*static, *args)`` for these static values and arg shapes,
    compiled on the first request (under the calling thread's JAX settings, e.g. x64).

    Args:
        function: a module-level function (part of the cache key).
        static: hashable leading arguments, compiled in (target specs, settings).
        args: array pytrees passed as values (only their shapes, dtypes and shardings count).
        watch: accumulates the compile time.

    Returns:
        The compiled program; call it with ``*args``.
    """
    key = (function, static, _signature(args))
    with _LOCK:
        compiled = _COMPILED.get(key)
        if compiled is not None:
            _COMPILED.move_to_end(key)
            return compiled
    tic = time.perf_counter()
    jitted = jax.jit(function, static_argnums=tuple(range(len(static))))
    compiled = jitted.lower(*static, *args).compile()
    watch.compile_seconds += time.perf_counter() - tic
    with _LOCK:
        _COMPILED[key] = compiled
        while len(_COMPILED) > MAX_COMPILED_PROGRAMS:
            _COMPILED.popitem(last=False)
    return compiled


def call_compiled(
    function: Callable[..., Any],
    static: tuple[Any, ...],
    args: tuple[Any, ...],
    watch: CompileWatch,
) -> Any:
    """Run ``function(*static, *args)``, compiling it once per static values and arg shapes.

    Args:
        function: a module-level function (part of the cache key).
        static: hashable leading arguments, compiled in (target specs, settings).
        args: array pytrees passed as values.
        watch: accumulates the compile time.

    Returns:
        The function's output.
    """
    return compiled_program(function, static, args, watch)(*args)


def clear_cache() -> None:
    """Forget every compiled program (the next run compiles again)."""
    with _LOCK:
        _COMPILED.clear()
