"""Neal's funnel in 10 dimensions, centered parameterization: a hard geometry test.

Model:
    v ~ Normal(0, 3),
    x_i ~ Normal(0, exp(v / 2)), i = 1..9.

Data: none; the model takes no arguments.

Reference: analytic. v has mean 0 and sd 3; each x_i has mean 0 and
sd = sqrt(E[exp(v)]) = sqrt(exp(9 / 2)) = exp(9 / 4). The density is normalized, so log_z = 0.
Samplers that cannot enter the neck (v << 0) underestimate sd(v) and bias mean(v) upwards.
Caution: sd(x) is exact, but its sample estimate is very heavy-tailed (x has kurtosis 3 e^9):
even exact iid draws (4 x 2500) give |z| > 4 on some sd(x_i) about 40% of the time, so judge
x by its mean (and v by mean and sd), not by an MCSE-based z-score of sd(x).
"""

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist

from probinfer.zoo._reference import Reference, SiteMoments

__all__ = ["data", "model", "reference"]

NUM_X = 9
V_SCALE = 3.0


def model() -> None:
    """Neal's funnel, centered."""
    v = numpyro.sample("v", dist.Normal(0.0, V_SCALE))
    numpyro.sample("x", dist.Normal(0.0, jnp.exp(v / 2.0)).expand([NUM_X]).to_event(1))


def data() -> tuple[tuple, dict]:
    """No data.

    Returns:
        ``((), {})``.
    """
    return (), {}


def _reference() -> Reference:
    x_sd = np.exp(V_SCALE**2 / 4.0)  # sqrt(E[exp(v)]) with v ~ N(0, V_SCALE^2)
    return Reference(
        moments={
            "v": SiteMoments(mean=np.array(0.0), sd=np.array(V_SCALE)),
            "x": SiteMoments(mean=np.zeros(NUM_X), sd=np.full(NUM_X, x_sd)),
        },
        log_z=0.0,
        source="analytic",
    )


reference: Reference = _reference()
