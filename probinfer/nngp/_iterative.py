"""Matrix-free algebra with the exact kernel: block products, preconditioned CG and SLQ.

For ``n`` beyond what an ``n x n`` factorisation allows, ``C = K + (noise + jitter) I`` is
never formed: :func:`kernel_matvec` computes ``K v`` one block of rows at a time (memory
``O(block n)``, the blocks recomputed at every product), and :func:`solve_with_probes`
solves ``C a = b`` for several right-hand sides at once by preconditioned conjugate
gradients (Gardner et al., 2018, "GPyTorch: blackbox matrix-matrix GP inference"). With a
preconditioner ``P`` close to ``C`` (the inducing-point FITC covariance of
:mod:`probinfer.nngp._sparse`) few iterations are needed, each one pass over the kernel.

The same iterations give ``log |C|``: for probes ``z ~ N(0, P)``, ``w = P^{-1/2} z`` is
standard normal and CG on ``C`` preconditioned by ``P`` is Lanczos on
``A = P^{-1/2} C P^{-1/2}`` started at ``w``. Its tridiagonal matrix ``T`` (from the CG
coefficients) gives ``w^T log(A) w ~ |w|^2 e_1^T log(T) e_1`` (stochastic Lanczos
quadrature, Ubaru et al., 2017), and ``log |C| = log |P| + E[w^T log(A) w]``: the mean over
probes, with its standard error.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

from probinfer.driver._progress import progress_bar
from probinfer.nngp._kernel import BLOCK_ELEMENTS, AbstractKernel
from probinfer.nngp._layers import AbstractLayer


@eqx.filter_jit
def _block_product(kernel: AbstractKernel, rows: Array, x2: Array, vectors: Array) -> Array:
    return kernel(rows, x2) @ vectors


def kernel_matvec(
    kernel: AbstractKernel,
    x1: Float[Array, "n1 d"],
    x2: Float[Array, "n2 d"],
    vectors: Float[Array, "n2 r"],
    *,
    block_rows: int | None = None,
) -> Float[Array, "n1 r"]:
    """``K(x1, x2) @ vectors`` without the matrix: one block of ``x1``'s rows at a time.

    Args:
        kernel: the covariance function (its quadrature already fixed for the inputs).
        x1: ``(n1, d)`` row inputs.
        x2: ``(n2, d)`` column inputs.
        vectors: ``(n2, r)``.
        block_rows: rows per block; by default about 4M kernel entries (times the layers'
            memory factor) per block.

    Returns:
        The ``(n1, r)`` product.
    """
    num_rows = x1.shape[0]
    if block_rows is None:
        factor = kernel.memory_factor if isinstance(kernel, AbstractLayer) else 1
        block_rows = BLOCK_ELEMENTS // max(1, x2.shape[0] * factor)
    block_rows = max(1, min(int(block_rows), num_rows))
    num_blocks = -(-num_rows // block_rows)
    # Every block has the same shape (the last one edge-padded): one compilation.
    padded = jnp.pad(x1, ((0, num_blocks * block_rows - num_rows), (0, 0)), mode="edge")
    # Blocks run as separate top-level programs: XLA's CPU backend threads those, not the
    # body of a `lax.map`.
    blocks = [
        _block_product(kernel, padded[start : start + block_rows], x2, vectors)
        for start in range(0, num_blocks * block_rows, block_rows)
    ]
    return jnp.concatenate(blocks)[:num_rows]


class ProbeSolve(NamedTuple):
    """Solutions of ``C a = b`` by preconditioned CG, and what Lanczos learned on the way.

    Attributes:
        solutions: ``(n, r)`` approximate ``C^{-1} b`` per column.
        iterations: ``(r,)`` CG iterations each column took.
        relative_residuals: ``(r,)`` final ``|b - C a| / |b|`` per column.
        log_quadratures: ``(r,)`` ``e_1^T log(T) e_1`` per column (Lanczos tridiagonal
            ``T`` of the preconditioned operator started at the column's ``P^{-1/2} b``).
        probe_norms: ``(r,)`` ``|P^{-1/2} b|^2 = b^T P^{-1} b`` per column.
    """

    solutions: Array
    iterations: np.ndarray
    relative_residuals: np.ndarray
    log_quadratures: np.ndarray
    probe_norms: np.ndarray


class _CGState(NamedTuple):
    solution: Array
    residual: Array
    preconditioned: Array
    direction: Array
    inner: Array


@jax.jit
def _cg_update(
    state: _CGState, product: Array, active: Array, precondition_state: tuple
) -> tuple[_CGState, Array, Array]:
    """One CG step for every active column; frozen columns keep their state."""
    curvature = jnp.sum(state.direction * product, axis=0)
    alpha = jnp.where(active, state.inner / jnp.where(active, curvature, 1.0), 0.0)
    solution = state.solution + alpha[None, :] * state.direction
    residual = state.residual - alpha[None, :] * product
    preconditioned = _apply_preconditioner(precondition_state, residual)
    inner = jnp.sum(residual * preconditioned, axis=0)
    beta = jnp.where(active, inner / jnp.where(active, state.inner, 1.0), 0.0)
    columns = active[None, :]
    new = _CGState(
        solution,
        jnp.where(columns, residual, state.residual),
        jnp.where(columns, preconditioned, state.preconditioned),
        jnp.where(columns, preconditioned + beta[None, :] * state.direction, state.direction),
        jnp.where(active, inner, state.inner),
    )
    return new, alpha, beta


def _apply_preconditioner(precondition_state: tuple, vectors: Array) -> Array:
    """``P^{-1} v`` for ``P = Q + Lambda``, by Woodbury's identity.

    ``P^{-1} v = Lambda^{-1} v - Lambda^{-1} V^T B^{-1} V Lambda^{-1} v``.

    ``precondition_state`` is ``(projected, diagonal, inner_cholesky)``: ``V`` ``(m, n)``,
    ``Lambda``'s diagonal ``(n,)`` and ``L_B`` ``(m, m)``.
    """
    projected, diagonal, inner_cholesky = precondition_state
    scaled = vectors / diagonal[:, None]
    inner = jax.scipy.linalg.cho_solve((inner_cholesky, True), projected @ scaled)
    return scaled - (projected.T @ inner) / diagonal[:, None]


def _log_quadrature(alphas: np.ndarray, betas: np.ndarray) -> float:
    """``e_1^T log(T) e_1`` for the Lanczos matrix built from CG's step sizes."""
    steps = len(alphas)
    if steps == 0:
        return 0.0
    diagonal = 1.0 / alphas
    diagonal[1:] += betas[:-1] / alphas[:-1]
    off_diagonal = np.sqrt(np.maximum(betas[:-1], 0.0)) / alphas[:-1]
    eigenvalues, eigenvectors = np.linalg.eigh(
        np.diag(diagonal) + np.diag(off_diagonal, 1) + np.diag(off_diagonal, -1)
    )
    return float(np.sum(eigenvectors[0] ** 2 * np.log(np.maximum(eigenvalues, 1e-300))))


def solve_with_probes(
    operator: Callable[[Array], Array],
    precondition_state: tuple,
    right_hand_sides: Float[Array, "n r"],
    *,
    tolerance: float,
    max_iterations: int,
    progress: bool,
) -> ProbeSolve:
    """Solve ``C a = b`` for every column of ``b`` by CG preconditioned with the FITC ``P``.

    Args:
        operator: ``v -> C v`` for ``(n, r)`` blocks of vectors.
        precondition_state: ``(V, Lambda diagonal, L_B)`` of the FITC factorisation.
        right_hand_sides: ``(n, r)`` columns ``b``.
        tolerance: a column stops once ``|b - C a| <= tolerance |b|``.
        max_iterations: the most iterations (passes over the kernel).
        progress: show a progress bar (one step per pass).

    Returns:
        The :class:`ProbeSolve`.
    """
    rhs = jnp.asarray(right_hand_sides)
    rhs_norms = np.linalg.norm(np.asarray(rhs, np.float64), axis=0)
    preconditioned = jax.jit(_apply_preconditioner)(precondition_state, rhs)
    state = _CGState(
        jnp.zeros_like(rhs), rhs, preconditioned, preconditioned, jnp.sum(rhs * preconditioned, 0)
    )
    probe_norms = np.asarray(state.inner, np.float64)
    num_columns = rhs.shape[1]
    active = rhs_norms > 0
    iterations = np.zeros(num_columns, int)
    alphas: list[np.ndarray] = []
    betas: list[np.ndarray] = []
    relative = np.ones(num_columns)
    start = time.perf_counter()
    with progress_bar(progress, max_iterations, "conjugate gradients", rate_unit="passes/s") as bar:
        for step in range(max_iterations):
            if not active.any():
                break
            product = operator(state.direction)
            state, alpha, beta = _cg_update(state, product, jnp.asarray(active), precondition_state)
            alphas.append(np.asarray(alpha, np.float64))
            betas.append(np.asarray(beta, np.float64))
            iterations += active
            residual_norms = np.linalg.norm(np.asarray(state.residual, np.float64), axis=0)
            relative = residual_norms / np.where(rhs_norms > 0, rhs_norms, 1.0)
            active = active & (relative > tolerance)
            if bar is not None:
                rate = (step + 1) / (time.perf_counter() - start)
                bar.update(advance=1, rate=rate, fields={"residual": float(relative.max())})
    alpha_table = np.array(alphas).reshape(-1, num_columns)
    beta_table = np.array(betas).reshape(-1, num_columns)
    log_quadratures = np.array(
        [
            _log_quadrature(alpha_table[: iterations[j], j], beta_table[: iterations[j], j])
            for j in range(num_columns)
        ]
    )
    return ProbeSolve(state.solution, iterations, relative, log_quadratures, probe_norms)


def log_det_correction(log_quadratures: np.ndarray, probe_norms: np.ndarray) -> tuple[float, float]:
    """``log |C| - log |P|`` by stochastic Lanczos quadrature, with its standard error.

    Args:
        log_quadratures: ``e_1^T log(T) e_1`` per probe.
        probe_norms: ``|w|^2 = z^T P^{-1} z`` per probe.

    Returns:
        The estimate (mean over probes) and its standard error.
    """
    estimates = probe_norms * log_quadratures
    count = len(estimates)
    stderr = float(np.std(estimates, ddof=1) / math.sqrt(count)) if count > 1 else math.inf
    return float(np.mean(estimates)), stderr
