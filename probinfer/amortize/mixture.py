"""Gaussian mixtures over ``R^d``: the distribution transformer's priors and posteriors.

A :class:`GaussianMixture` holds ``K`` components by their log weights, means and lower
Cholesky factors. It is a real distribution (log density, draws, moments, ArviZ draws) and
it knows its exact posterior under linear-Gaussian observations
(:meth:`GaussianMixture.condition`): every component is updated as a Kalman filter would,
and its weight is multiplied by that component's marginal likelihood of the data. That
closed form is what the distribution transformer is validated against.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import arviz as az
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from probinfer._linalg import solve_lower_triangular
from probinfer._validation import check_magnitude, check_sample_shape, real_array

# Weights must sum to 1 within this (relative to float32 rounding of user input).
WEIGHT_SUM_TOLERANCE = 1e-4


class LinearGaussianData(eqx.Module):
    """Observations ``values[j] = design[j] @ theta + noise_sd[j] * eps_j``, ``eps_j ~ N(0, 1)``.

    Build it with :func:`linear_gaussian_data`, which checks shapes and values.

    Attributes:
        design: ``(n, d)`` rows of the observation matrix.
        values: ``(n,)`` observed values.
        noise_sd: ``(n,)`` noise standard deviations (> 0).
    """

    design: Float[Array, "n d"]
    values: Float[Array, " n"]
    noise_sd: Float[Array, " n"]

    @property
    def num_observations(self) -> int:
        """``n``."""
        return self.values.shape[0]

    def whitened(self) -> tuple[Float[Array, "n d"], Float[Array, " n"]]:
        """``(design / noise_sd, values / noise_sd)``: the same data with unit noise."""
        return self.design / self.noise_sd[:, None], self.values / self.noise_sd


def linear_gaussian_data(
    design: Float[ArrayLike, "n d"],
    values: Float[ArrayLike, " n"],
    noise_sd: Float[ArrayLike, " n"] | float,
    *,
    dim: int | None = None,
) -> LinearGaussianData:
    """Checked :class:`LinearGaussianData`.

    Args:
        design: ``(n, d)`` observation rows (a 1-d array is one row per value when
            ``d == 1``).
        values: ``(n,)`` observed values.
        noise_sd: ``(n,)`` or one noise standard deviation, > 0.
        dim: the latent dimension ``d`` the data must match, if known.

    Returns:
        The data.

    Raises:
        ValueError: on mismatched shapes, NaN or infinite values, a non-positive noise
            scale, or values so extreme that float arithmetic would overflow.
        TypeError: if an array is not real numbers.
    """
    values_np = real_array("values", values).astype(float)
    if values_np.ndim != 1:
        raise ValueError(f"`values` must have shape (n,), got {values_np.shape}.")
    n = values_np.shape[0]
    design_np = real_array("design", design).astype(float)
    given_shape = design_np.shape
    if design_np.ndim == 1 and design_np.shape[0] == n and dim in (None, 1):
        design_np = design_np[:, None]  # one coefficient per value: a 1-d latent
    if design_np.ndim != 2 or design_np.shape[0] != n:
        raise ValueError(
            f"`design` must have shape ({n}, d) to match {n} values, got {given_shape}; "
            "pass one row per observed value."
        )
    if dim is not None and design_np.shape[1] != dim:
        raise ValueError(
            f"`design` has {design_np.shape[1]} columns but the latent has {dim} dimensions."
        )
    noise_np = real_array("noise_sd", noise_sd).astype(float)
    if noise_np.shape not in ((), (n,)):
        raise ValueError(
            f"`noise_sd` must be one number or have shape ({n},) to match {n} values, got "
            f"{noise_np.shape}."
        )
    noise_np = np.broadcast_to(noise_np, (n,))
    for name, array in (("design", design_np), ("values", values_np), ("noise_sd", noise_np)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"`{name}` contains NaN or infinite values; remove those rows.")
    if np.any(noise_np <= 0):
        raise ValueError(
            f"`noise_sd` must be > 0, got min {noise_np.min()}; pass the observation noise's "
            "standard deviation."
        )
    for name, array in (("design", design_np), ("values", values_np), ("noise_sd", noise_np)):
        check_magnitude(
            name, array, "rescale the problem (the latent's units)", scale=name == "noise_sd"
        )
    return LinearGaussianData(jnp.asarray(design_np), jnp.asarray(values_np), jnp.asarray(noise_np))


def _tril_logdet(scale_tril: Array) -> Array:
    return jnp.sum(jnp.log(jnp.diagonal(scale_tril, axis1=-2, axis2=-1)), axis=-1)


class GaussianMixture(eqx.Module):
    """A mixture of ``K`` Gaussians over ``R^d``.

    Build it with :func:`gaussian_mixture`, which checks the weights and covariances.

    Attributes:
        log_weights: ``(K,)`` log mixture weights (``logsumexp == 0``).
        means: ``(K, d)`` component means.
        scale_tril: ``(K, d, d)`` lower Cholesky factors (positive diagonal) of the
            component covariances.
    """

    log_weights: Float[Array, " K"]
    means: Float[Array, "K d"]
    scale_tril: Float[Array, "K d d"]

    @property
    def num_components(self) -> int:
        """``K``."""
        return self.means.shape[0]

    @property
    def dim(self) -> int:
        """``d``."""
        return self.means.shape[1]

    @property
    def weights(self) -> Float[Array, " K"]:
        """Mixture weights."""
        return jnp.exp(self.log_weights)

    @property
    def component_covariances(self) -> Float[Array, "K d d"]:
        """``L L^T`` per component."""
        return self.scale_tril @ jnp.swapaxes(self.scale_tril, -1, -2)

    @property
    def mean(self) -> Float[Array, " d"]:
        """The mixture's mean."""
        return self.weights @ self.means

    @property
    def covariance(self) -> Float[Array, "d d"]:
        """The mixture's covariance (within-component plus between-component)."""
        centred = self.means - self.mean[None, :]
        between = jnp.einsum("k,ki,kj->ij", self.weights, centred, centred)
        return jnp.einsum("k,kij->ij", self.weights, self.component_covariances) + between

    def component_log_probs(self, theta: Float[ArrayLike, "... d"]) -> Float[Array, "... K"]:
        """``log w_k + log N(theta; mean_k, cov_k)`` for every component."""
        theta = jnp.asarray(theta)
        if theta.ndim == 0 or theta.shape[-1] != self.dim:
            raise ValueError(
                f"`theta` must have shape (..., {self.dim}) for a mixture over "
                f"R^{self.dim}, got {theta.shape}."
            )
        batch_shape = theta.shape[:-1]
        points = theta.reshape(-1, self.dim)

        def one(mean: Array, tril: Array) -> Array:  # (d,), (d, d) -> (P,)
            # All points at once, as columns (see probinfer._linalg: no LAPACK call).
            whitened = solve_lower_triangular(tril, (points - mean[None, :]).T)
            return -0.5 * jnp.sum(whitened**2, axis=0)

        quadratic = jax.vmap(one, out_axes=1)(self.means, self.scale_tril)  # (P, K)
        flat = (
            (self.log_weights - _tril_logdet(self.scale_tril))[None, :]
            + quadratic
            - 0.5 * self.dim * math.log(2 * math.pi)
        )
        return flat.reshape(*batch_shape, self.num_components)

    def log_prob(self, theta: Float[ArrayLike, "... d"]) -> Float[Array, ...]:
        """Log density at ``theta`` (any leading shape)."""
        return jax.nn.logsumexp(self.component_log_probs(theta), axis=-1)

    def sample(
        self, key: PRNGKeyArray, sample_shape: int | tuple[int, ...] = ()
    ) -> Float[Array, "... d"]:
        """Independent draws of shape ``sample_shape + (d,)`` (an int ``n`` means ``(n,)``)."""
        sample_shape = check_sample_shape(sample_shape)
        key_component, key_normal = jax.random.split(key)
        component = jax.random.categorical(key_component, self.log_weights, shape=sample_shape)
        normal = jax.random.normal(key_normal, (*sample_shape, self.dim), self.means.dtype)
        return self.means[component] + jnp.einsum(
            "...ij,...j->...i", self.scale_tril[component], normal
        )

    def _updated_components(self, data: LinearGaussianData) -> tuple[Array, Array, Array]:
        """Per component: ``log w_k + log p(data | k)``, posterior mean and Cholesky factor.

        With ``B = R^{-1/2} A L`` (whitened design times the component's Cholesky factor)
        and ``r = R^{-1/2} (y - A mean)``, ``M = I + B^T B = C C^T`` and
        ``u = M^{-1} B^T r``: the posterior covariance is ``L M^{-1} L^T``, the mean
        ``mean + L u``, and the marginal likelihood ``N(y; A mean, A cov A^T + R)`` follows
        from the determinant lemma and Woodbury through the ``d x d`` matrix ``M``
        (eigenvalues >= 1). Two forms keep float32 accurate however informative the data
        are: the quadratic form is ``|r - B u|^2 + |u|^2`` (a sum of squares; the equal
        ``|r|^2 - r^T B u`` cancels catastrophically), and the posterior factor comes from
        the QR decomposition of ``C^{-1} L^T`` (``= Q R``, so the covariance is ``R^T R``)
        rather than from a Cholesky of the covariance, which squares its condition number.
        """
        if data.design.shape[1] != self.dim:
            raise ValueError(
                f"the data's design has {data.design.shape[1]} columns but the mixture is over "
                f"R^{self.dim}; pass one column per latent dimension."
            )
        design, values = data.whitened()
        constant = -jnp.sum(jnp.log(data.noise_sd)) - 0.5 * values.shape[0] * math.log(2 * math.pi)

        def update(log_weight: Array, mean: Array, tril: Array) -> tuple[Array, Array, Array]:
            b = design @ tril  # (n, d)
            residual = values - design @ mean  # (n,)
            inner_chol = jnp.linalg.cholesky(jnp.eye(self.dim, dtype=b.dtype) + b.T @ b)
            projected = jax.scipy.linalg.cho_solve((inner_chol, True), b.T @ residual)
            quadratic = jnp.sum((residual - b @ projected) ** 2) + jnp.sum(projected**2)
            log_marginal = -0.5 * quadratic - jnp.sum(jnp.log(jnp.diagonal(inner_chol)))
            factor_t = jax.scipy.linalg.solve_triangular(inner_chol, tril.T, lower=True)
            upper = jnp.linalg.qr(factor_t, mode="r")
            # R's rows may come with negative diagonals: flip them (R^T R is unchanged).
            signs = jnp.where(jnp.diagonal(upper) < 0, -1.0, 1.0).astype(upper.dtype)
            post_tril = (signs[:, None] * upper).T
            return log_weight + log_marginal + constant, mean + tril @ projected, post_tril

        return jax.vmap(update)(self.log_weights, self.means, self.scale_tril)

    def condition(self, data: LinearGaussianData) -> GaussianMixture:
        """The exact posterior given linear-Gaussian observations (``d`` design columns).

        Every component is updated as a Kalman filter would update it, and its weight is
        multiplied by that component's marginal likelihood of the data.
        """
        log_weights, means, trils = self._updated_components(data)
        return GaussianMixture(jax.nn.log_softmax(log_weights), means, trils)

    def log_marginal_likelihood(self, data: LinearGaussianData) -> Array:
        """``log p(data)`` with this mixture as the prior (the exact evidence)."""
        return jax.nn.logsumexp(self._updated_components(data)[0])

    def propagate(
        self, transition: Float[ArrayLike, "d d"], noise_cov: Float[ArrayLike, "d d"]
    ) -> GaussianMixture:
        """The distribution of ``transition @ theta + w``, ``w ~ N(0, noise_cov)``.

        The prediction step of a linear-Gaussian state-space model: each component's mean
        becomes ``F mean`` and its covariance ``F cov F^T + Q``; the weights stay.
        """
        transition = jnp.asarray(transition, self.means.dtype)
        noise_cov = jnp.asarray(noise_cov, self.means.dtype)
        for name, matrix in (("transition", transition), ("noise_cov", noise_cov)):
            if matrix.shape != (self.dim, self.dim):
                raise ValueError(
                    f"`{name}` must have shape ({self.dim}, {self.dim}) for a mixture over "
                    f"R^{self.dim}, got {matrix.shape}; pass a full matrix (e.g. "
                    f"`0.1 * jnp.eye({self.dim})`)."
                )
        try:
            noise_np = np.asarray(noise_cov, dtype=float)
        except jax.errors.TracerArrayConversionError:
            noise_np = None  # inside a compiled function: only the shape can be checked
        if noise_np is not None:
            scale = max(float(np.abs(noise_np).max()), 1e-300)
            asymmetric = not np.allclose(noise_np, noise_np.T, rtol=1e-6, atol=1e-12 * scale)
            if asymmetric or np.linalg.eigvalsh(noise_np).min() < -1e-10 * scale:
                raise ValueError(
                    "`noise_cov` must be symmetric positive semi-definite, got "
                    f"{noise_np.tolist()}."
                )
        covariances = transition @ self.component_covariances @ transition.T + noise_cov[None]
        return GaussianMixture(
            self.log_weights,
            self.means @ transition.T,
            jnp.linalg.cholesky(0.5 * (covariances + jnp.swapaxes(covariances, -1, -2))),
        )

    def to_idata(
        self,
        key: PRNGKeyArray,
        num_draws: int = 4000,
        *,
        name: str = "theta",
        names: Sequence[str] | None = None,
    ) -> az.InferenceData:
        """Independent draws as ArviZ ``InferenceData`` (one chain).

        Args:
            key: PRNG key.
            num_draws: number of draws.
            name: the variable's name (all ``d`` axes in one variable).
            names: instead, one name per axis, each its own scalar variable (e.g.
                ``["mu", "log_sigma2"]`` for a normal-inverse-gamma model's posterior).

        Returns:
            ``InferenceData`` with a ``posterior`` group: ``posterior[name]`` of shape
            ``(1, num_draws, d)``, or ``posterior[names[i]]`` of shape ``(1, num_draws)``.

        Raises:
            ValueError: if ``names`` does not hold ``d`` distinct names.
        """
        if names is not None:
            if isinstance(names, str) or name != "theta":
                raise ValueError(
                    "pass `names` as a list of one name per axis (e.g. ['mu', 'log_sigma2']), "
                    f"without `name`; got names={names!r}, name={name!r}."
                )
            names = list(names)
            if len(names) != self.dim or len(set(names)) != self.dim:
                raise ValueError(
                    f"`names` must hold {self.dim} distinct names, one per axis, got {names}."
                )
        draws = np.asarray(self.sample(key, (num_draws,)))[None]
        if names is None:
            return az.from_dict(posterior={name: draws}, dims={name: [f"{name}_dim"]})
        return az.from_dict(posterior={n: draws[..., i] for i, n in enumerate(names)})


def gaussian_mixture(
    weights: Float[ArrayLike, " K"],
    means: Float[ArrayLike, "K d"],
    covariances: Float[ArrayLike, "K d d"] | None = None,
    *,
    scale_tril: Float[ArrayLike, "K d d"] | None = None,
) -> GaussianMixture:
    """A checked :class:`GaussianMixture` from weights, means and covariances.

    Args:
        weights: ``(K,)`` mixture weights: positive, summing to 1.
        means: ``(K, d)`` component means.
        covariances: ``(K, d, d)`` symmetric positive-definite covariances (or give
            ``scale_tril``).
        scale_tril: ``(K, d, d)`` lower Cholesky factors with positive diagonals.

    Returns:
        The mixture.

    Raises:
        ValueError: on mismatched shapes, NaN values, weights that do not sum to 1,
            covariances that are not symmetric positive definite, or factors that are not
            lower triangular with a positive diagonal.
    """
    weights_np = real_array("weights", weights).astype(float)
    means_np = real_array("means", means).astype(float)
    if weights_np.ndim != 1:
        raise ValueError(f"`weights` must have shape (K,), got {weights_np.shape}.")
    num_components = weights_np.shape[0]
    if means_np.ndim == 1 and means_np.shape[0] == num_components:
        means_np = means_np[:, None]  # one-dimensional components
    if means_np.ndim != 2 or means_np.shape[0] != num_components:
        raise ValueError(
            f"`means` must have shape ({num_components}, d) to match {num_components} weights, "
            f"got {means_np.shape}."
        )
    dim = means_np.shape[1]
    if (covariances is None) == (scale_tril is None):
        raise ValueError("pass exactly one of `covariances` and `scale_tril`.")
    name = "covariances" if covariances is not None else "scale_tril"
    matrices = real_array(name, covariances if covariances is not None else scale_tril)
    matrices = matrices.astype(float)
    if dim == 1 and matrices.shape == (num_components,):
        matrices = matrices[:, None, None]
    if matrices.shape != (num_components, dim, dim):
        raise ValueError(
            f"`{name}` must have shape ({num_components}, {dim}, {dim}), got {matrices.shape}."
        )
    for label, array in (("weights", weights_np), ("means", means_np), (name, matrices)):
        if not np.all(np.isfinite(array)):
            raise ValueError(
                f"`{label}` contains NaN or infinite values ({int(np.sum(~np.isfinite(array)))} "
                "entries); pass finite numbers."
            )
    check_magnitude("means", means_np, "rescale the problem (the latent's units)")
    if abs(weights_np.sum() - 1) > WEIGHT_SUM_TOLERANCE:
        raise ValueError(
            f"`weights` must sum to 1, got {weights_np.sum():.6g}; divide them by their sum."
        )
    if np.any(weights_np <= 0):
        raise ValueError(
            f"`weights` must be > 0, got min {weights_np.min():.3g}; drop the components "
            "with zero weight."
        )
    if covariances is not None:
        asymmetry = np.abs(matrices - np.swapaxes(matrices, -1, -2)).max()
        if asymmetry > 1e-6 * max(np.abs(matrices).max(), 1e-300):
            raise ValueError(
                f"`covariances` must be symmetric (largest asymmetry {asymmetry:.3g})."
            )
        eigenvalues = np.linalg.eigvalsh(matrices)
        if np.any(eigenvalues <= 0):
            bad = int(np.argmin(eigenvalues.min(axis=1)))
            raise ValueError(
                f"`covariances[{bad}]` is not positive definite (smallest eigenvalue "
                f"{eigenvalues[bad].min():.3g}); pass a symmetric positive-definite matrix."
            )
        tril = np.linalg.cholesky(matrices)
    else:
        if np.any(np.triu(matrices, 1) != 0):
            raise ValueError(
                "`scale_tril` must be lower triangular, got nonzero entries above the "
                "diagonal; pass `np.linalg.cholesky(covariance)` or use `covariances=`."
            )
        diagonal = np.diagonal(matrices, axis1=-2, axis2=-1)
        if np.any(diagonal <= 0):
            raise ValueError(
                f"`scale_tril` must have a positive diagonal, got min {diagonal.min():.3g}; "
                "flip the sign of the columns with a negative diagonal entry."
            )
        tril = matrices
    # The factors' diagonals are the components' (conditional) standard deviations.
    standard_deviations = np.diagonal(tril, axis1=-2, axis2=-1)
    check_magnitude(name, standard_deviations, "rescale the problem (the latent's units)",
                    scale=True, what="standard deviations")  # fmt: skip
    log_weights = np.log(weights_np / weights_np.sum())
    return GaussianMixture(jnp.asarray(log_weights), jnp.asarray(means_np), jnp.asarray(tril))
