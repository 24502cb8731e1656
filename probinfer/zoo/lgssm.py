"""A linear-Gaussian state-space model (an AR(1) signal seen in noise): an exact reference.

Model (non-centred: the latent sites are the standardised innovations):
    e_t ~ Normal(0, 1), t = 0..39;
    x_0 = e_0,  x_t = phi x_{t-1} + q e_t  (phi = 0.8, q = 0.6), recorded as deterministic "x";
    y_t ~ Normal(x_t, r), r = 0.5.

Data: 40 observations simulated from the model with ``np.random.default_rng(11)``.

Reference: analytic. x = A e with A lower triangular (A[t, s] = q_s phi^(t - s), q_0 = 1),
so e | y is Gaussian by conditioning e ~ N(0, I) on y ~ N(A e, r^2 I), x | y follows by the
linear map, and log_z = log N(y; 0, A A^T + r^2 I) (the Kalman filter's likelihood).
"""

import jax
import jax.numpy as jnp
import jax.typing
import numpy as np
import numpyro
import numpyro.distributions as dist

from probinfer.zoo._gaussian import condition, marginal_sd
from probinfer.zoo._reference import Reference, SiteMoments

__all__ = ["data", "model", "reference"]

PHI = 0.8
STATE_SCALE = 0.6
NOISE_SCALE = 0.5
NUM_TIMES = 40
SEED = 11


def model(y: jax.typing.ArrayLike | None = None, *, num_times: int = NUM_TIMES) -> None:
    """An AR(1) latent signal observed with Gaussian noise.

    Args:
        y: observations, shape (T,); ``None`` to sample from the prior predictive.
        num_times: number of time steps when ``y`` is ``None``.
    """
    size = num_times if y is None else np.shape(y)[0]
    innovations = numpyro.sample("innovations", dist.Normal(0.0, 1.0).expand([size]).to_event(1))
    scales = jnp.concatenate([jnp.ones(1), jnp.full(size - 1, STATE_SCALE)])

    def advance(previous: jax.Array, scaled: jax.Array) -> tuple[jax.Array, jax.Array]:
        state = PHI * previous + scaled
        return state, state

    _, x = jax.lax.scan(advance, jnp.zeros(()), scales * innovations)
    numpyro.deterministic("x", x)
    numpyro.sample("y", dist.Normal(x, NOISE_SCALE).to_event(1), obs=y)


def _design(num_times: int) -> np.ndarray:
    """The lower-triangular map A from innovations to states."""
    scales = np.concatenate([[1.0], np.full(num_times - 1, STATE_SCALE)])
    lags = np.arange(num_times)[:, None] - np.arange(num_times)[None, :]
    return np.where(lags >= 0, PHI ** np.maximum(lags, 0), 0.0) * scales[None, :]


def data() -> tuple[tuple, dict]:
    """Forty observations of a simulated AR(1) signal.

    Returns:
        ``((y,), {})`` with y of shape (40,).
    """
    rng = np.random.default_rng(SEED)
    x = _design(NUM_TIMES) @ rng.normal(size=NUM_TIMES)
    return (x + NOISE_SCALE * rng.normal(size=NUM_TIMES),), {}


def _reference() -> Reference:
    (y,), _ = data()
    design = _design(NUM_TIMES)
    posterior = condition(
        prior_mean=np.zeros(NUM_TIMES),
        prior_cov=np.eye(NUM_TIMES),
        design=design,
        noise_cov=NOISE_SCALE**2 * np.eye(NUM_TIMES),
        y=y,
    )
    state_cov = design @ posterior.cov @ design.T
    return Reference(
        moments={
            "innovations": SiteMoments(mean=posterior.mean, sd=marginal_sd(posterior.cov)),
            "x": SiteMoments(mean=design @ posterior.mean, sd=marginal_sd(state_cov)),
        },
        log_z=float(posterior.log_evidence),
        source="analytic",
    )


reference: Reference = _reference()
