"""Counter-based uniforms and normals for per-transition and per-leapfrog-step draws:
Threefry-2x32 written out in full.

JAX lowers its Threefry hash on CPU as a rolled loop of five iterations, a few dozen small
operations each; drawing one uniform per leapfrog step with ``jax.random`` (a ``fold_in``
and a draw: two hashes) then costs more than the leapfrog step on small models. The same
hash written out here is a straight line of 32-bit integer operations that XLA fuses into
one kernel. It is bit-for-bit JAX's Threefry-2x32 (Salmon et al., 2011; tested against
``jax.extend.random.threefry_2x32``).

Uniforms hash the counter pair ``(counter, 0)`` and normals ``(counter, 1)``, so the two
streams of one key never share bits.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)


def _rotate_left(value: Array, distance: int) -> Array:
    return (value << np.uint32(distance)) | (value >> np.uint32(32 - distance))


def threefry2x32(key: Array, counter: tuple[Array, Array]) -> tuple[Array, Array]:
    """The Threefry-2x32 hash (20 rounds) of a pair of 32-bit counters.

    Args:
        key: ``(2,)`` uint32, the hash key.
        counter: two uint32 arrays of the same shape.

    Returns:
        Two uint32 arrays of that shape: 64 random bits per counter pair.
    """
    keys = (key[0], key[1], key[0] ^ key[1] ^ _KEY_PARITY)
    x0 = counter[0] + keys[0]
    x1 = counter[1] + keys[1]
    for group in range(5):
        for distance in _ROTATIONS[group % 2]:
            x0 = x0 + x1
            x1 = _rotate_left(x1, distance) ^ x0
        x0 = x0 + keys[(group + 1) % 3]
        x1 = x1 + keys[(group + 2) % 3] + np.uint32(group + 1)
    return x0, x1


_UNIFORM_STREAM = 0  # the second counter word of uniforms
_NORMAL_STREAM = 1  # and of normals: the two streams of one key never share a hash


def _stream_uniform(key: Array, counter: Array, stream: int, dtype: jnp.dtype) -> Array:
    counter = jnp.asarray(counter).astype(jnp.uint32)
    low, high = threefry2x32(key, (counter, jnp.full_like(counter, stream)))
    return uniform_from_bits(low, high, dtype)


def counter_uniform(key: Array, counter: Array, dtype: jnp.dtype) -> Array:
    """A uniform draw on ``(0, 1)`` for each value of ``counter``, independent across counters.

    The values are the midpoints of ``2^23`` (float64: ``2^52``) equal cells, so neither 0
    nor 1 occurs: their logarithms and normal quantiles are finite.

    Args:
        key: ``(2,)`` uint32 (e.g. ``jax.random.bits(key, (2,), jnp.uint32)``).
        counter: integer array (e.g. a step count), taken modulo ``2^32``.
        dtype: float64 (52 random bits) or another float type (23 bits, through
            float32; see :func:`uniform_from_bits`).

    Returns:
        Uniforms of ``counter``'s shape and ``dtype``.
    """
    return _stream_uniform(key, counter, _UNIFORM_STREAM, dtype)


def counter_normal(key: Array, counter: Array, dtype: jnp.dtype) -> Array:
    """A standard normal draw for each value of ``counter``, independent across counters
    and of :func:`counter_uniform`'s draws with the same key.

    The normal quantile of a uniform from :func:`uniform_from_bits` (as ``jax.random.normal``
    does, through the inverse error function; ``2u - 1`` is exact on those cells). Float32
    draws are bounded by about 5.29 in absolute value (missing tail mass about ``1.2e-7``
    per draw) and float64 ones by about 8.21 (``2e-16``). Types other than float64 are
    computed in float32 and rounded, so half-precision draws stay finite.

    Args:
        key: ``(2,)`` uint32.
        counter: integer array, taken modulo ``2^32``.
        dtype: the result's float type.

    Returns:
        Normals of ``counter``'s shape and ``dtype``.
    """
    working = jnp.float64 if jnp.dtype(dtype) == jnp.float64 else jnp.float32
    uniform = _stream_uniform(key, counter, _NORMAL_STREAM, working)
    normal = np.sqrt(2.0).astype(working) * jax.lax.erf_inv(2 * uniform - 1)
    return normal.astype(dtype)


def uniform_from_bits(low: Array, high: Array, dtype: jnp.dtype) -> Array:
    """Map 64 random bits to the midpoint of one of ``2^52`` (float64) or ``2^23`` (other
    float types, through float32) equal cells of ``(0, 1)``.

    Args:
        low: uint32, the low word.
        high: uint32, the high word (float64 only).
        dtype: the result's float type. For float32 and float64 the ends are
            ``2^-24, 1 - 2^-24`` and ``2^-53, 1 - 2^-53``; a half-precision type rounds
            float32's values, so it can give 0 or 1.

    Returns:
        Uniforms of ``low``'s shape and ``dtype``.
    """
    if jnp.dtype(dtype) == jnp.float64:
        # 52 bits: the top 20 of `high` and all of `low`; k + 1/2 is exact below 2^52.
        integer = (high >> np.uint32(12)).astype(jnp.float64) * 2.0**32 + low.astype(jnp.float64)
        return (integer + 0.5) * 2.0**-52
    # 23 bits; k + 1/2 is exact in float32 below 2^23.
    integer = (low >> np.uint32(9)).astype(jnp.float32)
    return ((integer + np.float32(0.5)) * np.float32(2.0**-23)).astype(dtype)
