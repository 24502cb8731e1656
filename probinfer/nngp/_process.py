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

from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import numpyro.distributions as dist
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from probinfer.nngp._checks import check_inputs, check_positive, is_concrete
from probinfer.nngp._kernel import AbstractKernel
from probinfer.nngp._predictive import (
    AbstractPredictive,
    NormalPredictive,
    ScaleMixturePredictive,
    StudentTPredictive,
)
from probinfer.nngp._scale_posterior import (
    ScaleWeights,
    importance_sampling,
    inverse_gamma_posterior,
    quadrature,
)
from probinfer.nngp._scale_priors import check_scale_prior

Method = Literal["auto", "exact", "quadrature", "importance"]


def _check_kernel(kernel: object) -> None:
    if not isinstance(kernel, AbstractKernel):
        raise TypeError(
            f"`kernel` must be an `nngp.AbstractKernel`: an NNGP layer stack (e.g. "
            f"`nngp.mlp(2)`) or a stationary kernel (`nngp.rbf`, `nngp.matern52`), got "
            f"{type(kernel).__name__}."
        )


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
        if is_concrete(y):
            y_np = np.asarray(y)
            if y_np.ndim != 1 or (x_np is not None and y_np.shape[0] != x_np.shape[0]):
                raise ValueError(
                    f"`y` must have shape (num_points,) matching `x`'s {np.shape(x)[0]} rows, "
                    f"got shape {y_np.shape}; pass one target per input row."
                )
            if not np.all(np.isfinite(y_np)):
                raise ValueError("`y` contains NaN or infinite values; remove those rows.")
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
        return ScaleMixturePosterior(self, x, cholesky, alpha, quad_form, log_det)

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
            ValueError: if the covariance is not positive definite after jitter.
        """
        check_inputs(x, "x")
        x = jnp.asarray(x, jnp.result_type(float))
        key_scale, key_normal = jax.random.split(key)
        cov = self.kernel(x) + (self.jitter + (self.noise if include_noise else 0.0)) * jnp.eye(
            x.shape[0], dtype=x.dtype
        )
        cholesky = jnp.linalg.cholesky(cov)
        if is_concrete(cholesky) and not bool(jnp.all(jnp.isfinite(cholesky))):
            added = "noise and jitter" if include_noise else "jitter"
            raise ValueError(
                f"the kernel matrix plus {added} is not positive definite: its Cholesky "
                f"factorisation failed in {x.dtype}. Increase `jitter` (e.g. 1e-4), remove "
                "duplicate inputs, or enable float64 with "
                "`jax.config.update('jax_enable_x64', True)`."
            )
        if self.scale_prior is None:
            scales = jnp.ones((num_samples,), x.dtype)
        else:
            scales = self.scale_prior.sample(key_scale, (num_samples,))
        normal = jax.random.normal(key_normal, (num_samples, x.shape[0]), x.dtype)
        return jnp.sqrt(scales)[:, None] * (normal @ cholesky.T)


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


class ScaleMixturePosterior(eqx.Module):
    """A :class:`ScaleMixtureProcess` conditioned on ``(x, y)``.

    Attributes:
        process: the prior process.
        x: ``(n, d)`` training inputs.
        cholesky: ``(n, n)`` lower Cholesky factor of ``K + (noise + jitter) I``.
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

    @property
    def num_obs(self) -> int:
        """Number of training points ``n``."""
        return self.x.shape[0]

    def _resolve(self, method: Method) -> Method:
        if method not in ("auto", "exact", "quadrature", "importance"):
            raise ValueError(
                f"`method` must be 'auto', 'exact', 'quadrature' or 'importance', got {method!r}."
            )
        if method == "auto":
            return "exact" if self.process.has_exact_posterior else "quadrature"
        if method == "exact" and not self.process.has_exact_posterior:
            raise ValueError(
                f"method='exact' needs an inverse-gamma scale prior (or none); the prior is "
                f"{type(self.process.scale_prior).__name__}. Use method='quadrature' (exact "
                "to numerical precision) or 'importance'."
            )
        if method in ("quadrature", "importance") and self.process.scale_prior is None:
            raise ValueError(f"method={method!r} needs a scale prior; a plain GP is exact.")
        return method

    def scale_weights(
        self,
        *,
        method: Method = "quadrature",
        key: PRNGKeyArray | None = None,
        num_samples: int = 4096,
        num_nodes: int = 512,
    ) -> ScaleWeights:
        """The posterior over ``s`` as weighted nodes (quadrature) or draws (importance).

        Args:
            method: ``"quadrature"`` or ``"importance"``.
            key: PRNG key, required for importance sampling.
            num_samples: prior draws for importance sampling.
            num_nodes: quadrature nodes.

        Returns:
            The :class:`ScaleWeights`.

        Raises:
            ValueError: for ``"importance"`` without a key, or without a scale prior.
        """
        method = self._resolve(method)
        prior = self.process.scale_prior
        # _resolve rejects "quadrature" and "importance" without a scale prior.
        assert prior is not None
        if method == "importance":
            if key is None:
                raise ValueError("method='importance' needs `key=jax.random.key(...)`.")
            return importance_sampling(
                key, prior, self.quad_form, self.num_obs, num_samples=num_samples
            )
        return quadrature(prior, self.quad_form, self.num_obs, num_nodes=num_nodes)

    def log_marginal_likelihood(
        self,
        *,
        method: Method = "auto",
        key: PRNGKeyArray | None = None,
        num_samples: int = 4096,
        num_nodes: int = 512,
    ) -> Float[Array, ""]:
        """``log p(y | x)`` in nats.

        Args:
            method: ``"exact"`` (plain GP or inverse gamma), ``"quadrature"``,
                ``"importance"``, or ``"auto"`` (exact when available, else quadrature).
            key: PRNG key (importance sampling only).
            num_samples: prior draws for importance sampling.
            num_nodes: quadrature nodes.

        Returns:
            The log marginal likelihood.
        """
        method = self._resolve(method)
        n = self.num_obs
        gaussian_part = -0.5 * n * jnp.log(2 * jnp.pi) - 0.5 * self.log_det
        prior = self.process.scale_prior
        if method == "exact":
            if prior is None:
                return gaussian_part - 0.5 * self.quad_form
            assert isinstance(prior, dist.InverseGamma)  # _resolve allows no other for "exact"
            _, _, log_normalizer = inverse_gamma_posterior(
                prior.concentration, prior.rate, self.quad_form, n
            )
            return gaussian_part + log_normalizer
        weights = self.scale_weights(
            method=method, key=key, num_samples=num_samples, num_nodes=num_nodes
        )
        return gaussian_part + weights.log_normalizer

    def predict(
        self,
        x_test: Float[ArrayLike, "m d"],
        *,
        include_noise: bool = True,
        method: Method = "auto",
        key: PRNGKeyArray | None = None,
        num_samples: int = 4096,
        num_nodes: int = 512,
    ) -> AbstractPredictive:
        """The marginal posterior predictive at each test input.

        Args:
            x_test: test inputs, ``(m, d)``.
            include_noise: predict noisy targets ``y*`` (default) or the latent ``f*``.
            method: how to integrate ``s``; see :meth:`log_marginal_likelihood`.
            key: PRNG key (importance sampling only).
            num_samples: prior draws for importance sampling.
            num_nodes: quadrature nodes.

        Returns:
            A :class:`NormalPredictive` (plain GP), :class:`StudentTPredictive` (inverse
            gamma, exact) or :class:`ScaleMixturePredictive` (quadrature / importance).

        Raises:
            ValueError: if ``x_test``'s feature count differs from the training inputs'.
        """
        check_inputs(x_test, "x_test", num_features=self.x.shape[1])
        method = self._resolve(method)
        x_test = jnp.asarray(x_test, self.x.dtype)
        kernel = self.process.kernel
        mean, base_variance = _predictive_moments(
            self, kernel(self.x, x_test), kernel.diagonal(x_test), include_noise
        )
        prior = self.process.scale_prior
        if prior is None:
            return NormalPredictive(mean, base_variance)
        if method == "exact":
            assert isinstance(prior, dist.InverseGamma)  # _resolve allows no other for "exact"
            a_post, b_post, _ = inverse_gamma_posterior(
                prior.concentration, prior.rate, self.quad_form, self.num_obs
            )
            return StudentTPredictive(2 * a_post, mean, b_post / a_post * base_variance)
        weights = self.scale_weights(
            method=method, key=key, num_samples=num_samples, num_nodes=num_nodes
        )
        return ScaleMixturePredictive(mean, base_variance, weights.log_scales, weights.log_weights)


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
