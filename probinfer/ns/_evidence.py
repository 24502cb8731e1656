"""Evidence accounting for nested sampling, in log space (Skilling, 2006).

A run removes points in order of increasing likelihood ``L_1 <= L_2 <= ...``; when point
``i`` is removed, ``n_i`` live points (itself included) lie above the previous contour, so
the prior volume inside its contour shrinks by a factor ``t_i ~ Beta(n_i, 1)``:
``X_i = t_i X_{i-1}``, ``X_0 = 1``, with ``E[log t_i] = -1 / n_i``.

- *k-deletion*: removing the ``k`` worst of ``n`` live points at once is the same as removing
  them one by one with ``n, n - 1, ..., n - k + 1`` points live (the replacements are drawn
  above the highest removed likelihood, so they take no part in those shrinkages).
- *The final live points*: at the end, the live points are removed in order with
  ``n, n - 1, ..., 1`` points live (the remaining volume is spent on them, not guessed).

With the expected log volumes, the points carry the weights ``w_i = L_i (X_{i-1} - X_i)``;
``Z = sum_i w_i``, the posterior weights are ``p_i = w_i / Z``, and the information is
``H = sum_i p_i log L_i - log Z`` (nats from prior to posterior).

The error of ``log Z`` comes from the unknown shrinkages: for a given sequence of
likelihoods, ``log Z`` is a function of the ``t_i``. :func:`simulate_log_z` draws many
sequences ``t_i ~ Beta(n_i, 1)`` and recomputes ``log Z``; their standard deviation is the
reported ``log_z_err``. Skilling's ``sqrt(H / n)`` is reported beside it.

References:
    Skilling, J. (2006). Nested sampling for general Bayesian computation. Bayesian
    Analysis, 1(4), 833-860.
    Higson, E., Handley, W., Hobson, M. & Lasenby, A. (2018). Sampling errors in nested
    sampling parameter estimation. Bayesian Analysis, 13(3), 873-896.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

NUM_SIMULATIONS = 200


def removal_counts(num_live: int, num_delete: int, num_iterations: int) -> np.ndarray:
    """Live points at each removal: ``k``-deletion iterations, then the final live points.

    Args:
        num_live: ``n``, live points.
        num_delete: ``k``, points removed per iteration.
        num_iterations: iterations run.

    Returns:
        ``(num_iterations k + n,)`` int32 (a NumPy array: the run's structure, known on the
        host): ``n, n - 1, ..., n - k + 1`` per iteration, then ``n, n - 1, ..., 1`` for
        the final live points.
    """
    per_iteration = num_live - np.arange(num_delete, dtype=np.int32)
    final = num_live - np.arange(num_live, dtype=np.int32)
    return np.concatenate([np.tile(per_iteration, num_iterations), final])


def shrink(
    loglikelihood: Float[Array, " num"],
    log_shrinkages: Float[Array, " num"],
    log_volume: Array | float = 0.0,
) -> tuple[Float[Array, " num"], Array]:
    """Log weights ``log L_i + log(X_{i-1} - X_i)`` of points removed in order.

    Args:
        loglikelihood: ``(num,)`` their log likelihoods.
        log_shrinkages: ``(num,)`` ``log t_i`` (``X_i = t_i X_{i-1}``).
        log_volume: ``log X_0``, the volume before the first of them.

    Returns:
        ``(log weights, log X_num)``: a zero likelihood gets weight ``-inf`` (never NaN).
    """
    log_volumes = log_volume + jnp.cumsum(log_shrinkages)
    start = jnp.reshape(jnp.asarray(log_volume, log_volumes.dtype), (1,))
    previous = jnp.concatenate([start, log_volumes[:-1]])
    # log(X_{i-1} - X_i) = log X_{i-1} + log(1 - t_i)
    log_widths = previous + jnp.log(-jnp.expm1(log_shrinkages))
    weights = jnp.where(loglikelihood == -jnp.inf, -jnp.inf, loglikelihood + log_widths)
    return weights, log_volumes[-1]


def log_weights(
    loglikelihood: Float[Array, " num"], counts: Int[Array, " num"]
) -> Float[Array, " num"]:
    """Unnormalised log weights ``log L_i + log(X_{i-1} - X_i)`` with expected shrinkages.

    Args:
        loglikelihood: ``(num,)`` removed points' log likelihoods, in removal order.
        counts: ``(num,)`` live points at each removal (:func:`removal_counts`).

    Returns:
        ``(num,)`` log weights; their log-sum-exp is ``log Z``.
    """
    dtype = jnp.result_type(loglikelihood)
    return shrink(loglikelihood, -1.0 / counts.astype(dtype))[0]


def simulate_log_z(
    key: PRNGKeyArray,
    loglikelihood: Float[Array, " num"],
    counts: Int[Array, " num"],
    num_simulations: int = NUM_SIMULATIONS,
) -> Float[Array, " num_simulations"]:
    """``log Z`` under shrinkage sequences drawn from their distribution.

    Args:
        key: PRNG key.
        loglikelihood: ``(num,)`` log likelihoods in removal order.
        counts: ``(num,)`` live points at each removal.
        num_simulations: sequences to draw.

    Returns:
        ``(num_simulations,)`` values of ``log Z``; their spread is the error of ``log Z``.
    """
    dtype = jnp.result_type(loglikelihood)

    def one(key: PRNGKeyArray) -> Array:
        # t ~ Beta(n, 1)  <=>  t = U^(1/n): log t = log U / n.
        uniform = jax.random.uniform(key, counts.shape, dtype, minval=jnp.finfo(dtype).tiny)
        return jax.nn.logsumexp(shrink(loglikelihood, jnp.log(uniform) / counts)[0])

    return jax.lax.map(one, jax.random.split(key, num_simulations))


class EvidenceSummary(NamedTuple):
    """The evidence of a nested-sampling run and its posterior weights.

    Attributes:
        log_z: ``log Z`` with the expected shrinkages.
        log_z_err: standard deviation of ``log Z`` over simulated shrinkage sequences.
        information: ``H`` in nats, the prior-to-posterior KL divergence.
        log_z_err_information: Skilling's ``sqrt(H / n)`` with ``n`` the median number of
            live points at removal (about ``n - k / 2`` with ``k``-deletion).
        log_weights: ``(num,)`` normalised posterior log weights of the points.
        ess: Kish's effective sample size of the posterior weights.
    """

    log_z: Array
    log_z_err: Array
    information: Array
    log_z_err_information: Array
    log_weights: Array
    ess: Array


def summarize(
    key: PRNGKeyArray,
    loglikelihood: Float[Array, " num"],
    counts: Int[Array, " num"],
    num_simulations: int = NUM_SIMULATIONS,
) -> EvidenceSummary:
    """``log Z``, its error, the information and the posterior weights of a run.

    Args:
        key: PRNG key for the simulated shrinkages.
        loglikelihood: ``(num,)`` removed points' log likelihoods in removal order (the
            final live points last, in increasing order).
        counts: ``(num,)`` live points at each removal (:func:`removal_counts`); trailing
            entries with count 0 and ``log L = -inf`` are padding.
        num_simulations: shrinkage sequences for ``log_z_err``.

    Returns:
        The :class:`EvidenceSummary` (padding gets log weight ``-inf``).

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from probinfer import ns
        >>> # L = 1 on the whole prior: Z = 1, less the volume beyond the best point
        >>> # (exp(-sum 1/n_i) = 2.4e-4 here), which is never weighted.
        >>> counts = ns.removal_counts(100, 10, 30)
        >>> summary = ns.summarize(jax.random.key(0), jnp.zeros(counts.shape), counts)
        >>> abs(float(summary.log_z)) < 1e-3, float(summary.log_z_err) < 1e-3
        (True, True)
    """
    dtype = jnp.result_type(loglikelihood)
    # Padding (count 0, log L = -inf) shrinks the volume to 0 after the last point: it
    # changes no weight, so runs of different lengths can share one compiled program.
    is_point = counts > 0
    weights = log_weights(loglikelihood, counts)
    log_z = jax.nn.logsumexp(weights)
    normalized = weights - log_z
    posterior = jnp.exp(normalized)
    finite = jnp.where(posterior > 0, loglikelihood, 0.0)
    information = jnp.sum(posterior * finite) - log_z
    median_live = jnp.nanmedian(jnp.where(is_point, counts.astype(dtype), jnp.nan))
    simulated = simulate_log_z(key, loglikelihood, counts, num_simulations)
    return EvidenceSummary(
        log_z=log_z,
        log_z_err=jnp.std(simulated, ddof=1),
        information=information,
        log_z_err_information=jnp.sqrt(jnp.maximum(information, 0.0) / median_live),
        log_weights=normalized,
        ess=jnp.exp(-jax.nn.logsumexp(2 * normalized)),
    )
