"""Helpers shared by the model front ends: leaf names, jittered starting points, and
errors of models that cannot be traced."""

from __future__ import annotations

import contextlib
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
from jaxtyping import PRNGKeyArray

PyTree = Any

INIT_RADIUS = 2.0
MAX_INIT_TRIES = 100


def leaf_names(tree: PyTree) -> tuple[str, ...]:
    """Dotted names of a pytree's leaves (dict keys, indices); a bare array is ``x``.

    Args:
        tree: a pytree of arrays.

    Returns:
        One name per leaf, in leaf order.
    """
    paths = jax.tree_util.tree_leaves_with_path(tree)
    if len(paths) == 1 and not paths[0][0]:
        return ("x",)
    names = []
    for path, _ in paths:
        parts = [str(getattr(k, "key", getattr(k, "idx", getattr(k, "name", k)))) for k in path]
        names.append(".".join(parts))
    return tuple(names)


def jitter(key: PRNGKeyArray, tree: PyTree, num_chains: int, around: PyTree | None) -> PyTree:
    """Uniform(-2, 2) draws shaped like ``tree``, one per chain, added to ``around`` if given.

    Args:
        key: PRNG key.
        tree: a pytree of arrays giving shapes and dtypes.
        num_chains: length of the new leading axis.
        around: a pytree like ``tree`` to centre the draws on, or None.

    Returns:
        A pytree like ``tree`` with a leading axis of length ``num_chains``.
    """
    leaves, treedef = jax.tree.flatten(tree)
    keys = jax.random.split(key, len(leaves))
    centers = jax.tree.leaves(around) if around is not None else [None] * len(leaves)
    out = []
    for k, leaf, center in zip(keys, leaves, centers, strict=True):
        noise = jax.random.uniform(
            k, (num_chains, *jnp.shape(leaf)), jnp.result_type(leaf), -INIT_RADIUS, INIT_RADIUS
        )
        out.append(noise if center is None else jnp.expand_dims(center, 0) + noise)
    return jax.tree.unflatten(treedef, out)


# What JAX raises when a model turns a traced value into a Python one.
TRACER_ERRORS = (
    jax.errors.ConcretizationTypeError,  # `if x > 0`, `float(x)` (bool conversion included)
    jax.errors.TracerIntegerConversionError,  # `int(x)`, `range(n)` with a traced `n`
    jax.errors.TracerArrayConversionError,  # `np.asarray(x)`, NumPy functions
    jax.errors.NonConcreteBooleanIndexError,  # `x[x > 0]`
)


class UntraceableError(TypeError):
    """A model or log density turned a traced value into a Python or NumPy value."""


@contextlib.contextmanager
def explain_tracer_errors(
    what: str, fix: str = "`jnp.where`, `jax.lax.cond` or `jnp` functions"
) -> Iterator[None]:
    """Re-raise JAX's tracer-conversion errors from ``what`` with the fix.

    Every sampler evaluates a model under ``jit``/``vmap``, where a sampled value is a
    tracer: Python control flow or a NumPy call on it fails. JAX's own message (which
    names the line) is kept below ours.

    Args:
        what: the code being run, as the message names it (e.g. "the model").
        fix: what to write instead.

    Raises:
        UntraceableError: in place of a tracer-conversion error.
    """
    try:
        yield
    except TRACER_ERRORS as error:
        where = user_line(error)
        raise UntraceableError(
            f"{what} turns a traced value (a sampled value, or data) into a Python or "
            "NumPy value (`if`/`while` on it, `float()`, `int()`, `np.` functions, "
            f"boolean-mask indexing){'' if where is None else ' at ' + where}, which "
            f"cannot run under `jax.jit`: use {fix} instead. JAX's message:\n{error}"
        ) from error


# Set on an exception that already says which user code raised it, so that an outer
# front end (a `LogDensity` wrapping a NumPyro model's density) does not say it again.
_EXPLAINED = "_probinfer_explained"


def with_context(error: Exception, message: str) -> Exception:
    """An exception of ``error``'s type carrying ``message`` (raise it ``from error``).

    The type is kept, so that callers catching it still do; a type that cannot be built
    from one message (a user's exception with other required arguments) becomes a
    ``ValueError``.

    Args:
        error: the exception raised by user code.
        message: the new message (it should include ``error``'s own).

    Returns:
        The new exception, marked as explained.
    """
    try:
        new = type(error)(message)
    except Exception:  # e.g. `__init__(self, a, b)`
        new = ValueError(message)
    setattr(new, _EXPLAINED, True)
    return new


@contextlib.contextmanager
def explain_trace_failures(what: str) -> Iterator[None]:
    """Re-raise any exception of ``what`` other than a tracer conversion, naming ``what``.

    Use inside :func:`explain_tracer_errors` where user code is traced. The code ran on
    concrete values (or under `jax.eval_shape`) before, so a failure here comes from the
    tracing itself: `jax.jit`, `jax.vmap` or `jax.grad`.

    Args:
        what: the user code being traced, as the message names it (e.g. "the model 'm'").

    Raises:
        Exception: ``error``'s type (see :func:`with_context`), naming ``what``, the user
            line that raised, and the original message.
    """
    try:
        yield
    except (*TRACER_ERRORS, UntraceableError):
        raise
    except Exception as error:
        if getattr(error, _EXPLAINED, False):
            raise
        where = user_line(error)
        raise with_context(
            error,
            f"{what} raised {type(error).__name__} when probinfer traced it (under "
            "`jax.jit`, `jax.vmap` and `jax.grad`, where sampled values and data are "
            f"tracers, not numbers){'' if where is None else ' at ' + where}: {error}. "
            "It must run on traced arrays (no Python exceptions that depend on their "
            "types or values) and be differentiable.",
        ) from error


def user_line(error: BaseException) -> str | None:
    """``file:line (`code`)`` of the innermost frame of ``error`` outside the libraries."""
    numpyro = sys.modules.get("numpyro")
    libraries = tuple(
        str(Path(file).parent)
        for file in (jax.__file__, getattr(numpyro, "__file__", None))
        if file is not None
    ) + (str(Path(__file__).parents[1]),)  # probinfer
    libraries = tuple(os.path.join(directory, "") for directory in libraries)
    frames = [
        frame
        for frame in traceback.extract_tb(error.__traceback__)
        if not frame.filename.startswith(libraries) and "<frozen" not in frame.filename
    ]
    if not frames:
        return None
    frame = frames[-1]
    return f"{frame.filename}:{frame.lineno} (`{(frame.line or '').strip()}`)"
