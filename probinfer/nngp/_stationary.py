"""Stationary kernels (squared exponential and Matérn-5/2), for GP priors and baselines.

With ``r^2 = sum_j ((x_j - x'_j) / lengthscale_j)^2``:

    rbf:       k = variance * exp(-r^2 / 2)
    matern52:  k = variance * (1 + sqrt(5) r + 5 r^2 / 3) * exp(-sqrt(5) r)

``lengthscale`` is a scalar or one value per feature (automatic relevance determination).
Both are :class:`AbstractKernel` s, so they plug into :class:`ScaleMixtureProcess`.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING

import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float

from probinfer.nngp._checks import check_inputs, check_positive
from probinfer.nngp._kernel import AbstractKernel


def _scaled_squared_distance(x1: Array, x2: Array, lengthscale: Array) -> Array:
    scale = jnp.atleast_1d(lengthscale)[None, :]  # (1, 1) or (1, d): same rank as x
    # Centring first keeps |a|^2 + |b|^2 - 2 a.b from cancelling catastrophically when the
    # inputs sit far from the origin relative to the lengthscale (distances are unchanged).
    center = jnp.mean(x1, axis=0, keepdims=True)
    a, b = (x1 - center) / scale, (x2 - center) / scale
    squared = (
        jnp.sum(a**2, axis=-1, keepdims=True)
        + jnp.sum(b**2, axis=-1, keepdims=True).T
        - 2 * a @ b.T
    )
    return jnp.maximum(squared, 0.0)


class _Stationary(AbstractKernel):
    lengthscale: Array
    variance: Array

    def __init__(self, lengthscale: ArrayLike = 1.0, variance: ArrayLike = 1.0) -> None:
        check_positive(lengthscale, "lengthscale")
        check_positive(variance, "variance")
        self.lengthscale = jnp.asarray(lengthscale, jnp.result_type(float))
        self.variance = jnp.asarray(variance, jnp.result_type(float))

    @abc.abstractmethod
    def _profile(self, squared_distance: Array) -> Array:
        """The kernel as a function of the scaled squared distance, at unit variance."""

    def __call__(
        self, x1: Float[ArrayLike, "n1 d"], x2: Float[ArrayLike, "n2 d"] | None = None
    ) -> Float[Array, "n1 n2"]:
        """The covariance matrix between the rows of ``x1`` and ``x2`` (default ``x1``)."""
        check_inputs(x1, "x1")
        x1 = jnp.asarray(x1, jnp.result_type(float))
        if x2 is None:
            x2 = x1
        else:
            check_inputs(x2, "x2", num_features=x1.shape[1])
            x2 = jnp.asarray(x2, x1.dtype)
        return self.variance * self._profile(_scaled_squared_distance(x1, x2, self.lengthscale))

    def diagonal(self, x: Float[ArrayLike, "n d"]) -> Float[Array, " n"]:
        """``variance`` for every row."""
        return jnp.full(jnp.shape(x)[0], self.variance, jnp.result_type(float))


class RBF(_Stationary):
    """The squared-exponential kernel ``variance * exp(-r^2 / 2)``.

    Attributes:
        lengthscale: scalar or ``(d,)`` lengthscales (> 0).
        variance: the output variance (> 0).
    """

    if TYPE_CHECKING:
        # Equinox inherits _Stationary.__init__; pyright would synthesise a dataclass one.
        def __init__(self, lengthscale: ArrayLike = 1.0, variance: ArrayLike = 1.0) -> None: ...

    def _profile(self, squared_distance: Array) -> Array:
        return jnp.exp(-0.5 * squared_distance)


class Matern52(_Stationary):
    """The Matérn-5/2 kernel ``variance (1 + sqrt(5) r + 5 r^2 / 3) exp(-sqrt(5) r)``.

    Attributes:
        lengthscale: scalar or ``(d,)`` lengthscales (> 0).
        variance: the output variance (> 0).
    """

    if TYPE_CHECKING:
        # Equinox inherits _Stationary.__init__; pyright would synthesise a dataclass one.
        def __init__(self, lengthscale: ArrayLike = 1.0, variance: ArrayLike = 1.0) -> None: ...

    def _profile(self, squared_distance: Array) -> Array:
        # sqrt has an infinite derivative at 0; the kernel itself is smooth there.
        safe = jnp.where(squared_distance > 0, squared_distance, 1.0)
        r = jnp.where(squared_distance > 0, jnp.sqrt(safe), 0.0)
        return (1 + jnp.sqrt(5.0) * r + 5.0 / 3.0 * squared_distance) * jnp.exp(-jnp.sqrt(5.0) * r)


def rbf(lengthscale: ArrayLike = 1.0, variance: ArrayLike = 1.0) -> RBF:
    """The squared-exponential kernel; see :class:`RBF`.

    Args:
        lengthscale: scalar or ``(d,)`` lengthscales (> 0).
        variance: output variance (> 0).

    Returns:
        The kernel.
    """
    return RBF(lengthscale, variance)


def matern52(lengthscale: ArrayLike = 1.0, variance: ArrayLike = 1.0) -> Matern52:
    """The Matérn-5/2 kernel; see :class:`Matern52`.

    Args:
        lengthscale: scalar or ``(d,)`` lengthscales (> 0).
        variance: output variance (> 0).

    Returns:
        The kernel.
    """
    return Matern52(lengthscale, variance)
