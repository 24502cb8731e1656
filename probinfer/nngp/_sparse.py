"""Inducing points for scale-mixture processes: the FITC model in closed form, ``O(n m^2)``.

With inducing inputs ``z`` (``m`` of them), ``Q = K_xz K_zz^{-1} K_zx`` is the Nystrom
approximation of the kernel matrix. The fully independent training conditional (FITC;
Snelson & Ghahramani, 2006) keeps ``Q``'s low rank and the exact prior variances:

    y | s ~ N(0, s (Q + Lambda)),    Lambda = diag(K + jitter I - Q) + noise I.

This is a Gaussian process in its own right (its kernel is ``Q`` plus the independent
residual variance), so everything :mod:`probinfer.nngp._process` derives for ``K`` holds
for it unchanged: the inverse-gamma scale prior gives a Student-t predictive in closed
form, other priors a 1-d integral over ``s``. Only ``q = y^T (Q + Lambda)^{-1} y``,
``log |Q + Lambda|`` and the predictive moments change, and Woodbury's identity computes
them from ``m x m`` factorisations:

    V = L_zz^{-1} K_zx,    B = I + V Lambda^{-1} V^T = L_B L_B^T,
    log |Q + Lambda| = sum log Lambda + log |B|,
    q = y^T Lambda^{-1} y - |c|^2,    c = L_B^{-1} V Lambda^{-1} y.

At a test input with ``w = L_zz^{-1} k_z*``: mean ``w^T L_B^{-T} c`` and ``s = 1`` variance
``k** + jitter - |w|^2 + |L_B^{-1} w|^2`` (``+ noise`` for targets). Time ``O(n m^2)``,
memory ``O(n m)``: at ``n = 50,000`` the factorisation takes seconds to a few minutes
(mostly choosing ``m = 1,000-2,000`` inducing points) where the exact one would need a
10 GB matrix.

The inducing inputs are chosen from the training inputs greedily (a pivoted Cholesky
factorisation of ``K``, Harbrecht et al., 2012: each step takes the point whose variance
the chosen points explain least), so the approximation's worst residual variance is known
and reported: a rough guide to the approximation (small against the noise: little is
lost), not a bound on it.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from typing import TYPE_CHECKING, Literal, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from probinfer.nngp._checks import check_inputs, is_concrete, stacklevel_outside_probinfer
from probinfer.nngp._iterative import (
    LowRankPreconditioner,
    ProbeSolve,
    kernel_level,
    kernel_matvec,
    log_det_correction,
    low_rank_preconditioner,
    solve_with_probes,
)
from probinfer.nngp._kernel import AbstractKernel, resolve_layer
from probinfer.nngp._layers import AbstractLayer
from probinfer.nngp._posterior import AbstractScaleMixturePosterior, Method
from probinfer.nngp._predictive import AbstractPredictive

if TYPE_CHECKING:
    from probinfer.nngp._process import ScaleMixtureProcess


def _resolved(kernel: AbstractKernel, x: Array) -> AbstractKernel:
    """The kernel with its quadrature fixed for ``x`` (outside ``jit``, where it is free)."""
    return resolve_layer(kernel, x) if isinstance(kernel, AbstractLayer) else kernel


# Rows of the partial factor read together when downdating a new column.
SELECTION_CHUNK = 128


@eqx.filter_jit
def _pivoted_cholesky(
    kernel: AbstractKernel, x: Array, diagonal: Array, rank: int
) -> tuple[Int[Array, " rank"], Float[Array, " rank"], Float[Array, ""]]:
    """Greedy pivots of ``K``'s partial Cholesky factorisation and their residual variances.

    Returns the pivots, each pivot's unexplained variance when it was chosen, and the
    largest unexplained variance left after the last one (0 when all were chosen).

    Step ``i`` picks the point with the largest variance not yet explained by the points
    before it; the factor is kept as ``rank`` rows of length ``n`` (``O(n rank)`` memory),
    one kernel column computed per step.
    """
    num_points = x.shape[0]
    num_chunks = -(-rank // SELECTION_CHUNK)
    factor = jnp.zeros((num_chunks * SELECTION_CHUNK, num_points), x.dtype)
    pivots = jnp.zeros((rank,), jnp.int32)
    gains = jnp.zeros((rank,), x.dtype)

    def explained(factor: Array, pivot: Array, filled: Array) -> Array:
        """``F^T F[:, pivot]`` over the filled chunks only: half the reads of the whole."""

        def add_chunk(j: Array, total: Array) -> Array:
            chunk = jax.lax.dynamic_slice_in_dim(factor, j * SELECTION_CHUNK, SELECTION_CHUNK)
            return total + chunk.T @ chunk[:, pivot]

        used = (filled + SELECTION_CHUNK - 1) // SELECTION_CHUNK
        return jax.lax.fori_loop(0, used, add_chunk, jnp.zeros((num_points,), x.dtype))

    def step(i: Array, carry: tuple[Array, Array, Array, Array]) -> tuple:
        factor, residual, pivots, gains = carry
        pivot = jnp.argmax(residual)
        gain = residual[pivot]
        column = kernel(x, jax.lax.dynamic_slice_in_dim(x, pivot, 1))[:, 0]
        column = (column - explained(factor, pivot, i)) / jnp.sqrt(jnp.maximum(gain, 1e-30))
        factor = factor.at[i].set(jnp.where(gain > 0, column, 0.0))
        residual = jnp.maximum(residual - column**2, 0.0).at[pivot].set(-jnp.inf)
        return factor, residual, pivots.at[i].set(pivot.astype(jnp.int32)), gains.at[i].set(gain)

    carry = (factor, diagonal, pivots, gains)
    _, residual, pivots, gains = jax.lax.fori_loop(0, rank, step, carry)
    return pivots, gains, jnp.max(residual)


def select_inducing_points(
    kernel: AbstractKernel,
    x: Float[ArrayLike, "n d"],
    num_inducing: int,
    *,
    tolerance: float = 0.0,
) -> tuple[Int[np.ndarray, " m"], float]:
    """Choose up to ``num_inducing`` rows of ``x`` greedily (pivoted Cholesky of ``K``).

    Args:
        kernel: the covariance function.
        x: candidate inputs, ``(n, d)``.
        num_inducing: the most rows to choose (at most ``n``).
        tolerance: keep only the rows chosen while some row's unexplained prior variance
            was above this (the greedy steps still run ``num_inducing`` times).

    Returns:
        The chosen row indices (in the order chosen) and the largest unexplained variance
        ``max_i (K - Q)_ii`` left after them (0 when every row was chosen).

    Raises:
        ValueError: on inputs that are not a finite, non-empty ``(n, d)`` array, or
            ``num_inducing < 1``.
    """
    x_np = check_inputs(x, "x")
    if x_np is None:
        raise ValueError(
            "`select_inducing_points` needs concrete inputs; call it outside `jit`/`grad`."
        )
    if x_np.shape[0] == 0:
        raise ValueError("`x` has no rows; pass at least one input to choose from.")
    if int(num_inducing) != num_inducing or num_inducing < 1:
        raise ValueError(f"`num_inducing` must be an integer >= 1, got {num_inducing!r}.")
    x = jnp.asarray(x_np, jnp.result_type(float))
    rank = min(int(num_inducing), x.shape[0])
    kernel = _resolved(kernel, x)
    pivots, gains, left = _pivoted_cholesky(kernel, x, kernel.diagonal(x), rank)
    pivots, gains = np.asarray(pivots), np.asarray(gains)
    # A gain of the order of rounding adds nothing but an ill-conditioned row to K_zz (a
    # duplicate's residual is rounding, which grows with the number of downdates).
    eps = float(np.finfo(x.dtype).eps)
    floor = max(float(tolerance), 64 * eps * float(gains[0]) * np.sqrt(rank))
    small = np.flatnonzero(gains <= floor)
    keep = max(1, int(small[0])) if small.size else rank
    remaining = float(gains[keep]) if keep < rank else max(float(left), 0.0)
    return pivots[:keep], remaining


Solver = Literal["cg", "fitc"]


class SolverSettings(NamedTuple):
    """How :meth:`ScaleMixtureProcess.condition_inducing` solves (see its arguments)."""

    solver: Solver
    num_probes: int
    max_iterations: int
    rtol: float | None
    progress: bool

    def tolerance(self, dtype: jnp.dtype) -> float:
        """The relative residual at which CG stops: ``rtol``, or by precision."""
        if self.rtol is not None:
            return self.rtol
        return 1e-8 if jnp.finfo(dtype).bits == 64 else 1e-4


class SparseScaleMixturePosterior(AbstractScaleMixturePosterior):
    """A :class:`ScaleMixtureProcess` conditioned through inducing points.

    Made by :meth:`ScaleMixtureProcess.condition_inducing`; it has the methods of the exact
    :class:`ScaleMixturePosterior` (``predict``, ``log_marginal_likelihood``,
    ``scale_weights``). With ``solver="fitc"`` it is the FITC model's exact posterior
    (``Q + Lambda`` in place of ``C = K + (noise + jitter) I``). With ``solver="cg"``,
    ``alpha = C^{-1} y`` is solved for the exact ``C`` by preconditioned conjugate
    gradients (to relative residual ``rtol``), so the predictive mean and ``q`` (hence the
    Student-t scale) are the exact posterior's, ``log |C|`` is estimated by stochastic
    Lanczos quadrature (standard error ``log_det_stderr``), and the predictive variances
    are FITC's unless ``predict(..., variance="cg")`` solves them too.

    Attributes:
        process: the prior process.
        x: ``(n, d)`` training inputs.
        quad_form: ``q = y^T C^{-1} y`` (FITC's ``C`` for ``solver="fitc"``).
        log_det: ``log |C|``.
        inducing_points: ``(m, d)`` inducing inputs ``z``.
        inducing_cholesky: ``(m, m)`` ``L_zz``, the Cholesky factor of ``K_zz + jitter I``.
        inner_cholesky: ``(m, m)`` ``L_B``, the Cholesky factor of ``B``.
        weights: ``L_B^{-T} c``, ``(m,)``: FITC's predictive mean is ``w^T weights``.
        max_residual_variance: ``max_i (K - Q)_ii`` over the training inputs: the prior
            variance the inducing points leave unexplained (compare it with ``noise``).
        alpha: ``C^{-1} y`` for the exact ``C``, ``(n,)`` (``None`` for ``solver="fitc"``).
        log_det_stderr: the standard error of ``log_det`` (0 for ``solver="fitc"``).
        relative_residual: ``|y - C alpha| / |y|`` of the returned ``alpha`` (the best
            CG checked over its run and restarts), computed afresh.
        cg_iterations: the CG iterations (passes over the kernel) taken.
        preconditioner: FITC's ``Q + Lambda`` factorised for CG, kept for exact variances
            (``None`` for ``solver="fitc"``).
        settings: how CG was run (reused for exact variances).
    """

    process: ScaleMixtureProcess
    x: Array
    quad_form: Array
    log_det: Array
    inducing_points: Array
    inducing_cholesky: Array
    inner_cholesky: Array
    weights: Array
    max_residual_variance: Array
    alpha: Array | None
    log_det_stderr: Array
    relative_residual: Array
    preconditioner: LowRankPreconditioner | None
    cg_iterations: int = eqx.field(static=True)
    settings: SolverSettings = eqx.field(static=True)

    @property
    def num_inducing(self) -> int:
        """Number of inducing points ``m``."""
        return self.inducing_points.shape[0]

    def _moments(self, x_test: Array, include_noise: bool) -> tuple[Array, Array]:
        kernel = self.process.kernel
        mean, variance = _sparse_moments(
            self, kernel(self.inducing_points, x_test), kernel.diagonal(x_test), include_noise
        )
        if self.alpha is not None:
            resolved = _resolved(kernel, jnp.concatenate([x_test, self.x]))
            mean = kernel_matvec(resolved, x_test, self.x, self.alpha[:, None])[:, 0]
        return mean, variance

    def predict(
        self,
        x_test: Float[ArrayLike, "t d"],
        *,
        include_noise: bool = True,
        variance: Literal["fitc", "cg"] = "fitc",
        method: Method = "auto",
        key: PRNGKeyArray | None = None,
        num_samples: int = 4096,
        num_nodes: int = 512,
    ) -> AbstractPredictive:
        """The marginal posterior predictive at each test input.

        Args:
            x_test: test inputs, ``(t, d)``.
            include_noise: predict noisy targets ``y*`` (default) or the latent ``f*``.
            variance: ``"fitc"`` (default): FITC's predictive variances, ``O(t m^2)``.
                ``"cg"`` (``solver="cg"`` posteriors): the exact ``k** - k*^T C^{-1} k*``,
                one CG solve per test point run together (each iteration a pass over the
                kernel and a product with ``t`` columns), so that the predictive is the
                exact posterior's to the CG tolerance; for a few hundred test points.
            method: how to integrate ``s``; see :meth:`log_marginal_likelihood`.
            key: PRNG key (importance sampling only).
            num_samples: prior draws for importance sampling.
            num_nodes: quadrature nodes.

        Returns:
            A :class:`NormalPredictive`, :class:`StudentTPredictive` or
            :class:`ScaleMixturePredictive`, as for the exact posterior.

        Raises:
            ValueError: on a feature-count mismatch, an unknown ``variance``, or
                ``variance="cg"`` for a ``solver="fitc"`` posterior.
        """
        if variance not in ("fitc", "cg"):
            raise ValueError(f"`variance` must be 'fitc' or 'cg', got {variance!r}.")
        if variance == "cg" and self.alpha is None:
            raise ValueError(
                "variance='cg' needs a posterior conditioned with solver='cg' (its mean is "
                "then exact too); this one used solver='fitc'."
            )
        if variance == "cg" and not all(
            map(is_concrete, jax.tree_util.tree_leaves((self, x_test)))
        ):
            raise ValueError(
                "variance='cg' runs conjugate gradients with a stopping test on concrete "
                "arrays; call `predict` outside `jit`/`grad` (variance='fitc' works inside)."
            )
        check_inputs(x_test, "x_test", num_features=self.x.shape[1])
        method = self._resolve(method)
        x_test = jnp.asarray(x_test, self.x.dtype)
        mean, base_variance = self._moments(x_test, include_noise)
        if variance == "cg":
            base_variance = self._exact_variances(x_test, include_noise)
        return self._predictive(mean, base_variance, method, key, num_samples, num_nodes)

    def _exact_variances(self, x_test: Array, include_noise: bool) -> Array:
        """``k** + jitter - k*^T C^{-1} k*`` by PCG, one column per test point."""
        process = self.process
        # Set with `alpha` by solver="cg", which `predict` has checked.
        assert self.preconditioner is not None
        if x_test.shape[0] == 0:
            return jnp.zeros((0,), self.x.dtype)
        kernel = _resolved(process.kernel, jnp.concatenate([x_test, self.x]))
        cross = kernel(self.x, x_test)
        solve = solve_with_probes(
            _exact_operator(process, kernel, self.x),
            self.preconditioner,
            cross,
            num_solved=cross.shape[1],
            tolerance=self.settings.tolerance(self.x.dtype),
            max_iterations=self.settings.max_iterations,
            progress=self.settings.progress,
        )
        _warn_unconverged(solve, self.settings, "the predictive variances")
        explained = jnp.sum(cross * solve.solutions, axis=0)
        variance = jnp.maximum(kernel.diagonal(x_test) + process.jitter - explained, 0.0)
        return variance + process.noise if include_noise else variance


def condition_inducing(
    process: ScaleMixtureProcess,
    x: Array,
    y: Array,
    inducing_points: Array,
    settings: SolverSettings,
    key: PRNGKeyArray,
) -> SparseScaleMixturePosterior:
    """Factorise the FITC model, then (``solver="cg"``) solve the exact one by PCG.

    Inputs are checked by the caller.
    """
    kernel = _resolved(process.kernel, jnp.concatenate([x, inducing_points]))
    factors = _factor_inducing(
        process,
        kernel(inducing_points),
        kernel(inducing_points, x),
        kernel.diagonal(x),
        y,
    )
    inducing_cholesky, inner_cholesky, weights, quad_form, log_det, max_residual = factors[:6]
    projected, diagonal = factors[6:]
    del factors  # `projected` (n x m) is freed once the preconditioner is built
    if not bool(jnp.all(jnp.isfinite(inducing_cholesky))):
        raise ValueError(
            f"the inducing points' kernel matrix plus jitter ({process.jitter:.3g}) is not "
            f"positive definite in {x.dtype}: increase `jitter` (e.g. 1e-4), use fewer or "
            "distinct inducing points, or enable float64 with "
            "`jax.config.update('jax_enable_x64', True)`."
        )
    if not bool(jnp.all(jnp.isfinite(inner_cholesky))):
        raise ValueError(
            f"the inducing-point factorisation failed in {x.dtype} (noise "
            f"{float(process.noise):.3g} is small against the kernel's variance): increase "
            "`noise` or enable float64 with `jax.config.update('jax_enable_x64', True)`."
        )
    alpha = None
    log_det_stderr = jnp.zeros((), x.dtype)
    relative_residual = jnp.zeros((), x.dtype)
    iterations = 0
    preconditioner = None
    if settings.solver == "cg":
        preconditioner = low_rank_preconditioner(projected, diagonal)
    del projected  # freed before the passes over the kernel
    if preconditioner is not None:
        solve = _solve_exact(process, kernel, x, y, preconditioner, settings, key)
        alpha = solve.solutions[:, 0]
        quad_form = jnp.dot(y, alpha)
        correction, stderr = log_det_correction(solve.log_quadratures[1:], x.shape[0])
        log_det = preconditioner.log_det() + correction
        log_det_stderr = jnp.asarray(stderr, x.dtype)
        relative_residual = jnp.asarray(solve.relative_residuals[0], x.dtype)
        iterations = solve.passes
        _warn_unconverged(solve, settings, "the predictive mean, q and log |C|")
    return SparseScaleMixturePosterior(
        process=process,
        x=x,
        quad_form=quad_form,
        log_det=log_det,
        inducing_points=inducing_points,
        inducing_cholesky=inducing_cholesky,
        inner_cholesky=inner_cholesky,
        weights=weights,
        max_residual_variance=max_residual,
        alpha=alpha,
        log_det_stderr=log_det_stderr,
        relative_residual=relative_residual,
        preconditioner=preconditioner,
        cg_iterations=iterations,
        settings=settings,
    )


def _solve_exact(
    process: ScaleMixtureProcess,
    kernel: AbstractKernel,
    x: Array,
    y: Array,
    preconditioner: LowRankPreconditioner,
    settings: SolverSettings,
    key: PRNGKeyArray,
) -> ProbeSolve:
    """PCG on ``[y, z_1, ..., z_t]`` with probes ``z ~ N(0, P)`` for the log-determinant."""
    probes = preconditioner.sample(key, settings.num_probes)
    return solve_with_probes(
        _exact_operator(process, kernel, x),
        preconditioner,
        jnp.concatenate([y[:, None], probes], axis=1),
        num_solved=1,
        tolerance=settings.tolerance(x.dtype),
        max_iterations=settings.max_iterations,
        progress=settings.progress,
    )


def _exact_operator(
    process: ScaleMixtureProcess, kernel: AbstractKernel, x: Array
) -> Callable[[Array], Array]:
    """``v -> C v`` for the exact ``C = K + (noise + jitter) I``, the kernel in row blocks."""
    shift = process.noise + process.jitter
    level = kernel_level(kernel, x, x)

    def operator(vectors: Array) -> Array:
        return kernel_matvec(kernel, x, x, vectors, level=level) + shift * vectors

    return operator


def _warn_unconverged(solve: ProbeSolve, settings: SolverSettings, solved: str) -> None:
    """Warn, attributed to the user's code, when a column missed its tolerance."""
    if solve.converged:
        return
    worst = float(solve.relative_residuals.max())
    tolerance = settings.tolerance(solve.solutions.dtype)
    ended = (
        f"conjugate gradients ended after {solve.passes} passes over the kernel with a "
        f"relative residual |b - C a| / |b| of {worst:.2g} (tolerance {tolerance:.2g}): "
        f"{solved} are not solved to the tolerance. "
    )
    if solve.stalled:
        advice = (
            f"A restart from the recomputed residual did not lower it: that is the rounding "
            f"floor of {solve.solutions.dtype} for this system, which more iterations cannot "
            "remove. Enable float64 with `jax.config.update('jax_enable_x64', True)`, or "
            "pass a larger `rtol` to accept it."
        )
    else:
        advice = (
            "Increase `num_inducing` (a better preconditioner) or `max_iterations`, or "
            "enable float64 with `jax.config.update('jax_enable_x64', True)`."
        )
    warnings.warn(ended + advice, UserWarning, stacklevel=stacklevel_outside_probinfer())


@eqx.filter_jit
def _factor_inducing(
    process: ScaleMixtureProcess,
    inducing_matrix: Array,
    cross: Array,
    prior_variance: Array,
    y: Array,
) -> tuple[Array, ...]:
    """``L_zz``, ``L_B``, ``L_B^{-T} c``, ``q``, ``log |Q + Lambda|``, ``max (K - Q)_ii``, ``V``
    and ``Lambda``'s diagonal (module docstring)."""
    num_inducing = inducing_matrix.shape[0]
    identity = jnp.eye(num_inducing, dtype=cross.dtype)
    inducing_cholesky = jnp.linalg.cholesky(inducing_matrix + process.jitter * identity)
    projected = jax.scipy.linalg.solve_triangular(inducing_cholesky, cross, lower=True)
    residual = jnp.maximum(prior_variance - jnp.sum(projected**2, axis=0), 0.0)
    diagonal = residual + process.jitter + process.noise
    scaled = projected / jnp.sqrt(diagonal)[None, :]
    inner_cholesky = jnp.linalg.cholesky(identity + scaled @ scaled.T)
    whitened_y = y / jnp.sqrt(diagonal)
    c = jax.scipy.linalg.solve_triangular(inner_cholesky, scaled @ whitened_y, lower=True)
    weights = jax.scipy.linalg.solve_triangular(inner_cholesky.T, c, lower=False)
    quad_form = jnp.sum(whitened_y**2) - jnp.sum(c**2)
    log_det = jnp.sum(jnp.log(diagonal)) + 2 * jnp.sum(jnp.log(jnp.diagonal(inner_cholesky)))
    max_residual = jnp.max(residual)
    return (
        inducing_cholesky, inner_cholesky, weights, quad_form, log_det, max_residual,
        projected, diagonal,
    )  # fmt: skip


@eqx.filter_jit
def _sparse_moments(
    posterior: SparseScaleMixturePosterior,
    cross: Array,
    prior_variance: Array,
    include_noise: bool,
) -> tuple[Array, Array]:
    """Mean ``w^T L_B^{-T} c``, variance ``k** + jitter - |w|^2 + |L_B^{-1} w|^2``."""
    whitened = jax.scipy.linalg.solve_triangular(posterior.inducing_cholesky, cross, lower=True)
    mean = whitened.T @ posterior.weights
    inner = jax.scipy.linalg.solve_triangular(posterior.inner_cholesky, whitened, lower=True)
    variance = prior_variance + posterior.process.jitter - jnp.sum(whitened**2, axis=0)
    variance = jnp.maximum(variance, 0.0) + jnp.sum(inner**2, axis=0)
    if include_noise:
        variance = variance + posterior.process.noise
    return mean, variance
