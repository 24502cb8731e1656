"""A latent Gaussian process with Poisson counts: hyperpriors, non-centred latent f.

Model:
    mu ~ Normal(0, 1),  alpha ~ HalfNormal(1),  rho ~ LogNormal(log 2, 0.5),
    z_i ~ Normal(0, 1),  f = mu + L z  with  L L^T = K + 1e-5 I,
    K_ij = alpha^2 exp(-(x_i - x_j)^2 / (2 rho^2))  (squared exponential),
    y_i ~ Poisson(exp(f_i)),  i = 1..11.

The posterior couples the amplitude, the length scale and the 11 whitened latents (a
funnel-like geometry in alpha and z, a curved one in rho), the kind of model where
warm-up and metric choices show.

Data: x = 0, 1, ..., 10 and counts drawn once from Poisson(exp(1 + sin x))
(``np.random.default_rng(11)``), written out below so that they never change.

Reference: long runs, stored in ``probinfer/zoo/references/gp_poisson.json`` with their MCSE
and produced by ``python -m probinfer.zoo.make_references``: NumPyro NUTS supplies the moments
and BlackJAX NUTS is the independent check that they agree within MCSE (both float64).
log_z is unknown (None).
"""

from pathlib import Path

import jax.numpy as jnp
import jax.typing
import numpy as np
import numpyro
import numpyro.distributions as dist

from probinfer.zoo._reference import Reference, load_reference

__all__ = ["REFERENCE_PATH", "data", "model", "reference"]

JITTER = 1e-5
REFERENCE_PATH = Path(__file__).with_name("references") / "gp_poisson.json"
X = np.arange(11.0)
COUNTS = np.array([1, 4, 7, 6, 1, 1, 3, 4, 5, 5, 0], np.int32)


def model(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike | None = None) -> None:
    """Poisson counts with a log rate from a GP with squared-exponential kernel.

    Args:
        x: inputs, shape (n,).
        y: counts, shape (n,); ``None`` to sample from the prior predictive.
    """
    x = jnp.asarray(x)
    num_points = x.shape[0]
    mu = numpyro.sample("mu", dist.Normal(0.0, 1.0))
    alpha = numpyro.sample("alpha", dist.HalfNormal(1.0))
    rho = numpyro.sample("rho", dist.LogNormal(jnp.log(2.0), 0.5))
    z = numpyro.sample("z", dist.Normal(0.0, 1.0).expand([num_points]).to_event(1))
    squared_distance = (x[:, None] - x[None, :]) ** 2
    kernel = alpha**2 * jnp.exp(-0.5 * squared_distance / rho**2)
    cholesky = jnp.linalg.cholesky(kernel + JITTER * jnp.eye(num_points))
    f = numpyro.deterministic("f", mu + cholesky @ z)
    with numpyro.plate("data", num_points):
        numpyro.sample("y", dist.Poisson(jnp.exp(f)), obs=y)


def data() -> tuple[tuple, dict]:
    """The 11 inputs and counts.

    Returns:
        ``((x, y), {})``, both of shape (11,).
    """
    return (X, COUNTS), {}


reference: Reference = load_reference(REFERENCE_PATH)
