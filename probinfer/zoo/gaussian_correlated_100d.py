"""A strongly correlated 100-dimensional Gaussian with condition number 1e3.

Model:
    x ~ MultivariateNormal(mean, Sigma), d = 100,
    Sigma = Q diag(eigs) Q^T, eigs = logspace(-1.5, 1.5, 100) (so cond(Sigma) = 1e3),
    Q a random orthogonal matrix (QR of a standard normal matrix, sign-corrected).

Data: ``mean`` ~ N(0, I) and Q drawn from ``np.random.default_rng(100)``; the model takes
``mean`` and the Cholesky factor of Sigma.

Reference: analytic. mean = ``mean``, sd = sqrt(diag(Sigma)); the density is normalized, so
log_z = 0.
"""

import jax.typing
import numpy as np
import numpyro
import numpyro.distributions as dist

from probinfer.zoo._reference import Reference, SiteMoments

__all__ = ["data", "model", "reference"]

NUM_DIMS = 100
SEED = 100


def model(mean: jax.typing.ArrayLike, scale_tril: jax.typing.ArrayLike) -> None:
    """A multivariate normal given by its mean and Cholesky factor.

    Args:
        mean: the mean, shape (d,).
        scale_tril: lower Cholesky factor L of the covariance L L^T, shape (d, d).
    """
    numpyro.sample("x", dist.MultivariateNormal(mean, scale_tril=scale_tril))


def data() -> tuple[tuple, dict]:
    """The mean and covariance Cholesky factor, drawn from a fixed-seed generator.

    Returns:
        ``((mean, scale_tril), {})`` with shapes (100,) and (100, 100).
    """
    rng = np.random.default_rng(SEED)
    mean = rng.normal(size=NUM_DIMS)
    q, r = np.linalg.qr(rng.normal(size=(NUM_DIMS, NUM_DIMS)))
    q = q * np.sign(np.diag(r))  # makes Q Haar-distributed
    eigenvalues = np.logspace(-1.5, 1.5, NUM_DIMS)
    covariance = (q * eigenvalues) @ q.T
    scale_tril = np.linalg.cholesky(0.5 * (covariance + covariance.T))
    return (mean, scale_tril), {}


def _reference() -> Reference:
    (mean, scale_tril), _ = data()
    sd = np.sqrt(np.sum(scale_tril**2, axis=1))
    return Reference(moments={"x": SiteMoments(mean=mean, sd=sd)}, log_z=0.0, source="analytic")


reference: Reference = _reference()
