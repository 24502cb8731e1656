"""How the independent members of a population (MCMC chains) are mapped inside a program.

- ``vectorized``: ``vmap``, one program for all members; with loops whose length differs
  per member (NUTS trajectories) the members move in lock step, each paying for the longest.
- ``sequential``: ``lax.map``, members one after another inside the program, each paying
  only for its own loop.
- ``parallel-vectorized`` / ``parallel-sequential``: members split evenly over all devices
  (``shard_map`` over a one-axis mesh), then vectorized or sequential on each device, so a
  device never waits for another's members.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import numpy as np

MEMBER_MAPS = ("vectorized", "sequential", "parallel-vectorized", "parallel-sequential")


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
        return jax.vmap(fn)
    if method not in MEMBER_MAPS:
        raise ValueError(f"unknown member map {method!r}; use one of {MEMBER_MAPS}.")
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("members",))
    per_device = map_members(fn, method.removeprefix("parallel-"))
    spec = jax.sharding.PartitionSpec("members")
    # Members are independent: no collective, so replication checking has nothing to prove.
    return jax.shard_map(per_device, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)
