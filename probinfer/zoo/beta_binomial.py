"""Beta-binomial: a success probability with a Beta prior and one binomial count.

Model:
    p ~ Beta(2, 2),
    k ~ Binomial(n, p), n = 50.

Data: the observed count k = 17 (fixed, no randomness); n and k are passed as arrays.

Reference: analytic (conjugate). p | k ~ Beta(2 + k, 2 + n - k), and
log_z = log C(n, k) + log B(2 + k, 2 + n - k) - log B(2, 2) (the beta-binomial pmf).
"""

import jax.typing
import numpy as np
import numpyro
import numpyro.distributions as dist
from scipy import special

from probinfer.zoo._reference import Reference, SiteMoments

__all__ = ["data", "model", "reference"]

PRIOR_ALPHA = 2.0
PRIOR_BETA = 2.0


def model(total_count: jax.typing.ArrayLike, k: jax.typing.ArrayLike | None = None) -> None:
    """Binomial count with a Beta prior on the success probability.

    Args:
        total_count: number of trials n, a scalar integer array.
        k: number of successes, a scalar integer array; ``None`` to sample it.
    """
    p = numpyro.sample("p", dist.Beta(PRIOR_ALPHA, PRIOR_BETA))
    numpyro.sample("k", dist.Binomial(total_count=total_count, probs=p), obs=k)


def data() -> tuple[tuple, dict]:
    """The fixed count: 17 successes in 50 trials.

    Returns:
        ``((total_count, k), {})``, both scalar integer arrays.
    """
    return (np.array(50), np.array(17)), {}


def _reference() -> Reference:
    (total_count, k), _ = data()
    alpha = PRIOR_ALPHA + k
    beta = PRIOR_BETA + total_count - k
    mean = alpha / (alpha + beta)
    sd = np.sqrt(alpha * beta / ((alpha + beta) ** 2 * (alpha + beta + 1.0)))
    log_z = (
        special.gammaln(total_count + 1)
        - special.gammaln(k + 1)
        - special.gammaln(total_count - k + 1)
        + special.betaln(alpha, beta)
        - special.betaln(PRIOR_ALPHA, PRIOR_BETA)
    )
    return Reference(
        moments={"p": SiteMoments(mean=np.asarray(mean, float), sd=np.asarray(sd, float))},
        log_z=float(log_z),
        source="analytic",
    )


reference: Reference = _reference()
