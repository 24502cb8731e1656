"""Euclidean metrics: momentum sampling, kinetic energy and velocity for a mass matrix.

The metric is given by its *inverse* mass matrix ``M^{-1}``, which adaptation estimates as
the posterior covariance: a 1-D array is a diagonal, a 2-D array is dense. All functions
act on flat (raveled) vectors.
"""

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import jax.scipy.linalg as jsl
from jaxtyping import Array, Float, PRNGKeyArray


class Metric(NamedTuple):
    """Functions of one Euclidean metric, acting on flat vectors of length ``dim``.

    Attributes:
        sample_momentum: ``key -> p`` with ``p ~ Normal(0, M)``.
        momentum_from_noise: ``z -> p``, turning standard normal noise ``z`` into
            ``p ~ Normal(0, M)`` (for noise drawn by other means than ``jax.random``).
        kinetic_energy: ``p -> 0.5 p^T M^{-1} p``.
        velocity: ``p -> M^{-1} p`` (Stan's ``p_sharp``).
        scale: ``z -> L z`` with ``L L^T = M^{-1}``: turns standard normal noise into
            noise with covariance ``M^{-1}`` (the random-walk and Langevin proposals).
        mahalanobis: ``r -> r^T M r``, the squared norm of a displacement under the
            covariance ``M^{-1}`` (the Langevin proposal density); ``r`` may also be a
            stack ``(k, dim)`` of displacements, giving ``(k,)`` norms from one solve.
    """

    sample_momentum: Callable[[PRNGKeyArray], Array]
    momentum_from_noise: Callable[[Array], Array]
    kinetic_energy: Callable[[Array], Array]
    velocity: Callable[[Array], Array]
    scale: Callable[[Array], Array]
    mahalanobis: Callable[[Array], Array]


class MassMatrix(NamedTuple):
    """An inverse mass matrix with its square root, factored once.

    Kernels accept this wherever they accept an inverse mass matrix. Passing the factor
    saves a Cholesky decomposition per transition when the matrix is carried in a state
    (as during sampling after warm-up), where the compiler cannot hoist it out of the loop.

    Attributes:
        inverse: ``(dim,)`` variances or a ``(dim, dim)`` covariance.
        sqrt: ``sqrt(inverse)`` (diagonal) or the lower Cholesky factor (dense).
    """

    inverse: Array
    sqrt: Array


def factor_mass_matrix(inverse_mass_matrix: Array) -> MassMatrix:
    """Factor an inverse mass matrix.

    Args:
        inverse_mass_matrix: ``(dim,)`` or ``(dim, dim)``.

    Returns:
        The :class:`MassMatrix`.
    """
    if jnp.ndim(inverse_mass_matrix) == 2:
        return MassMatrix(inverse_mass_matrix, jnp.linalg.cholesky(inverse_mass_matrix))
    return MassMatrix(inverse_mass_matrix, jnp.sqrt(inverse_mass_matrix))


def euclidean_metric(
    inverse_mass_matrix: Float[Array, " dim"] | Float[Array, "dim dim"] | MassMatrix,
) -> Metric:
    """Build the :class:`Metric` for a diagonal (1-D) or dense (2-D) inverse mass matrix.

    Args:
        inverse_mass_matrix: shape ``(dim,)`` for a diagonal metric or ``(dim, dim)``
            (symmetric positive definite) for a dense one, or a :class:`MassMatrix`
            with its factor already computed.

    Returns:
        The metric's functions.
    """
    if isinstance(inverse_mass_matrix, MassMatrix):
        inverse_mass_matrix, factor = inverse_mass_matrix
    else:
        factor = None
    if jnp.ndim(inverse_mass_matrix) == 1:
        sqrt_inverse_mass = jnp.sqrt(inverse_mass_matrix) if factor is None else factor

        def momentum_from_noise(noise: Array) -> Array:
            return noise / sqrt_inverse_mass

        def velocity(momentum: Array) -> Array:
            return inverse_mass_matrix * momentum

        def scale(noise: Array) -> Array:
            return sqrt_inverse_mass * noise

        def mahalanobis(displacement: Array) -> Array:
            variances = jnp.broadcast_to(inverse_mass_matrix, displacement.shape)
            return jnp.sum(displacement**2 / variances, axis=-1)

    elif jnp.ndim(inverse_mass_matrix) == 2:
        # M^{-1} = L L^T, so M = L^{-T} L^{-1} and p = L^{-T} z has covariance M.
        cholesky = jnp.linalg.cholesky(inverse_mass_matrix) if factor is None else factor

        def momentum_from_noise(noise: Array) -> Array:
            return jsl.solve_triangular(cholesky, noise, lower=True, trans="T")

        def velocity(momentum: Array) -> Array:
            return inverse_mass_matrix @ momentum

        def scale(noise: Array) -> Array:
            return cholesky @ noise

        def mahalanobis(displacement: Array) -> Array:
            # One triangular solve for a whole stack: XLA:CPU (jaxlib 0.10.0-0.11.0, which
            # the requirements exclude) can deadlock when
            # two independent triangular solves run concurrently inside a vmapped loop.
            whitened = jsl.solve_triangular(cholesky, displacement.T, lower=True)
            return jnp.sum(whitened**2, axis=0)

    else:
        raise ValueError(
            "`inverse_mass_matrix` must be 1-D (diagonal) or 2-D (dense), got shape "
            f"{jnp.shape(inverse_mass_matrix)}; pass a vector of variances or a covariance matrix."
        )

    def sample_momentum(key: PRNGKeyArray) -> Array:
        noise = jax.random.normal(key, inverse_mass_matrix.shape[:1], inverse_mass_matrix.dtype)
        return momentum_from_noise(noise)

    def kinetic_energy(momentum: Array) -> Array:
        return 0.5 * jnp.dot(momentum, velocity(momentum))

    return Metric(
        sample_momentum=sample_momentum,
        momentum_from_noise=momentum_from_noise,
        kinetic_energy=kinetic_energy,
        velocity=velocity,
        scale=scale,
        mahalanobis=mahalanobis,
    )


def population_covariance(
    flat: Float[Array, "num dim"], log_weights: Float[Array, " num"], is_dense: bool
) -> Array:
    """The weighted covariance of a population (SMC particles, live points), regularised.

    A ridge of ``sqrt(eps)`` times the mean variance keeps it positive definite when the
    population is degenerate (duplicates after resampling, a coordinate that no longer
    varies), so it can always serve as an inverse mass matrix.

    Args:
        flat: ``(num, dim)`` flat positions.
        log_weights: ``(num,)`` normalised log weights.
        is_dense: the full ``(dim, dim)`` matrix, or its diagonal ``(dim,)``.

    Returns:
        The covariance, ``(dim, dim)`` or ``(dim,)``.
    """
    weights = jnp.exp(log_weights)[:, None]
    mean = jnp.sum(weights * flat, axis=0)
    centered = flat - mean[None, :]
    scale = jnp.finfo(flat.dtype).eps ** 0.5
    if not is_dense:
        variance = jnp.sum(weights * centered**2, axis=0)
        return variance + scale * jnp.maximum(jnp.mean(variance), scale)
    covariance = (weights * centered).T @ centered
    ridge = scale * jnp.maximum(jnp.trace(covariance) / flat.shape[1], scale)
    return covariance + ridge * jnp.eye(flat.shape[1], dtype=flat.dtype)
