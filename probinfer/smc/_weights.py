"""Log-weight arithmetic: normalising, effective sample sizes, log-mean-exp."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float


def normalize(log_weights: Float[Array, " n"]) -> tuple[Float[Array, " n"], Array]:
    """Normalised log weights and the log of their sum.

    Args:
        log_weights: unnormalised log weights ``(N,)``.

    Returns:
        ``(log_weights - log_sum, log_sum)``.
    """
    log_sum = jax.nn.logsumexp(log_weights)
    return log_weights - log_sum, log_sum


def zero_invalid(log_values: Float[Array, " n"]) -> tuple[Float[Array, " n"], Array]:
    """NaN and ``+inf`` log weights (or likelihoods) as ``-inf`` (zero), and their count.

    Args:
        log_values: log weights or log likelihoods ``(N,)``.

    Returns:
        ``(cleaned, number replaced)``: counted, so no NaN is dropped silently.
    """
    is_invalid = jnp.isnan(log_values) | (log_values == jnp.inf)
    cleaned = jnp.where(is_invalid, -jnp.inf, log_values)
    return cleaned, jnp.sum(is_invalid.astype(jnp.int32))


def ess(log_weights: Float[Array, " n"]) -> Array:
    """Effective sample size ``(sum w)^2 / sum w^2`` of (unnormalised) log weights.

    Args:
        log_weights: log weights ``(N,)``.

    Returns:
        A scalar in ``[1, N]``.
    """
    return jnp.exp(2 * jax.nn.logsumexp(log_weights) - jax.nn.logsumexp(2 * log_weights))


def conditional_ess(log_weights: Float[Array, " n"], log_increments: Float[Array, " n"]) -> Array:
    """Conditional ESS of an incremental reweighting (Zhou, Johansen & Aston, 2016).

    ``N (sum_i W_i v_i)^2 / sum_i W_i v_i^2`` with ``W`` the normalised current weights and
    ``v`` the increments: how many of the ``N`` particles the increment keeps useful, also
    when the current weights are not uniform.

    Args:
        log_weights: current log weights ``(N,)`` (normalised or not).
        log_increments: log incremental weights ``(N,)``.

    Returns:
        A scalar in ``[1, N]`` (with uniform current weights, the ESS of the increments).
    """
    normalized, _ = normalize(log_weights)
    num = log_weights.shape[0]
    return num * jnp.exp(
        2 * jax.nn.logsumexp(normalized + log_increments)
        - jax.nn.logsumexp(normalized + 2 * log_increments)
    )


def log_mean_exp(values: Float[Array, " k"]) -> Array:
    """``log(mean(exp(values)))``, stably.

    Args:
        values: log values ``(K,)``.

    Returns:
        A scalar.
    """
    return jax.nn.logsumexp(values) - jnp.log(values.shape[0])
