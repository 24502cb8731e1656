"""The counter-based draws of NUTS's transitions (`probinfer.mcmc._counter_random`), and the
metric's map from their normals to momenta."""

import jax
import jax.extend
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.special
import scipy.stats

from probinfer.mcmc._counter_random import (
    counter_normal,
    counter_uniform,
    threefry2x32,
    uniform_from_bits,
)
from probinfer.mcmc._metric import euclidean_metric


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
def test_counter_normals_are_standard_normal(dtype):
    """200,000 finite draws: Kolmogorov-Smirnov against N(0, 1) (p > 1e-4), and mean and
    variance within 5 standard errors (a 1% error in the scale is 3.2 of them)."""
    with jax.enable_x64(dtype == "float64"):
        key = jax.random.bits(jax.random.key(1), (2,), jnp.uint32)
        normals = np.asarray(counter_normal(key, jnp.arange(200_000), jnp.dtype(dtype)))
    assert normals.dtype == np.dtype(dtype)
    assert np.all(np.isfinite(normals))
    assert scipy.stats.kstest(normals, "norm").pvalue > 1e-4
    n = normals.size
    assert abs(normals.mean()) < 5 / np.sqrt(n)
    assert abs(normals.astype(np.float64).var() - 1.0) < 5 * np.sqrt(2 / n)


def test_counter_normals_hash_their_own_stream():
    """Normal ``c`` is the normal quantile of the uniform hashed from the counter pair
    ``(c, 1)``, never from a uniform's pair ``(c', 0)``: the momentum's normals and the
    per-leaf uniforms of one NUTS seed share no bits."""
    key = jax.random.bits(jax.random.key(2), (2,), jnp.uint32)
    counter = jnp.arange(1000)
    normals = np.asarray(counter_normal(key, counter, jnp.float32), np.float64)
    low, high = threefry2x32(key, (counter.astype(jnp.uint32), jnp.ones(1000, jnp.uint32)))
    own = np.asarray(uniform_from_bits(low, high, jnp.float32), np.float64)
    np.testing.assert_allclose(normals, scipy.special.ndtri(own), atol=1e-5)
    uniforms = np.asarray(counter_uniform(key, jnp.arange(4000), jnp.float32), np.float64)
    assert np.intersect1d(uniforms, own).size < 5  # equal cells by chance: ~1000 * 4000 / 2^23


def test_half_precision_normals_stay_finite():
    """float16 rounds uniforms near 0 and 1 to the ends; the normals are computed in float32
    first, so the most extreme cells still give finite draws."""
    key = jax.random.bits(jax.random.key(3), (2,), jnp.uint32)
    normals = counter_normal(key, jnp.arange(100_000), jnp.float16)
    assert normals.dtype == jnp.float16 and bool(jnp.all(jnp.isfinite(normals)))


@pytest.mark.parametrize("dense", [False, True])
def test_momentum_from_noise_has_the_mass_matrix_as_covariance(dense):
    """``p = momentum_from_noise(z)`` is linear in ``z``; for ``z ~ N(0, I)`` its covariance
    ``P P^T`` (``P`` the map applied to the identity's columns) is the mass matrix ``M``,
    the inverse of the metric's inverse mass matrix (exact, float64)."""
    with jax.enable_x64(True):
        if dense:
            root = jnp.array([[1.0, 0.0, 0.0], [0.6, 0.8, 0.0], [-0.3, 0.2, 0.5]])
            inverse_mass = root @ root.T
        else:
            inverse_mass = jnp.array([0.5, 2.0, 4.0])
        metric = euclidean_metric(inverse_mass)
        columns = jax.vmap(metric.momentum_from_noise, out_axes=1)(jnp.eye(3))
        expected = jnp.linalg.inv(inverse_mass) if dense else jnp.diag(1.0 / inverse_mass)
        np.testing.assert_allclose(columns @ columns.T, expected, rtol=1e-12, atol=1e-12)
