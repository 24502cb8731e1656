"""Eight schools, non-centered: a hierarchical model with a heavy-tailed scale prior.

Model:
    mu ~ Normal(0, 5),  tau ~ HalfCauchy(5),
    theta_tilde_j ~ Normal(0, 1),  theta_j = mu + tau * theta_tilde_j  (deterministic),
    y_j ~ Normal(theta_j, sigma_j),  j = 1..8.

Data: the classic SAT coaching study (Rubin 1981; Gelman et al., BDA3, section 5.5),
y = [28, 8, -3, 7, -1, 1, 18, 12], sigma = [15, 10, 16, 11, 9, 11, 10, 18].

Reference: 1-D quadrature over tau, exact to quadrature precision. Given tau, the latent
z = (mu, theta_tilde) has prior N(0, diag(25, 1, ..., 1)) and y = A z + noise with
A = [1 | tau I] and noise ~ N(0, diag(sigma^2)), so z | y, tau is Gaussian (conditioning) and
p(y | tau) = N(y; 0, 25 * 1 1^T + diag(tau^2 + sigma^2)); theta = A z is Gaussian too.
Moments of every site follow by the laws of total expectation and variance under
p(tau | y) ∝ HalfCauchy(tau; 5) p(y | tau), integrated with the trapezoidal rule in
u = log tau on [-30, 14] (the integrand decays like e^u below and e^(-9u) above, so the
truncated mass is far below 1e-12). Doubling the grid changes no moment by more than
1e-10 (checked by ``probinfer/zoo/check_references.py``). log_z = log p(y) comes from the same sum.
"""

import jax.typing
import numpy as np
import numpyro
import numpyro.distributions as dist
from scipy.special import logsumexp

from probinfer.zoo._gaussian import condition
from probinfer.zoo._reference import Reference, SiteMoments

__all__ = ["data", "model", "quadrature_reference", "reference"]

MU_SCALE = 5.0
TAU_SCALE = 5.0
LOG_TAU_RANGE = (-30.0, 14.0)
NUM_QUADRATURE_POINTS = 2001


def model(sigma: jax.typing.ArrayLike, y: jax.typing.ArrayLike | None = None) -> None:
    """Non-centered eight schools.

    Args:
        sigma: known standard errors of the school effects, shape (J,).
        y: observed school effects, shape (J,); ``None`` to sample from the prior predictive.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, MU_SCALE))
    tau = numpyro.sample("tau", dist.HalfCauchy(TAU_SCALE))
    with numpyro.plate("schools", np.shape(sigma)[0]):
        theta_tilde = numpyro.sample("theta_tilde", dist.Normal(0.0, 1.0))
        theta = numpyro.deterministic("theta", mu + tau * theta_tilde)
        numpyro.sample("y", dist.Normal(theta, sigma), obs=y)


def data() -> tuple[tuple, dict]:
    """The eight schools data.

    Returns:
        ``((sigma, y), {})``, both of shape (8,).
    """
    sigma = np.array([15.0, 10.0, 16.0, 11.0, 9.0, 11.0, 10.0, 18.0])
    y = np.array([28.0, 8.0, -3.0, 7.0, -1.0, 1.0, 18.0, 12.0])
    return (sigma, y), {}


def _mixture_moments(weights: np.ndarray, means: np.ndarray, variances: np.ndarray) -> SiteMoments:
    """Mean and sd of a mixture over the grid (law of total variance); grid on axis 0."""
    weights = weights.reshape(weights.shape + (1,) * (means.ndim - 1))
    mean = np.sum(weights * means, axis=0)
    variance = np.sum(weights * (variances + (means - mean) ** 2), axis=0)
    return SiteMoments(mean=mean, sd=np.sqrt(variance))


def quadrature_reference(
    num_points: int = NUM_QUADRATURE_POINTS,
    log_tau_range: tuple[float, float] = LOG_TAU_RANGE,
) -> Reference:
    """The reference posterior by trapezoidal quadrature over log tau.

    Args:
        num_points: number of grid points in log tau.
        log_tau_range: the integration range in log tau; the mass outside is neglected.

    Returns:
        Moments of mu, tau, theta_tilde and theta, and log p(y).
    """
    (sigma, y), _ = data()
    num_schools = y.shape[0]
    log_tau, step = np.linspace(*log_tau_range, num_points, retstep=True)
    tau = np.exp(log_tau)

    # Conditional posterior of z = (mu, theta_tilde) given tau, for every grid point.
    design = np.concatenate(
        [np.ones((num_points, num_schools, 1)), tau[:, None, None] * np.eye(num_schools)], axis=2
    )
    prior_cov = np.diag(np.concatenate([[MU_SCALE**2], np.ones(num_schools)]))
    posterior = condition(
        prior_mean=np.zeros(num_schools + 1),
        prior_cov=prior_cov,
        design=design,
        noise_cov=np.diag(sigma**2),
        y=y,
    )

    # log of p(tau) p(y | tau) dtau/du, with the half-Cauchy density in tau.
    log_prior = np.log(2.0 / (np.pi * TAU_SCALE)) - np.log1p((tau / TAU_SCALE) ** 2)
    log_integrand = log_prior + log_tau + posterior.log_evidence
    trapezoid = np.full(num_points, step)
    trapezoid[[0, -1]] *= 0.5
    log_terms = log_integrand + np.log(trapezoid)
    log_z = float(np.asarray(logsumexp(log_terms)))
    weights = np.exp(log_terms - log_z)

    z_var = np.diagonal(posterior.cov, axis1=-2, axis2=-1)
    theta_mean = (design @ posterior.mean[..., None])[..., 0]
    # Variances, not sds: far in the tail rounding can make them slightly negative, which is
    # harmless at their ~0 weight but would be NaN after a square root.
    theta_cov = design @ posterior.cov @ np.swapaxes(design, -1, -2)
    theta_var = np.diagonal(theta_cov, axis1=-2, axis2=-1)
    return Reference(
        moments={
            "mu": _mixture_moments(weights, posterior.mean[:, 0], z_var[:, 0]),
            "tau": _mixture_moments(weights, tau, np.zeros(num_points)),
            "theta_tilde": _mixture_moments(weights, posterior.mean[:, 1:], z_var[:, 1:]),
            "theta": _mixture_moments(weights, theta_mean, theta_var),
        },
        log_z=float(log_z),
        source="quadrature over tau",
    )


reference: Reference = quadrature_reference()
