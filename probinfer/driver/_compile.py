"""Compiled programs, cached by (function, static settings, argument shapes and shardings).

Programs are compiled ahead of time (``jit(...).lower(...).compile()``) so that compile time
is measured apart from run time, and cached here, which is what lets a second run with new
data values or a new seed skip compilation. The cache keeps the most recently used
:data:`MAX_COMPILED_PROGRAMS` programs: each entry keeps its static settings (a target spec
and whatever its functions close over) alive.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

import jax

PyTree = Any

MAX_COMPILED_PROGRAMS = 64
TRACE_COUNTS: dict[str, int] = {}
_COMPILED: OrderedDict[Any, Any] = OrderedDict()


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
    key = (function, static, _signature(args))
    compiled = _COMPILED.get(key)
    if compiled is None:
        tic = time.perf_counter()
        jitted = jax.jit(function, static_argnums=tuple(range(len(static))))
        compiled = jitted.lower(*static, *args).compile()
        watch.compile_seconds += time.perf_counter() - tic
        _COMPILED[key] = compiled
        while len(_COMPILED) > MAX_COMPILED_PROGRAMS:
            _COMPILED.popitem(last=False)
    else:
        _COMPILED.move_to_end(key)
    return compiled(*args)


def clear_cache() -> None:
    """Forget every compiled program (the next run compiles again)."""
    _COMPILED.clear()
