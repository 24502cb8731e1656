"""Forward substitution (``probinfer._linalg``) against LAPACK's triangular solve."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.linalg

from probinfer._linalg import solve_lower_triangular


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


def test_mismatched_shapes_are_named():
    with pytest.raises(ValueError, match="square and match"):
        solve_lower_triangular(jnp.eye(3), jnp.ones(4))
    with pytest.raises(ValueError, match="square and match"):
        solve_lower_triangular(jnp.ones((3, 2)), jnp.ones(3))
