"""Conjugate normal mean with known unit noise.

Model:
    mu ~ Normal(0, 10),
    y_i ~ Normal(mu, 1), i = 1..20.

Data: 20 points y_i ~ Normal(1.5, 1) from ``np.random.default_rng(3)``.

Reference: analytic (conjugate). mu | y ~ Normal(sum(y) / (n + 1/100), 1 / sqrt(n + 1/100)),
and log_z = log N(y; 0, I + 100 * 1 1^T), both by Gaussian conditioning.
"""

import jax.typing
import numpy as np
import numpyro
import numpyro.distributions as dist

from probinfer.zoo._gaussian import condition, marginal_sd
from probinfer.zoo._reference import Reference, SiteMoments

__all__ = ["data", "model", "reference"]

PRIOR_SCALE = 10.0
NUM_OBS = 20
SEED = 3


def model(y: jax.typing.ArrayLike | None = None, *, num_obs: int = NUM_OBS) -> None:
    """Normal mean with a wide normal prior.

    Args:
        y: observations, shape (n,); ``None`` to sample from the prior predictive.
        num_obs: number of observations when ``y`` is ``None``.
    """
    mu = numpyro.sample("mu", dist.Normal(0.0, PRIOR_SCALE))
    size = num_obs if y is None else np.shape(y)[0]
    with numpyro.plate("data", size):
        numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def data() -> tuple[tuple, dict]:
    """Twenty synthetic observations from a fixed-seed generator.

    Returns:
        ``((y,), {})`` with y of shape (20,).
    """
    rng = np.random.default_rng(SEED)
    return (rng.normal(1.5, 1.0, size=NUM_OBS),), {}


def _reference() -> Reference:
    (y,), _ = data()
    posterior = condition(
        prior_mean=np.zeros(1),
        prior_cov=np.full((1, 1), PRIOR_SCALE**2),
        design=np.ones((y.shape[0], 1)),
        noise_cov=np.eye(y.shape[0]),
        y=y,
    )
    return Reference(
        moments={"mu": SiteMoments(mean=posterior.mean[0], sd=marginal_sd(posterior.cov)[0])},
        log_z=float(posterior.log_evidence),
        source="analytic",
    )


reference: Reference = _reference()
