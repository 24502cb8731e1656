"""Bayesian linear regression with known noise scale: an exact Gaussian posterior.

Model:
    w ~ Normal(0, 1), d = 5;  b ~ Normal(0, 1),
    y_i ~ Normal(x_i . w + b, sigma), i = 1..100, sigma = 0.5 known.

Data: x ~ Normal(0, 1) of shape (100, 5), w_true ~ Normal(0, 1), b_true = 0.7, and
y = x w_true + b_true + 0.5 * noise, all from ``np.random.default_rng(5)``.

Reference: analytic. With z = (w, b) and A = [x 1], z | y is Gaussian by conditioning
z ~ N(0, I) on y ~ N(A z, sigma^2 I), and log_z = log N(y; 0, sigma^2 I + A A^T).
"""

import jax.numpy as jnp
import jax.typing
import numpy as np
import numpyro
import numpyro.distributions as dist

from probinfer.zoo._gaussian import condition, marginal_sd
from probinfer.zoo._reference import Reference, SiteMoments

__all__ = ["data", "model", "reference"]

NUM_OBS = 100
NUM_FEATURES = 5
NOISE_SCALE = 0.5
SEED = 5


def model(
    x: jax.typing.ArrayLike, sigma: jax.typing.ArrayLike, y: jax.typing.ArrayLike | None = None
) -> None:
    """Linear regression with standard normal priors and a known noise scale.

    Args:
        x: features, shape (n, d).
        sigma: the known noise standard deviation, a positive scalar.
        y: responses, shape (n,); ``None`` to sample from the prior predictive.
    """
    num_obs, num_features = np.shape(x)
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([num_features]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", num_obs):
        numpyro.sample("y", dist.Normal(jnp.matmul(x, w) + b, sigma), obs=y)


def data() -> tuple[tuple, dict]:
    """A synthetic regression problem from a fixed-seed generator.

    Returns:
        ``((x, sigma, y), {})`` with x of shape (100, 5), sigma a scalar and y of shape (100,).
    """
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(NUM_OBS, NUM_FEATURES))
    w_true = rng.normal(size=NUM_FEATURES)
    y = x @ w_true + 0.7 + NOISE_SCALE * rng.normal(size=NUM_OBS)
    return (x, np.array(NOISE_SCALE), y), {}


def _reference() -> Reference:
    (x, sigma, y), _ = data()
    num_obs, num_features = x.shape
    design = np.concatenate([x, np.ones((num_obs, 1))], axis=1)
    posterior = condition(
        prior_mean=np.zeros(num_features + 1),
        prior_cov=np.eye(num_features + 1),
        design=design,
        noise_cov=sigma**2 * np.eye(num_obs),
        y=y,
    )
    sd = marginal_sd(posterior.cov)
    return Reference(
        moments={
            "w": SiteMoments(mean=posterior.mean[:num_features], sd=sd[:num_features]),
            "b": SiteMoments(mean=posterior.mean[num_features], sd=sd[num_features]),
        },
        log_z=float(posterior.log_evidence),
        source="analytic",
    )


reference: Reference = _reference()
