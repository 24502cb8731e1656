"""Kernel combinators: blocked Gibbs sweeps and compositions of kernels.

Both take kernels and return a :class:`~probinfer.mcmc.Kernel` whose state is the position
itself (a dict of blocks for :func:`gibbs`), so they nest: a Gibbs sweep can be composed
with a joint move, and a composition can be a Gibbs block.

- :func:`gibbs` updates one block of a dict position at a time, each by one step of a
  kernel built for that block's conditional given the current values of the others
  (Geman & Geman, 1984). Each block kernel is re-initialised at every sweep, because its
  target changed with the other blocks.
- :func:`compose` applies position kernels one after another. Each leaves the target
  invariant, so their composition does too.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import jax
from jaxtyping import PRNGKeyArray

from probinfer.mcmc._base import Kernel

PyTree = Any
ConditionalFn = Callable[[dict[str, PyTree]], Kernel]


def gibbs(conditionals: Mapping[str, ConditionalFn]) -> Kernel:
    """A blocked Gibbs sweep over a dict position, blocks in the mapping's order.

    Args:
        conditionals: ``block name -> make_kernel``; ``make_kernel(position)`` returns a
            :class:`~probinfer.mcmc.Kernel` on that block alone that leaves its conditional
            given ``position``'s other blocks invariant (it must not depend on the block's
            own current value, which is where the kernel starts). Block kernels' states
            must have a ``position`` field (every kernel here does).

    Returns:
        A :class:`~probinfer.mcmc.Kernel` whose state is the dict position and whose info
        is a dict of the blocks' infos.

    Raises:
        ValueError: for an empty mapping.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from probinfer import mcmc
        >>> def logdensity(p):  # a correlated 2-d Gaussian on blocks "a" and "b"
        ...     return -(p["a"] ** 2 - 1.6 * p["a"] * p["b"] + p["b"] ** 2) / 0.72
        >>> sweep = mcmc.gibbs({
        ...     "a": lambda p: mcmc.slice_sampler(lambda a: logdensity({**p, "a": a}), 1.0),
        ...     "b": lambda p: mcmc.slice_sampler(lambda b: logdensity({**p, "b": b}), 1.0),
        ... })
        >>> position, infos = sweep.step(jax.random.key(0), {"a": 0.0, "b": 0.0})
        >>> sorted(infos)
        ['a', 'b']
    """
    if not conditionals:
        raise ValueError("`gibbs` needs at least one block: pass {'name': make_kernel, ...}.")
    blocks = tuple(conditionals.items())

    def init(position: dict[str, PyTree]) -> dict[str, PyTree]:
        missing = [name for name, _ in blocks if name not in position]
        if missing:
            raise ValueError(
                f"the position has no block(s) {missing}; its keys are {sorted(position)}."
            )
        return dict(position)

    def step(
        key: PRNGKeyArray, position: dict[str, PyTree]
    ) -> tuple[dict[str, PyTree], dict[str, Any]]:
        position = dict(position)
        infos = {}
        for (name, make_kernel), block_key in zip(
            blocks, jax.random.split(key, len(blocks)), strict=True
        ):
            kernel = make_kernel(position)
            block_state, infos[name] = kernel.step(block_key, kernel.init(position[name]))
            position[name] = block_state.position
        return position, infos

    return Kernel(init, step)


def compose(*kernels: Kernel) -> Kernel:
    """Apply position kernels one after another (each to the position the last returned).

    Args:
        *kernels: kernels whose state is the position itself (as :func:`gibbs` and
            :func:`compose` return), all on the same position structure.

    Returns:
        A :class:`~probinfer.mcmc.Kernel` whose info is the tuple of the kernels' infos.

    Raises:
        ValueError: when no kernel is given.
    """
    if not kernels:
        raise ValueError("`compose` needs at least one kernel.")

    def step(key: PRNGKeyArray, position: PyTree) -> tuple[PyTree, tuple[Any, ...]]:
        infos = []
        for kernel, kernel_key in zip(kernels, jax.random.split(key, len(kernels)), strict=True):
            position, info = kernel.step(kernel_key, position)
            infos.append(info)
        return position, tuple(infos)

    return Kernel(kernels[0].init, step)
