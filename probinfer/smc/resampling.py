"""Resampling schemes: ``(key, weights, num_samples) -> indices``, interchangeable.

``weights`` are normalised probabilities (not log weights), shape ``(N,)``; the result
holds ``num_samples`` ancestor indices in ``0..N-1``, each index ``i`` appearing
``N_i`` times with ``E[N_i] = num_samples * weights[i]`` (unbiased). Multinomial draws are
independent; stratified and systematic draw one uniform per stratum ``[k, k+1) / M`` (one
shared uniform for systematic); residual keeps ``floor(M w_i)`` copies and draws the rest
multinomially. The last three have lower variance than multinomial (Douc, Cappé &
Moulines, 2005), which keeps more distinct particles.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray


def _search(weights: Array, points: Array) -> Array:
    """Indices ``i`` with ``cumsum(w)[i-1] <= u < cumsum(w)[i]`` for sorted ``points``."""
    cumulative = jnp.cumsum(weights)
    # Rounding can leave the total a hair below 1: clip so every point finds a bucket.
    indices = jnp.searchsorted(cumulative, points * cumulative[-1], side="right")
    return jnp.clip(indices, 0, weights.shape[0] - 1).astype(jnp.int32)


def multinomial(
    key: PRNGKeyArray, weights: Float[Array, " n"], num_samples: int
) -> Int[Array, " num_samples"]:
    """Independent draws from the categorical distribution ``weights``.

    Args:
        key: PRNG key.
        weights: normalised weights ``(N,)``.
        num_samples: number of indices ``M``.

    Returns:
        ``(M,)`` ancestor indices (sorted).
    """
    points = jnp.sort(jax.random.uniform(key, (num_samples,), weights.dtype))
    return _search(weights, points)


def stratified(
    key: PRNGKeyArray, weights: Float[Array, " n"], num_samples: int
) -> Int[Array, " num_samples"]:
    """One uniform draw in each stratum ``[k, k + 1) / M``.

    Args:
        key: PRNG key.
        weights: normalised weights ``(N,)``.
        num_samples: number of indices ``M``.

    Returns:
        ``(M,)`` ancestor indices (sorted).
    """
    offsets = jax.random.uniform(key, (num_samples,), weights.dtype)
    points = (jnp.arange(num_samples, dtype=weights.dtype) + offsets) / num_samples
    return _search(weights, points)


def systematic(
    key: PRNGKeyArray, weights: Float[Array, " n"], num_samples: int
) -> Int[Array, " num_samples"]:
    """One uniform shared by every stratum: points ``(k + U) / M``.

    Args:
        key: PRNG key.
        weights: normalised weights ``(N,)``.
        num_samples: number of indices ``M``.

    Returns:
        ``(M,)`` ancestor indices (sorted).
    """
    offset = jax.random.uniform(key, (), weights.dtype)
    points = (jnp.arange(num_samples, dtype=weights.dtype) + offset) / num_samples
    return _search(weights, points)


def residual(
    key: PRNGKeyArray, weights: Float[Array, " n"], num_samples: int
) -> Int[Array, " num_samples"]:
    """``floor(M w_i)`` copies of each index, the remainder drawn multinomially.

    Args:
        key: PRNG key.
        weights: normalised weights ``(N,)``.
        num_samples: number of indices ``M``.

    Returns:
        ``(M,)`` ancestor indices (sorted).
    """
    scaled = num_samples * weights
    copies = jnp.floor(scaled).astype(jnp.int32)
    num_deterministic = jnp.sum(copies)
    remainder = scaled - copies
    remainder_weights = remainder / jnp.maximum(jnp.sum(remainder), jnp.finfo(weights.dtype).tiny)
    # Slot k < num_deterministic takes the k-th deterministic copy; the rest are drawn.
    deterministic = jnp.repeat(
        jnp.arange(weights.shape[0], dtype=jnp.int32), copies, total_repeat_length=num_samples
    )
    # Independent draws in draw order (not sorted): slot num_deterministic + j takes the
    # j-th, so the kept draws are an i.i.d. sample whatever their number.
    drawn = jax.random.categorical(key, jnp.log(remainder_weights), shape=(num_samples,))
    slots = jnp.arange(num_samples)
    from_remainder = drawn[jnp.maximum(slots - num_deterministic, 0)].astype(jnp.int32)
    return jnp.sort(jnp.where(slots < num_deterministic, deterministic, from_remainder))
