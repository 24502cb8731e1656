"""JAX's Threefry-2x32 PRNG written out as straight-line integer operations.

JAX lowers its Threefry hash on CPU as a rolled loop of five iterations, a few dozen small
operations each (to keep compile times down), and every ``jax.random.fold_in`` or
``jax.random.bits`` is one such loop. In a per-step path (a chunk deriving each step's
key, a NUTS transition drawing its seed) those loops cost more than a small model's
leapfrog step: eight schools, interleaved chains, three of them took as long as the rest
of a finishing iteration. The same hash written out is a straight line that XLA fuses into
one kernel. :func:`threefry2x32` is bit-for-bit JAX's hash (Salmon et al., 2011), and
:func:`fold_in` and :func:`key_bits` give exactly ``jax.random.fold_in`` and
``jax.random.bits``'s values for Threefry keys (either setting of
``jax_threefry_partitionable``); other key types go to ``jax.random``.
"""

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

_ROTATIONS = ((13, 15, 26, 6), (17, 29, 16, 24))
_KEY_PARITY = np.uint32(0x1BD11BDA)
_THREEFRY = "threefry2x32"


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


def _threefry_data(key: PRNGKeyArray) -> Array | None:
    """The ``(2,)`` uint32 data of a Threefry key (typed or raw), or None for other keys."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        if str(jax.random.key_impl(key)) != _THREEFRY or key.shape:
            return None
        return jax.random.key_data(key)
    if jax.config.values["jax_default_prng_impl"] != _THREEFRY or key.shape != (2,):
        return None
    return key


def _like_key(key: PRNGKeyArray, data: Array) -> PRNGKeyArray:
    """``data`` as a key of ``key``'s kind (typed or raw)."""
    if jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return jax.random.wrap_key_data(data, impl=_THREEFRY)
    return data


def fold_in(key: PRNGKeyArray, data: int | Array) -> PRNGKeyArray:
    """``jax.random.fold_in(key, data)``, bit for bit, without the rolled loop.

    Args:
        key: one PRNG key, typed or raw.
        data: an integer scalar, taken modulo ``2^32`` as ``jax.random`` does.

    Returns:
        The new key, of ``key``'s kind.
    """
    raw = _threefry_data(key)
    if raw is None:
        return jax.random.fold_in(key, data)
    counter = jnp.asarray(data).astype(jnp.uint32)
    high, low = threefry2x32(raw, (jnp.zeros_like(counter), counter))
    return _like_key(key, jnp.stack([high, low]))


def key_bits(key: PRNGKeyArray, count: int) -> Array:
    """``jax.random.bits(key, (count,), jnp.uint32)``, bit for bit, without the rolled loop.

    Args:
        key: one PRNG key, typed or raw.
        count: how many 32-bit words.

    Returns:
        ``(count,)`` uint32.
    """
    raw = _threefry_data(key)
    if raw is None:
        return jax.random.bits(key, (count,), jnp.uint32)
    if jax.config.values["jax_threefry_partitionable"]:
        # One hash per word, of the counter pair (0, i); the word is the two halves' xor.
        index = jnp.arange(count, dtype=jnp.uint32)
        high, low = threefry2x32(raw, (jnp.zeros_like(index), index))
        return high ^ low
    # The counters 0..count-1 (an odd count padded with a 0) split in halves that are
    # hashed as pairs.
    half = (count + 1) // 2
    index = jnp.arange(2 * half, dtype=jnp.uint32) % np.uint32(count)
    first, second = threefry2x32(raw, (index[:half], index[half:]))
    return jnp.concatenate([first, second])[:count]
