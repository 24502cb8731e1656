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
coefficients) gives ``u^T log(A) u ~ e_1^T log(T) e_1`` for the unit vector ``u = w / |w|``
(stochastic Lanczos quadrature, Ubaru et al., 2017). ``u`` is uniform on the sphere, so
``E[u^T log(A) u] = tr(log A) / n`` and ``log |C| = log |P| + n E[u^T log(A) u]``: the mean
over probes, with its standard error. ``log |P|`` is the preconditioner's own
(:meth:`LowRankPreconditioner.log_det`), so that rounding in its factorisation changes
how fast CG converges and, through ``U``'s departure from orthonormality (of the order of
``eps`` per direction), the estimate's mean only negligibly. Hutchinson's
``|w|^2 e_1^T log(T) e_1`` has the same mean and never less variance: ``|w|`` is
independent of ``u`` and the quadrature (CG's stopping rule included, which is
scale-free) depends on ``u`` alone, so the unit-probe estimate is Hutchinson's averaged
over ``|w|`` (:func:`log_det_correction`).
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
from jaxtyping import Array, Float, PRNGKeyArray

from probinfer.driver._progress import progress_bar
from probinfer.nngp._kernel import BLOCK_ELEMENTS, AbstractKernel
from probinfer.nngp._layers import AbstractLayer


@eqx.filter_jit
def _block_product(
    kernel: AbstractKernel, rows: Array, x2: Array, vectors: Array, level: Array
) -> Array:
    return (kernel(rows, x2) - level) @ vectors


# Points (evenly spaced rows) whose kernel entries estimate the kernel's mean level.
LEVEL_POINTS = 256


def kernel_level(
    kernel: AbstractKernel, x1: Float[Array, "n1 d"], x2: Float[Array, "n2 d"]
) -> Float[Array, ""]:
    """The mean of ``K(x1, x2)``'s entries, estimated on at most ``LEVEL_POINTS`` evenly
    spaced rows and columns: the constant :func:`kernel_matvec` takes out of its blocks."""
    if x1.shape[0] == 0 or x2.shape[0] == 0:
        return jnp.zeros((), x1.dtype)
    # Indices on the host (the shapes are static: no device op).
    rows = np.linspace(0, x1.shape[0] - 1, min(LEVEL_POINTS, x1.shape[0])).astype(int)
    columns = np.linspace(0, x2.shape[0] - 1, min(LEVEL_POINTS, x2.shape[0])).astype(int)
    return jnp.mean(kernel(x1[rows], x2[columns]))


@jax.jit
def column_sums(vectors: Float[Array, "n r"]) -> Float[Array, " r"]:
    """Sums of the columns, each to the working precision of the sum itself.

    Compensated pairwise summation (Knuth's TwoSum at every pairing; Ogita, Rump and
    Oishi, 2005): the error is about ``eps |sum| + (log2(n) eps)^2 sum |v_i|`` rather than
    ``eps sum |v_i|``, which matters when the sum is far smaller than its terms. A column
    with an infinite term (or whose partial sums overflow) sums to its plain pairwise sum
    (inf or NaN).
    """
    total = vectors
    error = jnp.zeros_like(vectors)
    while total.shape[0] > 1:
        if total.shape[0] % 2:
            pad = ((0, 1), (0, 0))
            total, error = jnp.pad(total, pad), jnp.pad(error, pad)
        first, second = total[0::2], total[1::2]
        total = first + second
        virtual = total - first
        rounding = (first - (total - virtual)) + (second - virtual)
        error = error[0::2] + error[1::2] + rounding
    if not vectors.shape[0]:
        return jnp.zeros(vectors.shape[1:], vectors.dtype)
    # A non-finite term (or an overflow) makes the corrections inf - inf = NaN: give the
    # plain pairwise sum's inf or NaN instead.
    return jnp.where(jnp.isfinite(total), total + error, total)[0]


def kernel_matvec(
    kernel: AbstractKernel,
    x1: Float[Array, "n1 d"],
    x2: Float[Array, "n2 d"],
    vectors: Float[Array, "n2 r"],
    *,
    level: float | Array | None = None,
    block_rows: int | None = None,
) -> Float[Array, "n1 r"]:
    """``K(x1, x2) @ vectors`` without the matrix: one block of ``x1``'s rows at a time.

    Each block computes ``(K - c) v`` and the product adds ``c 1 (1^T v)``: the same
    product in exact arithmetic, but a block's rounding scales with ``|K - c|`` instead of
    ``|K|``. A kernel with a large constant part (a network kernel with a large bias
    variance: entries 76-95 at n = 50,000, noise 0.033) otherwise loses the noise-sized
    directions of ``K v`` to float32 rounding (error 0.020 |v|, against 0.0013 |v| centred
    on the mean entry), and CG on ``K + noise I`` breaks down. ``1^T v`` is summed by
    :func:`column_sums`, since ``c sqrt(n1)`` times a plain sum's error is as large again.

    Args:
        kernel: the covariance function (its quadrature already fixed for the inputs).
        x1: ``(n1, d)`` row inputs.
        x2: ``(n2, d)`` column inputs.
        vectors: ``(n2, r)``.
        level: the constant ``c`` taken out of every block; by default
            :func:`kernel_level` (pass it when the same kernel serves many products).
        block_rows: rows per block; by default about 4M kernel entries per block (divided
            by the layers' memory factor).

    Returns:
        The ``(n1, r)`` product.
    """
    num_rows = x1.shape[0]
    if num_rows == 0 or x2.shape[0] == 0:
        return jnp.zeros((num_rows, vectors.shape[1]), jnp.result_type(x1, vectors))
    if level is None:
        level = kernel_level(kernel, x1, x2)
    level = jnp.asarray(level, jnp.result_type(x1, vectors))
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
        _block_product(kernel, padded[start : start + block_rows], x2, vectors, level)
        for start in range(0, num_blocks * block_rows, block_rows)
    ]
    return jnp.concatenate(blocks)[:num_rows] + level * column_sums(vectors)[None, :]


class ProbeSolve(NamedTuple):
    """Solutions of ``C a = b`` by preconditioned CG, and what Lanczos learned on the way.

    Attributes:
        solutions: ``(n, r)`` approximate ``C^{-1} b`` per column (for solved columns,
            the one with the lowest recomputed residual over CG's run and restarts).
        iterations: ``(r,)`` CG iterations each column took in its first run (the length
            of its Lanczos matrix).
        relative_residuals: ``(r,)`` ``|b - C a| / |b|`` per column of ``solutions``,
            computed afresh for solved columns (CG's own residual drifts from it in finite
            precision) and CG's own for probes.
        log_quadratures: ``(r,)`` ``e_1^T log(T) e_1`` per column (Lanczos tridiagonal
            ``T`` of the preconditioned operator started at the column's ``P^{-1/2} b``).
        passes: CG iterations in all (passes over the kernel), restarts included.
        converged: whether every column met its tolerance (see :func:`solve_with_probes`).
        stalled: whether a solved column ended above ``ROUNDING_SLACK`` times the tolerance
            because a restart failed to halve its recomputed residual: rounding in the
            working precision, which more CG cannot remove, stopped it.
    """

    solutions: Array
    iterations: np.ndarray
    relative_residuals: np.ndarray
    log_quadratures: np.ndarray
    passes: int
    converged: bool
    stalled: bool


class _CGState(NamedTuple):
    solution: Array
    residual: Array
    preconditioned: Array
    direction: Array
    inner: Array


@jax.jit
def _cg_update(
    state: _CGState, product: Array, active: Array, preconditioner: LowRankPreconditioner
) -> tuple[_CGState, Array, Array]:
    """One CG step for every active column; frozen columns keep their state."""
    curvature = jnp.sum(state.direction * product, axis=0)
    alpha = jnp.where(active, state.inner / jnp.where(active, curvature, 1.0), 0.0)
    columns = active[None, :]
    # Frozen columns are masked, not multiplied by a zero step: 0 * NaN would spread.
    solution = jnp.where(columns, state.solution + alpha[None, :] * state.direction, state.solution)
    residual = state.residual - alpha[None, :] * product
    preconditioned: Array = apply_preconditioner(preconditioner, residual)
    inner = jnp.sum(residual * preconditioned, axis=0)
    beta = jnp.where(active, inner / jnp.where(active, state.inner, 1.0), 0.0)
    new = _CGState(
        solution,
        jnp.where(columns, residual, state.residual),
        jnp.where(columns, preconditioned, state.preconditioned),
        jnp.where(columns, preconditioned + beta[None, :] * state.direction, state.direction),
        jnp.where(active, inner, state.inner),
    )
    return new, alpha, beta


class LowRankPreconditioner(NamedTuple):
    """``P = D^{1/2} (I + U diag(s^2) U^T) D^{1/2}``, applied as ``P^{-1} = S S^T``.

    ``U`` has orthonormal columns, so ``P^{-1} = S S^T`` with ``S = D^{-1/2} H`` and
    ``H = I - U diag(1 - (1 + s^2)^{-1/2}) U^T`` (symmetric, ``H^2 = (I + U s^2 U^T)^{-1}``);
    :func:`apply_preconditioner` applies ``H`` twice. Woodbury's one-step form
    ``D^{-1} - D^{-1} V^T B^{-1} V D^{-1}`` subtracts two vectors that agree to
    ``1 / (1 + s^2)``: with ``s^2`` near ``1e8`` (a kernel with a large constant part against
    a small noise, n = 50,000) float32 loses every digit and ``P^{-1}`` stops being positive
    definite, which breaks CG. Through ``H`` the cancellation is to ``(1 + s^2)^{-1/2}`` only,
    and the applied operator is ``S S^T`` for the computed ``S``: positive semi-definite
    whatever the rounding.

    PCG with any ``S`` of ``S S^T = P^{-1}`` is CG on ``S^T C S`` (the same spectrum as
    ``P^{-1} C``) started at ``S^T z``; for ``z ~ N(0, P)`` that start is standard normal, so
    the stochastic Lanczos quadrature of :mod:`probinfer.nngp._iterative` holds unchanged.

    Attributes:
        basis: ``(n, m)`` ``U``, orthonormal columns.
        spectrum: ``(m,)`` ``s^2 >= 0``.
        diagonal: ``(n,)`` ``D > 0``.
    """

    basis: Array
    spectrum: Array
    diagonal: Array

    def log_det(self) -> Array:
        """``log |P|`` of this factorisation: the one CG's quadrature is relative to."""
        return jnp.sum(jnp.log(self.diagonal)) + jnp.sum(jnp.log1p(self.spectrum))

    def sample(self, key: PRNGKeyArray, num_samples: int) -> Float[Array, "n r"]:
        """``(n, num_samples)`` draws from ``N(0, P)``: probes for the quadrature."""
        key_low_rank, key_diagonal = jax.random.split(key)
        dtype = self.diagonal.dtype
        low_rank = jax.random.normal(key_low_rank, (self.spectrum.shape[0], num_samples), dtype)
        independent = jax.random.normal(key_diagonal, (self.diagonal.shape[0], num_samples), dtype)
        white = self.basis @ (jnp.sqrt(self.spectrum)[:, None] * low_rank) + independent
        return jnp.sqrt(self.diagonal)[:, None] * white


@jax.jit
def low_rank_preconditioner(
    factor: Float[Array, "m n"], diagonal: Float[Array, " n"]
) -> LowRankPreconditioner:
    """The :class:`LowRankPreconditioner` of ``P = V^T V + diag(D)``.

    With ``W = V D^{-1/2}``, ``P = D^{1/2} (I + W^T W) D^{1/2}``; a thin QR of ``W^T`` and an
    SVD of its ``(min(n, m), m)`` triangle give ``W^T = U diag(s) G^T``. ``O(n m^2)``, about
    six times the flops of the FITC factorisation's ``B``; singular values, not the
    eigenvalues of ``W W^T``, so that small ``s`` keep their accuracy beside a large one.
    Each application (:func:`apply_preconditioner`) is four products of ``U`` with the
    ``r`` vectors, ``4 n m r`` flops: small against a pass over the kernel.
    """
    orthonormal, triangle = jnp.linalg.qr((factor / jnp.sqrt(diagonal)[None, :]).T)
    rotation, singular_values, _ = jnp.linalg.svd(triangle, full_matrices=False)
    return LowRankPreconditioner(orthonormal @ rotation, singular_values**2, diagonal)


# Leading directions of a LowRankPreconditioner whose coordinates are summed accurately.
ACCURATE_DIRECTIONS = 8


def _coordinates(basis: Array, vectors: Array) -> Array:
    """``U^T v``, the leading ``ACCURATE_DIRECTIONS`` coordinates by :func:`column_sums`.

    ``H`` keeps ``(1 + s^2)^{-1/2}`` of a leading direction by subtracting the rest, so its
    coordinate needs a relative error below that (1e-4 at ``s^2 = 1e8``): a sequential
    float32 sum of length ``n`` errs by up to ``n eps / 2`` (6e-4 at n = 10,000) when the
    terms share a sign, as they do along a constant direction, and a float32 matrix product
    with two columns was 77% off on ``P^{-1} 1`` in the positive-definiteness test. The other
    coordinates come from the product with those directions taken out first. One leading
    direction at a time: ``(n, r)`` temporaries, however many columns ``v`` has.
    """
    count = min(basis.shape[1], ACCURATE_DIRECTIONS)
    leading = basis[:, :count]
    accurate = jax.lax.map(lambda direction: column_sums(direction[:, None] * vectors), leading.T)
    rest = basis.T @ (vectors - leading @ accurate)
    return rest.at[:count].add(accurate)


@jax.jit
def apply_preconditioner(preconditioner: LowRankPreconditioner, vectors: Array) -> Array:
    """``P^{-1} v = D^{-1/2} H (H D^{-1/2} v)`` (:class:`LowRankPreconditioner`)."""
    basis, spectrum, diagonal = preconditioner
    # 1 - (1 + s^2)^{-1/2}, written without the cancellation at small s.
    root = jnp.sqrt(1 + spectrum)
    shrink = (spectrum / (root * (1 + root)))[:, None]
    scale = jnp.sqrt(diagonal)[:, None]
    whitened = vectors / scale
    for _ in range(2):
        whitened = whitened - basis @ (shrink * _coordinates(basis, whitened))
    return whitened / scale


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
    if not np.all(eigenvalues > 0):
        # Ritz values of a positive definite operator are positive: rounding broke CG.
        raise ValueError(_BREAKDOWN)
    return float(np.sum(eigenvectors[0] ** 2 * np.log(eigenvalues)))


_BREAKDOWN = (
    "conjugate gradients broke down (a non-finite or non-positive step): the kernel matrix "
    "plus noise is not numerically positive definite in this precision. Enable float64 "
    "with `jax.config.update('jax_enable_x64', True)`, or increase `noise` or `jitter`."
)


# Restarts from the true residual when rounding left a solved column far above the
# tolerance. Within ROUNDING_SLACK times the tolerance it is rounding CG cannot remove in
# the working precision: accepted, not retried. A restart that does not at least halve a
# column's residual (STALL_FACTOR) shows its rounding floor: more restarts only cost
# passes (float32 at n = 50,000 stalls near 1.6e-3 and three restarts made 1.6x the passes).
MAX_RESTARTS = 3
ROUNDING_SLACK = 10.0
STALL_FACTOR = 0.5


def _start(solution: Array, residual: Array, preconditioner: LowRankPreconditioner) -> _CGState:
    preconditioned = apply_preconditioner(preconditioner, residual)
    inner = jnp.sum(residual * preconditioned, axis=0)
    return _CGState(solution, residual, preconditioned, preconditioned, inner)


def solve_with_probes(
    operator: Callable[[Array], Array],
    preconditioner: LowRankPreconditioner,
    right_hand_sides: Float[Array, "n r"],
    *,
    num_solved: int,
    tolerance: float,
    max_iterations: int,
    progress: bool,
) -> ProbeSolve:
    """Solve ``C a = b`` for every column of ``b`` by CG preconditioned with ``P``.

    The first ``num_solved`` columns are systems whose solutions are used: their residual
    ``b - C a`` is recomputed at the end and, where rounding left it more than
    ``ROUNDING_SLACK`` times above the tolerance (CG's recursive residual drifts from it in
    finite precision), CG restarts from it (at most ``MAX_RESTARTS`` times, within
    ``max_iterations`` in all). A column whose restart did not lower that residual by
    ``STALL_FACTOR`` is at its rounding floor and is not restarted again (``stalled``); a
    restart can even end worse than it began, so each solved column returns its solution
    with the lowest recomputed residual.
    The other columns are probes, used for their Lanczos coefficients from the first run.

    Args:
        operator: ``v -> C v`` for ``(n, r)`` blocks of vectors.
        preconditioner: ``P`` (the FITC covariance, for the inducing-point solvers).
        right_hand_sides: ``(n, r)`` columns ``b``.
        num_solved: how many leading columns are solved systems (the rest are probes).
        tolerance: a column stops once its residual is ``<= tolerance |b|``.
        max_iterations: the most CG iterations (passes over the kernel), restarts included;
            the residual check after each run is one more pass.
        progress: show a progress bar (one step per pass).

    Returns:
        The :class:`ProbeSolve`; ``relative_residuals`` are the recomputed ones for solved
        columns and CG's own for probes; ``converged`` says whether every column reached
        the tolerance, allowing ``ROUNDING_SLACK`` times it for solved columns that CG
        finished within the budget (rounding, not a lack of iterations).

    Raises:
        ValueError: when CG breaks down (a non-finite or negative step: the operator is
            not numerically positive definite).
    """
    num_columns = right_hand_sides.shape[1]
    columns = np.asarray(right_hand_sides, np.float64)
    # Norms of columns scaled by their largest entry first: squares of 1e-200 underflow.
    largest = np.max(np.abs(columns), axis=0, initial=0.0)
    safe = np.where(largest > 0, largest, 1.0)
    rhs_norms = largest * np.linalg.norm(columns / safe, axis=0)
    scale = np.where(rhs_norms > 0, rhs_norms, 1.0)
    # Unit columns: tiny right-hand sides (far-away test points) would underflow in the
    # inner products. CG's step sizes, hence the Lanczos matrices, do not depend on scale.
    rhs = jnp.asarray(right_hand_sides) / jnp.asarray(scale, right_hand_sides.dtype)[None, :]
    state = _start(jnp.zeros_like(rhs), rhs, preconditioner)
    active = rhs_norms > 0
    relative = np.where(active, 1.0, 0.0)
    iterations = np.zeros(num_columns, int)
    alphas: list[np.ndarray] = []
    betas: list[np.ndarray] = []
    solved = np.arange(num_columns) < num_solved
    unfinished = np.zeros(num_columns, bool)
    checked = np.full(num_columns, np.inf)  # the lowest recomputed residual so far
    best = jnp.zeros_like(rhs[:, :num_solved])  # the solved columns at that residual
    stalled = np.zeros(num_columns, bool)
    steps = 0
    start = time.perf_counter()
    with progress_bar(progress, max_iterations, "conjugate gradients", rate_unit="passes/s") as bar:
        for restart in range(MAX_RESTARTS + 1):
            while active.any() and steps < max_iterations:
                product = operator(state.direction)
                state, alpha, beta = _cg_update(state, product, jnp.asarray(active), preconditioner)
                alpha_np = np.asarray(alpha, np.float64)
                if not (np.all(alpha_np[active] > 0) and np.all(np.isfinite(alpha_np))):
                    raise ValueError(_BREAKDOWN)
                if restart == 0:
                    alphas.append(alpha_np)
                    betas.append(np.asarray(beta, np.float64))
                    iterations += active
                steps += 1
                relative = np.where(
                    active, np.linalg.norm(np.asarray(state.residual, np.float64), axis=0), relative
                )
                active = active & (relative > tolerance)
                if bar is not None:
                    rate = steps / (time.perf_counter() - start)
                    bar.update(advance=1, rate=rate, fields={"residual": float(relative.max())})
            # Columns the budget stopped above the tolerance: no slack for rounding.
            unfinished = active.copy()
            if num_solved == 0:
                break
            # The recursive residual drifts from b - C a in finite precision: recompute it
            # for the solved columns (one more pass) and restart those far above tolerance.
            residual = rhs[:, :num_solved] - operator(state.solution[:, :num_solved])
            steps += 1
            relative[:num_solved] = np.linalg.norm(np.asarray(residual, np.float64), axis=0)
            stalled |= solved & (relative > STALL_FACTOR * checked)
            # A restart can end worse than it began (its start residual carries the
            # product's rounding): keep each column's best checked solution (the first
            # check's whatever it is, so a non-finite residual still shows).
            better = solved & (np.isinf(checked) | (relative < checked))
            keep = jnp.asarray(better[:num_solved])[None, :]
            best = jnp.where(keep, state.solution[:, :num_solved], best)
            checked = np.where(better, relative, checked)
            if unfinished.any() or steps >= max_iterations:
                break
            active = solved & ~stalled & (relative > ROUNDING_SLACK * tolerance)
            if not active.any():
                break
            padded = jnp.zeros_like(rhs).at[:, :num_solved].set(residual)
            state = _start(state.solution, padded, preconditioner)
    alpha_table = np.array(alphas).reshape(-1, num_columns)
    beta_table = np.array(betas).reshape(-1, num_columns)
    # Only probes need the quadrature (solved columns' Lanczos matrices are unused).
    log_quadratures = np.array(
        [
            _log_quadrature(alpha_table[: iterations[j], j], beta_table[: iterations[j], j])
            if j >= num_solved
            else np.nan
            for j in range(num_columns)
        ]
    )
    solutions = state.solution
    if num_solved:
        relative[:num_solved] = checked[:num_solved]
        solutions = solutions.at[:, :num_solved].set(best)
    limits = np.where(solved & ~unfinished, ROUNDING_SLACK * tolerance, tolerance)
    converged = bool(np.all(relative <= limits))
    solutions = solutions * jnp.asarray(scale, solutions.dtype)[None, :]
    return ProbeSolve(
        solutions,
        iterations,
        relative,
        log_quadratures,
        steps,
        converged,
        bool(np.any(stalled & (relative > ROUNDING_SLACK * tolerance))),
    )


def log_det_correction(log_quadratures: np.ndarray, dimension: int) -> tuple[float, float]:
    """``log |C| - log |P|`` by stochastic Lanczos quadrature, with its standard error.

    Each probe's ``n e_1^T log(T) e_1`` estimates ``tr(log A) = n E[u^T log(A) u]`` without
    bias (``u = w / |w|`` is uniform on the sphere for Gaussian ``w``). With exact
    quadrature its variance is ``2 n / (n + 2) sum_i (l_i - mean)^2`` for the
    log-eigenvalues ``l_i`` of ``A``; Hutchinson's ``w^T log(A) w`` has
    ``2 sum_i (l_i - mean)^2 + 2 n mean^2``. The sphere drops the ``2 n mean^2`` term, which
    matters with the FITC preconditioner: its log-eigenvalues' mean is far from 0 (``P`` adds
    the unexplained variances to every direction). On Friedman #1 (n = 4,000, 80 to 400
    inducing points, from the exact eigenvalues) each probe's standard deviation was
    1.1-1.5x smaller; at n = 50,000 about 1.1x (two runs, 1,000 and 2,000 inducing points).

    Args:
        log_quadratures: ``(t,)`` ``e_1^T log(T) e_1`` per probe.
        dimension: ``n``, the order of ``C``.

    Returns:
        The estimate of ``log |C| - log |P|`` (nats) as the mean over probes, and its
        standard error.
    """
    estimates = dimension * np.asarray(log_quadratures, np.float64)
    count = len(estimates)
    stderr = float(np.std(estimates, ddof=1) / math.sqrt(count)) if count > 1 else math.inf
    return float(np.mean(estimates)), stderr
