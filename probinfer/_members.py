"""How the independent members of a population (MCMC chains) are mapped inside a program.

- ``vectorized``: ``vmap``, one program for all members. A loop whose length differs per
  member (a NUTS trajectory) makes them move in lock step, each paying for the longest; the
  driver's flat loop over a ``StagedStep`` avoids that, and :func:`member_cond` keeps a
  branch that only some members take a real branch.
- ``sequential``: ``lax.map``, members one after another inside the program, each paying
  only for its own loop.
- ``parallel-vectorized`` / ``parallel-sequential``: members split evenly over all devices
  (``shard_map`` over a one-axis mesh), then vectorized or sequential on each device, so a
  device never waits for another's members.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Callable, Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

MEMBER_MAPS = ("vectorized", "sequential", "parallel-vectorized", "parallel-sequential")
MEMBER_AXIS = "members"  # the vmap axis name of vectorized members
DEVICE_AXIS = "devices"  # the mesh axis name of the parallel member maps
# While a member function is traced: whether it is vectorized (MEMBER_AXIS is bound), and
# the mask of the members whose results count (None: all), set by `members_where`.
_TRACING: contextvars.ContextVar[tuple[bool, Any]] = contextvars.ContextVar(
    "probinfer_members", default=(False, None)
)


@contextlib.contextmanager
def _tracing_vectorized() -> Iterator[None]:
    token = _TRACING.set((True, None))
    try:
        yield
    finally:
        _TRACING.reset(token)


@contextlib.contextmanager
def members_where(mask: Array) -> Iterator[None]:
    """While tracing inside: :func:`any_member` and :func:`member_cond` count only the
    members where ``mask`` holds (the caller discards the others' results).

    Args:
        mask: this member's flag, a boolean scalar.
    """
    vectorized, outer = _TRACING.get()
    token = _TRACING.set((vectorized, mask if outer is None else outer & mask))
    try:
        yield
    finally:
        _TRACING.reset(token)


def tree_where(pred: Array, on_true: Any, on_false: Any) -> Any:
    """``on_true`` where ``pred`` holds, else ``on_false``, leaf by leaf (same structure)."""
    return jax.tree.map(lambda a, b: jnp.where(pred, a, b), on_true, on_false)


def _masked(pred: Array | np.ndarray) -> Array:
    mask = _TRACING.get()[1]
    pred = jnp.asarray(pred, bool)
    return pred if mask is None else pred & mask


def any_member(pred: Array | np.ndarray) -> Array:
    """Whether ``pred`` holds for some member: the same value for every member.

    Inside a function mapped by :func:`map_members` with ``vectorized`` members this is a
    reduction over the members, so ``lax.cond`` on it stays a real branch under ``vmap``
    (a ``lax.cond`` on a predicate that differs between members becomes a ``select``:
    both branches run for every member at every call). Elsewhere it is ``pred`` itself.

    Args:
        pred: this member's predicate, a boolean scalar.

    Returns:
        A boolean scalar.
    """
    pred = _masked(pred)
    if not _TRACING.get()[0]:
        return pred
    return jax.lax.psum(pred.astype(jnp.int32), MEMBER_AXIS) > 0


def member_cond(
    pred: Array | np.ndarray,
    true_fn: Callable[..., Any],
    false_fn: Callable[..., Any],
    *operands: Any,
) -> Any:
    """``lax.cond`` on one member's predicate that stays a branch for vectorized members.

    ``true_fn`` runs (for every member, its result kept where ``pred`` holds) only when
    :func:`any_member` ``(pred)``, and is skipped otherwise; for members not vectorized it
    is ``lax.cond``. Use it for rare, costly work (a new mass matrix after a window).

    Args:
        pred: this member's predicate, a boolean scalar.
        true_fn: the branch taken where ``pred`` holds.
        false_fn: the other branch (same output structure).
        *operands: passed to both.

    Returns:
        The taken branch's output.
    """
    pred = _masked(pred)
    if not _TRACING.get()[0]:
        return jax.lax.cond(pred, true_fn, false_fn, *operands)

    def where_pred(*ops: Any) -> Any:
        return tree_where(pred, true_fn(*ops), false_fn(*ops))

    return jax.lax.cond(any_member(pred), where_pred, false_fn, *operands)


def map_members(fn: Callable[..., Any], method: str) -> Callable[..., Any]:
    """Apply a one-member function to arguments with a leading member axis.

    Args:
        fn: a function of one member's arguments.
        method: one of :data:`MEMBER_MAPS`.

    Returns:
        The mapped function.

    Raises:
        ValueError: for an unknown method.
    """
    if method == "sequential":
        return lambda *args: jax.lax.map(lambda a: fn(*a), args)
    if method == "vectorized":

        def traced(*args: Any) -> Any:
            with _tracing_vectorized():
                return fn(*args)

        return jax.vmap(traced, axis_name=MEMBER_AXIS)
    if method not in MEMBER_MAPS:
        raise ValueError(f"unknown member map {method!r}; use one of {MEMBER_MAPS}.")
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), (DEVICE_AXIS,))
    per_device = map_members(fn, method.removeprefix("parallel-"))
    spec = jax.sharding.PartitionSpec(DEVICE_AXIS)
    # Members are independent (`any_member` reduces over one device's members only), so
    # replication checking has nothing to prove.
    return jax.shard_map(per_device, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
