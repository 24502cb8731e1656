"""A two-dimensional position measured with an ambiguous offset: a bimodal posterior.

Model:
    theta ~ Normal(0, 2^2 I_2)   (prior sd 2),
    y ~ 0.3 Normal(theta + a_1, 0.4^2 I_2) + 0.7 Normal(theta + a_2, 0.4^2 I_2),
    a_1 = (3, 0), a_2 = (-3, 0): the instrument adds one of two known offsets, which one
    is not recorded.

Data: one observation y = (0.5, -0.3).

Reference: analytic. Given the offset k, theta | y, k is Gaussian with covariance
v I, v = 1 / (1/4 + 1/0.16), and mean v (y - a_k) / 0.16; the posterior is their mixture
with weights proportional to pi_k N(y; a_k, (4 + 0.16) I), and the evidence is the sum of
those terms. The two modes, at theta_0 = -2.40 and 3.37, lie 15 posterior sd apart, with
masses 0.47 and 0.53 (the likelier offset is the farther from y): a chain
that starts in one mode practically never visits the other (MCMC rows of ``probinfer
bench`` are expected to fail here), while tempered SMC and nested sampling must find both
with the right masses.
"""

import jax.numpy as jnp
import jax.typing
import numpy as np
import numpyro
import numpyro.distributions as dist
from scipy.special import logsumexp

from probinfer.zoo._reference import Reference, SiteMoments

__all__ = ["data", "model", "reference"]

PRIOR_SCALE = 2.0
NOISE_SCALE = 0.4
OFFSETS = np.array([[3.0, 0.0], [-3.0, 0.0]])
OFFSET_PROBS = np.array([0.3, 0.7])
OBSERVATION = np.array([0.5, -0.3])


def model(y: jax.typing.ArrayLike | None = None) -> None:
    """A position observed once through one of two unrecorded offsets.

    Args:
        y: the observation, shape (2,); ``None`` to sample from the prior predictive.
    """
    theta = numpyro.sample("theta", dist.Normal(0.0, PRIOR_SCALE).expand([2]).to_event(1))
    offsets = jnp.asarray(OFFSETS)
    numpyro.sample(
        "y",
        dist.MixtureSameFamily(
            dist.Categorical(probs=jnp.asarray(OFFSET_PROBS)),
            dist.Normal(jnp.expand_dims(theta, 0) + offsets, NOISE_SCALE).to_event(1),
        ),
        obs=y,
    )


def data() -> tuple[tuple, dict]:
    """The one observation.

    Returns:
        ``((y,), {})`` with y of shape (2,).
    """
    return (OBSERVATION.copy(),), {}


def _reference() -> Reference:
    (y,), _ = data()
    prior_var, noise_var = PRIOR_SCALE**2, NOISE_SCALE**2
    marginal_var = prior_var + noise_var
    # log pi_k + log N(y; a_k, marginal_var I) for each offset k.
    log_terms = np.log(OFFSET_PROBS) - np.array(
        [
            np.sum((y - a) ** 2) / (2 * marginal_var) + np.log(2 * np.pi * marginal_var)
            for a in OFFSETS
        ]
    )
    log_z = float(np.asarray(logsumexp(log_terms)))
    weights = np.exp(log_terms - log_z)
    variance = 1.0 / (1.0 / prior_var + 1.0 / noise_var)
    means = variance * (y[None, :] - OFFSETS) / noise_var  # (2 offsets, 2 coordinates)
    mean = weights @ means
    second_moment = weights @ (means**2 + variance)
    return Reference(
        moments={"theta": SiteMoments(mean=mean, sd=np.sqrt(second_moment - mean**2))},
        log_z=log_z,
        source="analytic",
    )


reference: Reference = _reference()
