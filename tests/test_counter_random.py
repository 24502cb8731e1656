"""The counter-based draws of NUTS's transitions (`probinfer.mcmc._counter_random`)."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.stats

from probinfer.mcmc._counter_random import (
    counter_normal,
    counter_uniform,
    threefry2x32,
    uniform_from_bits,
)


@pytest.mark.parametrize("counter", [0, 1, 7, 2**31 + 5, 2**32 - 1])
def test_written_out_threefry_is_jaxs_threefry(counter):
    key = jax.random.bits(jax.random.key(5), (2,), jnp.uint32)
    expected = jax.extend.random.threefry_2x32(
        (key[0], key[1]), jnp.array([counter, 0], jnp.uint32)
    )
    low, high = jax.jit(threefry2x32)(key, (jnp.uint32(counter), jnp.uint32(0)))
    np.testing.assert_array_equal([low, high], expected)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_counter_uniforms_are_uniform_on_the_open_interval(dtype):
    """Chi-square on 100 equal bins of 200,000 draws (p > 1e-4: fails about 1 seed in 10^4),
    and the lag-1 correlation between consecutive counters within 5 standard errors."""
    with jax.enable_x64(dtype == "float64"):
        key = jax.random.bits(jax.random.key(0), (2,), jnp.uint32)
        draws = np.asarray(counter_uniform(key, jnp.arange(200_000), jnp.dtype(dtype)))
    assert draws.dtype == np.dtype(dtype)
    assert draws.min() > 0.0 and draws.max() < 1.0
    counts = np.bincount((draws * 100).astype(int), minlength=100)
    assert scipy.stats.chisquare(counts).pvalue > 1e-4
    lag_correlation = np.corrcoef(draws[:-1], draws[1:])[0, 1]
    assert abs(lag_correlation) < 5 / np.sqrt(draws.size)


@pytest.mark.parametrize(("dtype", "smallest"), [("float32", 2.0**-24), ("float64", 2.0**-53)])
def test_bits_map_to_the_midpoints_of_equal_cells(dtype, smallest):
    """All-zero and all-one bits give the ends of the open interval exactly, and in float64
    both words matter (52 bits of resolution)."""
    with jax.enable_x64(dtype == "float64"):
        zero, ones = jnp.uint32(0), jnp.uint32(2**32 - 1)
        ends = [
            uniform_from_bits(zero, zero, jnp.dtype(dtype)),
            uniform_from_bits(ones, ones, jnp.dtype(dtype)),
        ]
        assert [float(end) for end in ends] == [smallest, 1.0 - smallest]
        if dtype == "float64":
            lowest_bit = uniform_from_bits(jnp.uint32(1), zero, jnp.dtype(dtype))
            high_word = uniform_from_bits(zero, jnp.uint32(2**12), jnp.dtype(dtype))
            assert (
                float(lowest_bit) == 3 * smallest and float(high_word) == (2**32 + 0.5) * 2.0**-52
            )


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_counter_normals_are_standard_normal_and_apart_from_the_uniforms(dtype):
    """Kolmogorov-Smirnov against N(0, 1) on 200,000 finite draws (p > 1e-4); and the normal
    and uniform streams of one key are uncorrelated (rank correlation within 5 standard
    errors: the normals are not a function of the uniforms at the same counters)."""
    with jax.enable_x64(dtype == "float64"):
        key = jax.random.bits(jax.random.key(1), (2,), jnp.uint32)
        counter = jnp.arange(200_000)
        normals = np.asarray(counter_normal(key, counter, jnp.dtype(dtype)))
        uniforms = np.asarray(counter_uniform(key, counter, jnp.dtype(dtype)))
    assert normals.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(normals))
    assert scipy.stats.kstest(normals, "norm").pvalue > 1e-4
    rank_correlation = scipy.stats.spearmanr(normals, uniforms).statistic
    assert abs(rank_correlation) < 5 / np.sqrt(normals.size)
