"""Gaussian conditioning for linear-Gaussian models, the shared core of the exact references.

For a latent z ~ N(m, P) and an observation y | z ~ N(A z, R), the posterior and evidence are

    S = A P A^T + R,    K = P A^T S^{-1},
    z | y ~ N(m + K (y - A m), P - K A P),
    log p(y) = log N(y; A m, S).

All functions broadcast over leading batch axes (for example a grid of hyperparameters).
"""

from typing import NamedTuple

import numpy as np


class GaussianPosterior(NamedTuple):
    """The posterior N(mean, cov) of z given y, and the log evidence log p(y)."""

    mean: np.ndarray
    cov: np.ndarray
    log_evidence: np.ndarray


def condition(
    prior_mean: np.ndarray,
    prior_cov: np.ndarray,
    design: np.ndarray,
    noise_cov: np.ndarray,
    y: np.ndarray,
) -> GaussianPosterior:
    """Condition z ~ N(prior_mean, prior_cov) on y ~ N(design @ z, noise_cov).

    Args:
        prior_mean: prior mean m, shape (..., d).
        prior_cov: prior covariance P, shape (..., d, d).
        design: the linear map A, shape (..., n, d).
        noise_cov: observation noise covariance R, shape (..., n, n).
        y: the observation, shape (..., n).

    Returns:
        The posterior mean (..., d), covariance (..., d, d) and log p(y) (...).
    """
    cross = design @ prior_cov  # A P, shape (..., n, d)
    marginal_cov = cross @ np.swapaxes(design, -1, -2) + noise_cov  # S
    chol = np.linalg.cholesky(marginal_cov)
    residual = y - (design @ prior_mean[..., None])[..., 0]
    # One solve for the residual and the gain: S^{-1} [r, A P].
    solved = np.linalg.solve(marginal_cov, np.concatenate([residual[..., None], cross], axis=-1))
    alpha, gain_t = solved[..., :1], solved[..., 1:]
    cross_t = np.swapaxes(cross, -1, -2)
    mean = prior_mean + (cross_t @ alpha)[..., 0]
    cov = prior_cov - cross_t @ gain_t
    num_obs = y.shape[-1]
    log_evidence = (
        -0.5 * (residual[..., None, :] @ alpha)[..., 0, 0]
        - np.sum(np.log(np.diagonal(chol, axis1=-2, axis2=-1)), axis=-1)
        - 0.5 * num_obs * np.log(2.0 * np.pi)
    )
    return GaussianPosterior(mean=mean, cov=cov, log_evidence=log_evidence)


def marginal_sd(cov: np.ndarray) -> np.ndarray:
    """Marginal standard deviations, the square root of the covariance diagonal.

    Args:
        cov: covariance matrices, shape (..., d, d).

    Returns:
        Standard deviations, shape (..., d).
    """
    return np.sqrt(np.diagonal(cov, axis1=-2, axis2=-1))
