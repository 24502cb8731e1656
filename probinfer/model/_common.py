"""Helpers shared by the model front ends: leaf names and jittered starting points."""

from __future__ import annotations

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
