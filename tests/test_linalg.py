"""Forward substitution and Cholesky factors (``probinfer._linalg``) against LAPACK's."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from probinfer._linalg import cholesky_lower, solve_lower_triangular


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_forward_substitution_matches_lapack(dtype):
    rng = np.random.default_rng(0)
    size = 12
    matrix = rng.normal(size=(size, size))
    factor = np.linalg.cholesky(matrix @ matrix.T + size * np.eye(size))
    garbage = factor + np.triu(rng.normal(size=(size, size)), 1)  # never read
    rhs = rng.normal(size=(size, 3))
    expected = scipy.linalg.solve_triangular(factor, rhs, lower=True)
    tolerance = 1e-12 if dtype == "float64" else 1e-5
    with jax.enable_x64(dtype == "float64"):
        solved = solve_lower_triangular(jnp.asarray(garbage, dtype), jnp.asarray(rhs, dtype))
        vector = solve_lower_triangular(jnp.asarray(factor, dtype), jnp.asarray(rhs[:, 0], dtype))
        batched = jax.vmap(solve_lower_triangular, in_axes=(None, 1), out_axes=1)(
            jnp.asarray(factor, dtype), jnp.asarray(rhs, dtype)
        )
    assert solved.dtype == vector.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(solved, expected, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(vector, expected[:, 0], rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(batched, expected, rtol=tolerance, atol=tolerance)


def test_gradients_match_lapack():
    """Training differentiates mixture densities through the loop."""
    rng = np.random.default_rng(1)
    factor = np.linalg.cholesky(np.eye(4) + 0.3 * np.ones((4, 4)))
    rhs, weights = rng.normal(size=(4, 2)), rng.normal(size=(4, 2))

    def loss(solve, factor, rhs):
        return jnp.sum(weights * solve(factor, rhs) ** 2)

    def lapack(factor, rhs):
        return jax.scipy.linalg.solve_triangular(factor, rhs, lower=True)

    with jax.enable_x64(True):
        factor, rhs = jnp.asarray(factor), jnp.asarray(rhs)
        ours = jax.grad(loss, argnums=(1, 2))(solve_lower_triangular, factor, rhs)
        theirs = jax.grad(loss, argnums=(1, 2))(lapack, factor, rhs)
    for mine, reference in zip(ours, theirs, strict=True):
        # Below the diagonal (LAPACK's solve never reads the upper triangle either).
        np.testing.assert_allclose(np.tril(mine), np.tril(reference), rtol=1e-10, atol=1e-12)


def test_numpy_inputs_and_no_right_hand_sides():
    factor = np.tril(np.ones((3, 3))) + np.eye(3)
    np.testing.assert_allclose(solve_lower_triangular(factor, np.array([2.0, 3.0, 4.0])),
                               [1.0, 1.0, 1.0], rtol=1e-6)  # fmt: skip
    assert solve_lower_triangular(factor, np.zeros((3, 0))).shape == (3, 0)


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match="`rhs` must be of shape"):
        solve_lower_triangular(jnp.eye(3), jnp.ones(4))
    with pytest.raises(ValueError, match="`factor` must be square"):
        solve_lower_triangular(jnp.ones((3, 2)), jnp.ones(3))
    with pytest.raises(ValueError, match="`rhs` must be of shape"):
        solve_lower_triangular(jnp.eye(3), jnp.ones((3, 2, 2)))


@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_cholesky_matches_lapack_and_fails_with_nans(dtype):
    rng = np.random.default_rng(2)
    size = 15
    inputs = rng.uniform(-1, 1, size=size)
    # A GP covariance as the likelihood builds it: smooth kernel plus a small noise.
    matrix = np.exp(-0.5 * (inputs[:, None] - inputs[None, :]) ** 2 / 0.3**2) + 0.01 * np.eye(size)
    garbage = matrix + np.triu(rng.normal(size=(size, size)), 1)  # never read
    expected = np.linalg.cholesky(matrix)
    tolerance = 1e-10 if dtype == "float64" else 2e-4
    with jax.enable_x64(dtype == "float64"):
        factor = cholesky_lower(jnp.asarray(garbage, dtype))
        indefinite = cholesky_lower(jnp.asarray(matrix - 2 * np.eye(size), dtype))
        batched = jax.vmap(cholesky_lower)(jnp.asarray(np.stack([matrix, 2 * matrix]), dtype))
    assert factor.dtype == jnp.dtype(dtype)
    np.testing.assert_allclose(factor, expected, rtol=tolerance, atol=tolerance)
    np.testing.assert_allclose(batched[1], np.sqrt(2) * expected, rtol=tolerance, atol=tolerance)
    assert np.isnan(np.asarray(indefinite)).any()


def test_cholesky_gradient_matches_lapack():
    """The NUTS reference of benchmarks/dt_gp.py differentiates GP likelihoods."""
    rng = np.random.default_rng(3)
    root = rng.normal(size=(5, 5))
    matrix, weights = root @ root.T + 5 * np.eye(5), rng.normal(size=(5, 5))

    def loss(factorise, matrix):
        return jnp.sum(weights * factorise(0.5 * (matrix + matrix.T)))

    with jax.enable_x64(True):
        ours = jax.grad(loss, argnums=1)(cholesky_lower, jnp.asarray(matrix))
        theirs = jax.grad(loss, argnums=1)(jnp.linalg.cholesky, jnp.asarray(matrix))
    np.testing.assert_allclose(ours, theirs, rtol=1e-9, atol=1e-12)
    with pytest.raises(ValueError, match="must be square"):
        cholesky_lower(jnp.ones((3, 2)))
