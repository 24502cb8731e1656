"""Scale mixtures of (NN)GPs for regression: marginal likelihood and posterior prediction.

The model (Lee et al., 2022, with the noise scaled alongside the signal so that the
inverse-gamma case stays closed form, as in Shah et al., 2014):

    s ~ scale_prior,    y | s ~ N(0, s (K + noise I)),    K = kernel(x, x).

With ``C = K + (noise + jitter) I = L L^T``, ``q = y^T C^{-1} y`` and ``n = len(y)``:

    log p(y) = -n/2 log(2 pi) - 1/2 log|C| + log E_prior[s^(-n/2) exp(-q / (2 s))].

Given ``s``, the prediction at ``x*`` is Gaussian with mean ``k*^T C^{-1} y`` (free of ``s``)
and variance ``s v*``, ``v* = k(x*, x*) + jitter - k*^T C^{-1} k* (+ noise)``. The jitter is
part of the model, a white-noise term of the kernel (``K + jitter I``): the marginal
likelihood, the predictive and :meth:`ScaleMixtureProcess.sample` all describe that one
process, so the predictives chain to the marginal likelihood exactly. Integrating ``s``:

- ``scale_prior=None``: the plain GP (``s = 1``).
- ``s ~ InvGamma(a, b)``: ``s | y ~ InvGamma(a + n/2, b + q/2)`` and the predictive is
  Student-t with ``2a + n`` degrees of freedom and squared scale ``(b + q/2) / (a + n/2) v*``
  (a Student-t process).
- any other prior: the 1-d posterior over ``s`` by quadrature (exact) or importance sampling
  (:mod:`probinfer.nngp._scale_posterior`), and a mixture of Gaussians over ``s``.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from probinfer._validation import check_magnitude, real_array
from probinfer.nngp._checks import check_inputs, check_positive, is_concrete
from probinfer.nngp._kernel import AbstractKernel
from probinfer.nngp._posterior import AbstractScaleMixturePosterior, Method
from probinfer.nngp._scale_priors import check_scale_prior
from probinfer.nngp._sparse import (
    Solver,
    SolverSettings,
    SparseScaleMixturePosterior,
    condition_inducing,
    select_inducing_points,
)

# Training sets from this size on take minutes with solver="cg": show its progress.
PROGRESS_MIN_POINTS = 10_000


def _check_kernel(kernel: object) -> None:
    if not isinstance(kernel, AbstractKernel):
        raise TypeError(
            f"`kernel` must be an `nngp.AbstractKernel`: an NNGP layer stack (e.g. "
            f"`nngp.mlp(2)`) or a stationary kernel (`nngp.rbf`, `nngp.matern52`), got "
            f"{type(kernel).__name__}."
        )


def _check_targets(x: np.ndarray | None, y: ArrayLike) -> np.ndarray | None:
    """``y`` as a NumPy array after checking it against ``x`` (``None`` for a tracer)."""
    if not is_concrete(y):
        return None
    y_np = real_array("y", y)
    if y_np.ndim != 1 or (x is not None and y_np.shape[0] != x.shape[0]):
        rows = "" if x is None else f" matching `x`'s {x.shape[0]} rows"
        raise ValueError(
            f"`y` must have shape (num_points,){rows}, got shape {y_np.shape}; pass one "
            "target per input row."
        )
    if not np.all(np.isfinite(y_np)):
        raise ValueError("`y` contains NaN or infinite values; remove those rows.")
    check_magnitude("y", y_np, "standardise the targets (subtract their mean, divide by their sd)")
    return y_np


class ScaleMixtureProcess(eqx.Module):
    """``f | s ~ GP(0, s K)``, ``s ~ scale_prior``, observed with relative noise.

    Attributes:
        kernel: the NNGP kernel (any layer stack).
        scale_prior: NumPyro distribution of ``s`` (see :mod:`probinfer.nngp` constructors),
            or ``None`` for the plain GP.
        noise: noise variance relative to the kernel (> 0): ``y | s ~ N(0, s (K + noise I))``.
        jitter: a white-noise variance added to the kernel (static): to the diagonal of the
            Cholesky factorisation and to every predictive variance, so that all results
            describe the same process ``K + jitter I``.

    Example:
        >>> import jax.numpy as jnp
        >>> from probinfer import nngp
        >>> process = nngp.ScaleMixtureProcess(
        ...     nngp.mlp(2), nngp.inverse_gamma(2.0, 2.0), noise=0.1)
        >>> x = jnp.linspace(-1, 1, 8)[:, None]
        >>> predictive = process.condition(x, jnp.sin(3 * x[:, 0])).predict(x[:3])
        >>> predictive.mean.shape
        (3,)
    """

    kernel: AbstractKernel
    scale_prior: dist.Distribution | None
    noise: Array
    jitter: float = eqx.field(static=True)

    def __init__(
        self,
        kernel: AbstractKernel,
        scale_prior: dist.Distribution | None = None,
        noise: ArrayLike = 1e-2,
        *,
        jitter: float = 1e-6,
    ) -> None:
        _check_kernel(kernel)
        check_scale_prior(scale_prior)
        check_positive(noise, "noise")
        if not (float(jitter) >= 0):
            raise ValueError(f"`jitter` must be >= 0, got {jitter}.")
        self.kernel = kernel
        self.scale_prior = scale_prior
        self.noise = jnp.asarray(noise, jnp.result_type(float))
        self.jitter = float(jitter)

    @property
    def has_exact_posterior(self) -> bool:
        """Whether the scale integral is closed form (plain GP or inverse-gamma prior)."""
        return self.scale_prior is None or isinstance(self.scale_prior, dist.InverseGamma)

    def condition(
        self, x: Float[ArrayLike, "n d"], y: Float[ArrayLike, " n"]
    ) -> ScaleMixturePosterior:
        """Condition on training data: one Cholesky factorisation, reused by every query.

        Args:
            x: training inputs, ``(n, d)``.
            y: training targets, ``(n,)``.

        Returns:
            The posterior, with :meth:`ScaleMixturePosterior.predict` and
            :meth:`ScaleMixturePosterior.log_marginal_likelihood`.

        Raises:
            ValueError: on mismatched shapes, NaNs, or a kernel matrix that is not positive
                definite even after jitter.
        """
        x_np = check_inputs(x, "x")
        _check_targets(x_np, y)
        x = jnp.asarray(x, jnp.result_type(float))
        y = jnp.asarray(y, x.dtype)
        # The kernel is evaluated outside the jitted algebra so that, on concrete inputs,
        # its blocks run as multi-threaded top-level programs.
        cholesky, alpha, quad_form, log_det = _factor(self, self.kernel(x), y)
        if is_concrete(cholesky) and not bool(jnp.all(jnp.isfinite(cholesky))):
            raise ValueError(
                f"the kernel matrix plus noise ({float(self.noise):.3g}) and jitter "
                f"({self.jitter:.3g}) is not positive definite: its Cholesky factorisation "
                f"failed in {x.dtype}. Increase `jitter` (e.g. 1e-4) or `noise`, remove "
                "duplicate inputs, or enable float64 with "
                "`jax.config.update('jax_enable_x64', True)`."
            )
        return ScaleMixturePosterior(
            process=self, x=x, cholesky=cholesky, alpha=alpha, quad_form=quad_form,
            log_det=log_det,
        )  # fmt: skip

    def condition_inducing(
        self,
        x: Float[ArrayLike, "n d"],
        y: Float[ArrayLike, " n"],
        *,
        num_inducing: int = 2000,
        inducing_points: Float[ArrayLike, "m d"] | None = None,
        tolerance: float = 0.0,
        solver: Solver = "cg",
        num_probes: int = 32,
        max_iterations: int = 100,
        rtol: float | None = None,
        key: PRNGKeyArray | None = None,
        progress: bool | None = None,
    ) -> SparseScaleMixturePosterior:
        """Condition through inducing points: the FITC model, ``O(n m^2)`` time, ``O(n m)`` memory.

        The covariance ``K + (noise + jitter) I`` is replaced by ``Q + Lambda``: the Nystrom
        approximation ``Q = K_xz K_zz^{-1} K_zx`` plus the exact prior variances it misses
        and the noise (see :mod:`probinfer.nngp._sparse`). The scale prior is integrated as
        for the exact posterior: an inverse-gamma prior still gives a Student-t predictive
        in closed form. For data sets beyond ~10,000 points, where :meth:`condition`'s
        ``n x n`` factorisation no longer fits in time or memory.

        Args:
            x: training inputs, ``(n, d)``.
            y: training targets, ``(n,)``.
            num_inducing: how many training inputs to use as inducing points, chosen
                greedily (pivoted Cholesky: each one the input the others explain least);
                ignored when ``inducing_points`` is given.
            inducing_points: explicit ``(m, d)`` inducing inputs.
            tolerance: stop choosing once no input has more than this prior variance left
                unexplained (fewer than ``num_inducing`` points).
            solver: ``"cg"`` (default): the exact posterior's mean, ``q`` and (estimated)
                ``log |C|`` by conjugate gradients preconditioned with the FITC covariance,
                the kernel recomputed in row blocks at every iteration (memory ``O(n)`` per
                block row, time ``O(n^2)`` per iteration); the predictive variances are
                FITC's unless ``predict(..., variance="cg")``. ``"fitc"``: the FITC model
                alone, ``O(n m^2)``.
            num_probes: random probes for the stochastic Lanczos estimate of ``log |C|``
                (``"cg"``); its standard error is ``log_det_stderr``, falling as
                ``1 / sqrt(num_probes)``. Each probe is one more column in every pass over
                the kernel, whose cost the kernel's evaluation dominates: at n = 12,000
                (depth-2 ReLU kernel, float32) a pass took 0.28 s with 16 probes, 0.32 s
                with 32 and 0.38 s with 64.
            max_iterations: the most CG iterations (``"cg"``); a warning says when CG
                stopped before ``rtol``.
            rtol: CG stops when its residual is ``<= rtol |y|`` (and likewise for every
                probe); by default 1e-4 in float32 and 1e-8 in float64. The final
                ``|y - C alpha| / |y|`` is computed afresh (``relative_residual``); CG
                restarts from it when rounding left it over 10 times ``rtol``, stops
                restarting when a restart does not halve it (the precision's rounding
                floor), returns the ``alpha`` with the lowest one (a restart can end
                worse), and warns if that stays over 10 times ``rtol``.
            key: PRNG key for the probes (default ``jax.random.key(0)``: reproducible).
            progress: show a progress bar over the CG iterations (default: when
                ``n >= 10,000``).

        Returns:
            The :class:`SparseScaleMixturePosterior`; its ``max_residual_variance`` is the
            largest prior variance the inducing points leave unexplained at a training
            input (a rough guide: small against ``noise``, little is lost).

        Raises:
            ValueError: on mismatched shapes, NaNs, ``num_inducing < 1``, an unknown
                ``solver``, fewer than 2 probes, or an inducing kernel matrix that is not
                positive definite even after jitter.

        Warns:
            UserWarning: when CG ends above ``rtol`` at ``max_iterations``, or rounding
                leaves ``relative_residual`` over 10 times ``rtol``.
        """
        if solver not in ("cg", "fitc"):
            raise ValueError(f"`solver` must be 'cg' or 'fitc', got {solver!r}.")
        for value, name, least in (
            (num_probes, "num_probes", 2),
            (max_iterations, "max_iterations", 1),
        ):
            if int(value) != value or value < least:
                raise ValueError(f"`{name}` must be an integer >= {least}, got {value!r}.")
        if rtol is not None:
            check_positive(rtol, "rtol")
        x_np = check_inputs(x, "x")
        leaves = jax.tree_util.tree_leaves((self, x, y, inducing_points))
        if x_np is None or not all(map(is_concrete, leaves)):
            raise ValueError(
                "`condition_inducing` chooses its inducing points and runs conjugate "
                "gradients on concrete data; call it outside `jit`/`grad` (the posterior it "
                "returns can be used inside with `predict(variance='fitc')`)."
            )
        y_np = _check_targets(x_np, y)
        if int(num_inducing) != num_inducing or num_inducing < 1:
            raise ValueError(f"`num_inducing` must be an integer >= 1, got {num_inducing!r}.")
        dtype = jnp.result_type(float)
        x_array = jnp.asarray(x_np, dtype)
        if inducing_points is None:
            chosen, _ = select_inducing_points(
                self.kernel, x_array, int(num_inducing), tolerance=tolerance
            )
            z = x_array[chosen]
        else:
            z_np = check_inputs(inducing_points, "inducing_points", num_features=x_np.shape[1])
            z = jnp.asarray(z_np, dtype)
        settings = SolverSettings(
            solver=solver,
            num_probes=int(num_probes),
            max_iterations=int(max_iterations),
            rtol=None if rtol is None else float(rtol),
            progress=x_np.shape[0] >= PROGRESS_MIN_POINTS if progress is None else progress,
        )
        key = jax.random.key(0) if key is None else key
        return condition_inducing(self, x_array, jnp.asarray(y_np, dtype), z, settings, key)

    def log_marginal_likelihood(
        self,
        x: Float[ArrayLike, "n d"],
        y: Float[ArrayLike, " n"],
        *,
        method: Method = "auto",
        key: PRNGKeyArray | None = None,
        num_samples: int = 4096,
        num_nodes: int = 512,
    ) -> Float[Array, ""]:
        """``log p(y | x)``, integrating over ``s``; see :meth:`ScaleMixturePosterior.predict`.

        Args:
            x: inputs, ``(n, d)``.
            y: targets, ``(n,)``.
            method: ``"exact"``, ``"quadrature"``, ``"importance"`` or ``"auto"``.
            key: PRNG key (importance sampling only).
            num_samples: prior draws for importance sampling.
            num_nodes: quadrature nodes.

        Returns:
            The log marginal likelihood in nats.
        """
        return self.condition(x, y).log_marginal_likelihood(
            method=method, key=key, num_samples=num_samples, num_nodes=num_nodes
        )

    def sample(
        self,
        key: PRNGKeyArray,
        x: Float[ArrayLike, "n d"],
        num_samples: int,
        *,
        include_noise: bool = True,
    ) -> Float[Array, "num_samples n"]:
        """Draw functions (or noisy targets) at ``x`` from the prior process.

        Args:
            key: PRNG key.
            x: inputs, ``(n, d)``.
            num_samples: number of draws.
            include_noise: add the observation noise (``y``) or not (``f``).

        Returns:
            ``(num_samples, n)`` draws: ``s`` from the scale prior, then the GP.

        Raises:
            ValueError: with ``include_noise``, if the covariance is not positive definite
                after noise and jitter (its Cholesky factorisation fails); without, if it
                has eigenvalues below zero beyond rounding (the kernel is not positive
                semi-definite). Both checks need concrete inputs: under ``jit`` such a
                covariance gives NaN draws.
        """
        check_inputs(x, "x")
        x = jnp.asarray(x, jnp.result_type(float))
        key_scale, key_normal = jax.random.split(key)
        cov = self.kernel(x) + (self.jitter + (self.noise if include_noise else 0.0)) * jnp.eye(
            x.shape[0], dtype=x.dtype
        )
        normal = jax.random.normal(key_normal, (num_samples, x.shape[0]), x.dtype)
        if include_noise:
            checked = jnp.linalg.cholesky(cov)
            draws = normal @ checked.T
            failure = (
                "the kernel matrix plus noise and jitter is not positive definite: its "
                f"Cholesky factorisation failed in {x.dtype}. Increase `jitter` (e.g. 1e-4), "
                "remove duplicate inputs, or enable float64 with "
                "`jax.config.update('jax_enable_x64', True)`."
            )
        else:
            checked = draws = eigen_draws(cov, normal.T).T
            failure = (
                "the kernel matrix plus jitter is not positive semi-definite: it has "
                f"eigenvalues well below zero in {x.dtype}, more than rounding explains. "
                "Check the kernel, increase `jitter` (e.g. 1e-4), or enable float64 with "
                "`jax.config.update('jax_enable_x64', True)`."
            )
        if is_concrete(checked) and not bool(jnp.all(jnp.isfinite(checked))):
            raise ValueError(failure)
        if self.scale_prior is None:
            scales = jnp.ones((num_samples,), x.dtype)
        else:
            scales = self.scale_prior.sample(key_scale, (num_samples,))
        return jnp.sqrt(scales)[:, None] * draws


def eigen_draws(cov: Float[Array, "n n"], normal: Float[Array, "n k"]) -> Float[Array, "n k"]:
    """Draws of ``N(0, cov)``, ``V sqrt(max(lambda, 0)) normal`` from ``cov = V diag(lambda)
    V^T`` and ``(n, k)`` standard normals: exact where ``cov`` is singular.

    Noise-free draws take this form rather than the Cholesky factor's (here and in
    :class:`probinfer.amortize.GPClassificationPrior`): ``K + jitter I`` of a smooth kernel
    at a few dozen points is singular in float32 (the Cholesky of the ReLU NNGP kernel at 21
    inputs in 1-d failed for 9.5% of input sets, NaN draws under ``jit`` where no check can
    raise), while its eigendecomposition exists. Eigenvalues rounded below zero are clipped;
    ones far below zero (beyond ``sqrt(eps)`` of the largest: the kernel itself is not
    positive semi-definite) make every draw NaN, which an eager call can report. Never
    beside a Cholesky of the same matrix in one program (e.g. a ``lax.cond`` of the two):
    vmapped over a batch of datasets, that program hung XLA's CPU runtime (jaxlib 0.10.2,
    which the requirements exclude; see the user guide's "Errors and warnings"). The
    eigendecomposition costs several Cholesky factorisations (18 ms against 4-5 ms for 64
    matrices of 70 points), and its gradient is not finite at repeated eigenvalues, which a
    singular ``K + jitter I`` has: differentiate such draws with respect to kernel
    parameters only where the matrix is well conditioned.
    """
    eigenvalues, eigenvectors = jnp.linalg.eigh(cov)
    draws: Array = eigenvectors @ (jnp.sqrt(jnp.maximum(eigenvalues, 0.0))[:, None] * normal)
    tolerance = jnp.sqrt(jnp.finfo(cov.dtype).eps) * jnp.max(jnp.abs(eigenvalues))
    return jnp.where(jnp.min(eigenvalues) < -tolerance, jnp.nan, draws)


@eqx.filter_jit
def _factor(
    process: ScaleMixtureProcess, kernel_matrix: Array, y: Array
) -> tuple[Array, Array, Array, Array]:
    n = kernel_matrix.shape[0]
    cov = kernel_matrix + (process.noise + process.jitter) * jnp.eye(n, dtype=kernel_matrix.dtype)
    cholesky = jnp.linalg.cholesky(cov)
    alpha = jax.scipy.linalg.cho_solve((cholesky, True), y)
    log_det = 2 * jnp.sum(jnp.log(jnp.diagonal(cholesky)))
    return cholesky, alpha, jnp.dot(y, alpha), log_det


class ScaleMixturePosterior(AbstractScaleMixturePosterior):
    """The exact posterior: one Cholesky factorisation of ``C = K + (noise + jitter) I``.

    Attributes:
        process: the prior process.
        x: ``(n, d)`` training inputs.
        cholesky: ``(n, n)`` lower Cholesky factor of ``C``.
        alpha: ``C^{-1} y``, ``(n,)``.
        quad_form: ``q = y^T C^{-1} y``.
        log_det: ``log |C|``.
    """

    process: ScaleMixtureProcess
    x: Array
    cholesky: Array
    alpha: Array
    quad_form: Array
    log_det: Array

    def _moments(self, x_test: Array, include_noise: bool) -> tuple[Array, Array]:
        kernel = self.process.kernel
        return _predictive_moments(
            self, kernel(self.x, x_test), kernel.diagonal(x_test), include_noise
        )


@eqx.filter_jit
def _predictive_moments(
    posterior: ScaleMixturePosterior, cross: Array, prior_variance: Array, include_noise: bool
) -> tuple[Array, Array]:
    """The mean ``k*^T C^{-1} y`` and the ``s = 1`` variance ``k** + jitter - k*^T C^{-1} k*``."""
    mean = cross.T @ posterior.alpha
    whitened = jax.scipy.linalg.solve_triangular(posterior.cholesky, cross, lower=True)
    prior_variance = prior_variance + posterior.process.jitter
    variance = jnp.maximum(prior_variance - jnp.sum(whitened**2, axis=0), 0.0)
    if include_noise:
        variance = variance + posterior.process.noise
    return mean, variance
