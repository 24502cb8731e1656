"""Welford's streaming mean and covariance, and Stan's regularized mass-matrix estimate."""

from typing import NamedTuple

import jax.numpy as jnp
from jaxtyping import Array


class WelfordState(NamedTuple):
    """Running moments of flat positions.

    Attributes:
        count: number of samples seen.
        mean: running mean, shape ``(dim,)``.
        m2: sum of squared deviations: ``(dim,)`` (diagonal) or ``(dim, dim)`` (dense).
    """

    # Shadows tuple.count; the name is public through WindowAdaptationState.welford.
    count: Array  # pyright: ignore[reportIncompatibleMethodOverride]
    mean: Array
    m2: Array


def welford_init(dim: int, is_dense: bool, dtype: jnp.dtype) -> WelfordState:
    """Empty running moments.

    Args:
        dim: dimension of the flat position.
        is_dense: whether to track the full covariance or only the variances.
        dtype: floating dtype of the positions.

    Returns:
        The empty state.
    """
    m2_shape = (dim, dim) if is_dense else (dim,)
    return WelfordState(jnp.zeros((), dtype), jnp.zeros((dim,), dtype), jnp.zeros(m2_shape, dtype))


def welford_update(state: WelfordState, value: Array) -> WelfordState:
    """Add one sample.

    Args:
        state: current moments.
        value: a flat sample, shape ``(dim,)``.

    Returns:
        The updated moments.
    """
    count = state.count + 1
    delta = value - state.mean
    mean = state.mean + delta / count
    delta_after = value - mean
    if state.m2.ndim == 2:
        m2 = state.m2 + jnp.outer(delta_after, delta)
    else:
        m2 = state.m2 + delta_after * delta
    return WelfordState(count, mean, m2)


def regularized_covariance(state: WelfordState) -> Array:
    """Stan's shrunk covariance estimate used as the inverse mass matrix.

    ``(n / (n + 5)) * S + 1e-3 * (5 / (n + 5)) * I``, with ``S`` the sample covariance,
    which keeps the estimate positive definite after few samples.

    Args:
        state: running moments with ``count >= 2``.

    Returns:
        ``(dim,)`` variances or a ``(dim, dim)`` covariance.
    """
    n = state.count
    covariance = state.m2 / jnp.maximum(n - 1, 1)
    shrink = 1e-3 * 5.0 / (n + 5.0)
    if covariance.ndim == 2:
        return (n / (n + 5.0)) * covariance + shrink * jnp.eye(
            covariance.shape[0], dtype=covariance.dtype
        )
    return (n / (n + 5.0)) * covariance + shrink
