"""Step functions shared by the driver tests (``test_driver.py``, ``_multihost.py``)."""

import jax
import jax.numpy as jnp


def reweight_step(key, state, step_index, shared):
    """Move every particle, reweight it, and record the normalised-weight ESS."""
    positions, log_weights = state
    positions = positions + shared * jax.random.normal(key, positions.shape)
    log_weights = log_weights - 0.5 * positions**2
    log_total = jax.nn.logsumexp(log_weights)
    ess = jnp.exp(2 * log_total - jax.nn.logsumexp(2 * log_weights))
    return (positions, log_weights - log_total), {"ess": ess, "index": step_index}
