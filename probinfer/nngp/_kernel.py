"""Evaluating a layer stack's kernel: full matrices in row blocks, or the diagonal.

Every layer acts elementwise on the pair covariances once the per-input variances are
known, so a matrix is computed one block of rows at a time and peak memory is a few
``block_size x n2`` arrays plus the output, whatever ``n1``. Outside ``jit`` each block is
its own program call (multi-threaded on CPU); under a trace (``jit``, ``grad``) the blocks
run in one ``lax.map``.
"""

from __future__ import annotations

import abc
import functools
from typing import TYPE_CHECKING, Literal, NamedTuple

import equinox as eqx
import jax
import jax.core
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from probinfer.nngp._checks import check_inputs

if TYPE_CHECKING:
    from probinfer.nngp._layers import AbstractLayer

KernelKind = Literal["nngp", "ntk"]
# Elements per block of a kernel matrix: ~16 MB per float32 temporary.
BLOCK_ELEMENTS = 2**22


class AbstractKernel(eqx.Module):
    """A covariance function: ``kernel(x1, x2)`` is a matrix, ``kernel.diagonal(x)`` a vector.

    The interface every process in :mod:`probinfer.nngp` needs. NNGP layer stacks
    (:class:`~probinfer.nngp.AbstractLayer`) and the stationary kernels implement it.
    """

    @abc.abstractmethod
    def __call__(
        self, x1: Float[ArrayLike, "n1 d"], x2: Float[ArrayLike, "n2 d"] | None = None
    ) -> Float[Array, "n1 n2"]:
        """The ``(n1, n2)`` covariance matrix (``x2`` defaults to ``x1``)."""

    @abc.abstractmethod
    def diagonal(self, x: Float[ArrayLike, "n d"]) -> Float[Array, " n"]:
        """``k(x_i, x_i)`` for every row of ``x``."""


class KernelState(NamedTuple):
    """Covariances of two inputs' pre-activations at one layer, broadcastable elementwise.

    For a block of pairs, ``cov`` and ``ntk`` are ``(n1, n2)``, ``var1`` is ``(n1, 1)``
    and ``var2`` is ``(1, n2)``; for the diagonal, all four are ``(n,)``.

    Attributes:
        cov: covariance of the pre-activations of ``x1[i]`` and ``x2[j]`` (the NNGP kernel).
        var1: variance of ``x1[i]``'s pre-activation.
        var2: variance of ``x2[j]``'s pre-activation.
        ntk: the neural tangent kernel of the pair.
    """

    cov: Array
    var1: Array
    var2: Array
    ntk: Array


def input_state(x1: Array, x2: Array) -> KernelState:
    """The input layer's state ``k0(x, x') = x . x' / d`` for all pairs of rows."""
    num_features = x1.shape[-1]
    cov = x1 @ x2.T / num_features
    var1 = jnp.sum(x1**2, axis=-1, keepdims=True) / num_features
    var2 = jnp.sum(x2**2, axis=-1, keepdims=True).T / num_features
    return KernelState(cov, var1, var2, jnp.zeros_like(cov))


def input_state_diagonal(x: Array) -> KernelState:
    """The input layer's state for each row paired with itself."""
    var = jnp.sum(x**2, axis=-1) / x.shape[-1]
    return KernelState(var, var, var, jnp.zeros_like(var))


def _pick(state: KernelState, kind: KernelKind) -> Array:
    return state.cov if kind == "nngp" else state.ntk


def _check_kind(kind: str) -> None:
    if kind not in ("nngp", "ntk"):
        raise ValueError(f"`kind` must be 'nngp' or 'ntk', got {kind!r}.")


def _block(layer: AbstractLayer, rows: Array, x2: Array, kind: KernelKind) -> Array:
    return _pick(layer.apply(input_state(rows, x2)), kind)


@eqx.filter_jit
def _matrix_traced(
    layer: AbstractLayer, x1: Array, x2: Array, kind: KernelKind, block_rows: int
) -> Array:
    """All blocks in one program (``lax.map``): differentiable, usable inside ``jit``."""
    num_rows = x1.shape[0]
    num_blocks = -(-num_rows // block_rows)
    # Edge padding (repeat the last row): zero rows would have zero variance.
    padded = jnp.pad(x1, ((0, num_blocks * block_rows - num_rows), (0, 0)), mode="edge")
    blocks = padded.reshape(num_blocks, block_rows, x1.shape[1])
    out = jax.lax.map(lambda rows: _block(layer, rows, x2, kind), blocks)
    return out.reshape(num_blocks * block_rows, x2.shape[0])[:num_rows]


_block_program = eqx.filter_jit(_block)


@functools.partial(jax.jit, donate_argnums=0)
def _write_block(out: Array, block: Array, start: Array) -> Array:
    return jax.lax.dynamic_update_slice(out, block, (start, 0))


def _matrix_eager(
    layer: AbstractLayer, x1: Array, x2: Array, kind: KernelKind, block_rows: int
) -> Array:
    """One program call per block, written in place into the (donated) output.

    XLA's CPU backend spreads a top-level fusion over threads but runs the body of a
    ``lax.map`` loop on one, so outside ``jit`` this is ~2x faster on two cores; peak
    memory is the output plus one block's temporaries.
    """
    num_rows = x1.shape[0]
    out = jnp.zeros((num_rows, x2.shape[0]), jnp.result_type(x1, x2))
    for start in range(0, num_rows, block_rows):
        rows = x1[start : start + block_rows]
        # Computing and writing are separate programs: XLA runs a fusion that ends in a
        # dynamic_update_slice on one thread.
        out = _write_block(out, _block_program(layer, rows, x2, kind), jnp.asarray(start))
    return out


def _is_traced(tree: object) -> bool:
    return any(isinstance(leaf, jax.core.Tracer) for leaf in jax.tree_util.tree_leaves(tree))


@eqx.filter_jit
def _diagonal(layer: AbstractLayer, x: Array, kind: KernelKind) -> Array:
    return _pick(layer.apply(input_state_diagonal(x)), kind)


def _as_float(x: ArrayLike) -> Array:
    array = jnp.asarray(x)
    return array if jnp.issubdtype(array.dtype, jnp.floating) else array.astype(float)


def kernel_matrix(
    layer: AbstractLayer,
    x1: Float[ArrayLike, "n1 d"],
    x2: Float[ArrayLike, "n2 d"] | None = None,
    *,
    kind: KernelKind = "nngp",
    block_size: int | None = None,
) -> Float[Array, "n1 n2"]:
    """The kernel between every row of ``x1`` and every row of ``x2``.

    Args:
        layer: the network (any layer or layer stack).
        x1: inputs, ``(n1, d)``.
        x2: inputs, ``(n2, d)``; ``None`` means ``x1``.
        kind: ``"nngp"`` (the output covariance) or ``"ntk"`` (the neural tangent kernel).
        block_size: rows of ``x1`` per block; by default about ``4M / (n2 * cost)`` where
            ``cost`` is the layers' per-pair memory factor.

    Returns:
        The ``(n1, n2)`` kernel matrix.

    Raises:
        ValueError: on inputs of the wrong rank, mismatched feature counts or NaNs.
    """
    _check_kind(kind)
    check_inputs(x1, "x1")
    x1 = _as_float(x1)
    if x2 is None:
        x2 = x1
    else:
        check_inputs(x2, "x2", num_features=x1.shape[1])
        x2 = _as_float(x2)
    traced = _is_traced((layer, x1, x2))
    if not traced:
        layer = resolve_layer(layer, x1 if x2 is x1 else jnp.concatenate([x1, x2]))
    if block_size is None:
        block_size = BLOCK_ELEMENTS // max(1, x2.shape[0] * layer.memory_factor)
    block_size = max(1, min(int(block_size), x1.shape[0]))
    if traced:
        return _matrix_traced(layer, x1, x2, kind, block_size)
    return _matrix_eager(layer, x1, x2, kind, block_size)


def kernel_diagonal(
    layer: AbstractLayer, x: Float[ArrayLike, "n d"], *, kind: KernelKind = "nngp"
) -> Float[Array, " n"]:
    """The kernel of each row of ``x`` with itself, ``k(x_i, x_i)``, without the matrix.

    Args:
        layer: the network.
        x: inputs, ``(n, d)``.
        kind: ``"nngp"`` or ``"ntk"``.

    Returns:
        The ``(n,)`` diagonal.
    """
    _check_kind(kind)
    check_inputs(x, "x")
    x = _as_float(x)
    if not _is_traced((layer, x)):
        layer = resolve_layer(layer, x)
    return _diagonal(layer, x, kind)


def resolve_layer(layer: AbstractLayer, x: Array) -> AbstractLayer:
    """``layer`` with its numerical settings fixed for the concrete inputs ``x``.

    Quadrature layers choose their node count from the largest pre-activation variance of
    any row of ``x`` at their depth (a diagonal pass, ``O(n)``); other layers are unchanged,
    and a stack without quadrature layers is returned as it is, at no cost.
    """
    if not layer.needs_resolution:
        return layer
    state = input_state_diagonal(x)
    if isinstance(state.var1, jax.core.Tracer):
        # Concrete arrays closed over inside an outer `jit` are staged too: the variances
        # are unknown, and quadrature layers keep their traced node count.
        return layer
    resolved, _ = layer.resolve(state)
    return resolved
