"""Bayesian logistic regression on synthetic data: a posterior with no closed form.

Model:
    w ~ Normal(0, 1), d = 25;  b ~ Normal(0, 1),
    y_i ~ Bernoulli(logits = x_i . w + b), i = 1..1000.

Data: x ~ Normal(0, 1) of shape (1000, 25), w_true ~ Normal(0, 1) * 3 / sqrt(25) (so the
true logits have sd about 3), b_true = 0.5, y_i ~ Bernoulli(sigmoid(x_i . w_true + b_true)),
all from ``np.random.default_rng(8)``.

Reference: long runs, stored in ``probinfer/zoo/references/logistic_regression.json`` with
their MCSE and produced by ``python -m probinfer.zoo.make_references``: NumPyro NUTS supplies
the moments and BlackJAX NUTS (window adaptation) is the independent check that they agree
within MCSE.
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

NUM_OBS = 1000
NUM_FEATURES = 25
SEED = 8
REFERENCE_PATH = Path(__file__).with_name("references") / "logistic_regression.json"


def model(x: jax.typing.ArrayLike, y: jax.typing.ArrayLike | None = None) -> None:
    """Logistic regression with standard normal priors.

    Args:
        x: features, shape (n, d).
        y: binary labels (0 or 1), shape (n,); ``None`` to sample from the prior predictive.
    """
    num_obs, num_features = np.shape(x)
    w = numpyro.sample("w", dist.Normal(0.0, 1.0).expand([num_features]).to_event(1))
    b = numpyro.sample("b", dist.Normal(0.0, 1.0))
    with numpyro.plate("data", num_obs):
        numpyro.sample("y", dist.Bernoulli(logits=jnp.matmul(x, w) + b), obs=y)


def data() -> tuple[tuple, dict]:
    """A synthetic classification problem from a fixed-seed generator.

    Returns:
        ``((x, y), {})`` with x of shape (1000, 25) and integer labels y of shape (1000,).
    """
    rng = np.random.default_rng(SEED)
    x = rng.normal(size=(NUM_OBS, NUM_FEATURES))
    w_true = rng.normal(size=NUM_FEATURES) * 3.0 / np.sqrt(NUM_FEATURES)
    logits = x @ w_true + 0.5
    y = (rng.uniform(size=NUM_OBS) < 1.0 / (1.0 + np.exp(-logits))).astype(np.int32)
    return (x, y), {}


reference: Reference = load_reference(REFERENCE_PATH)
