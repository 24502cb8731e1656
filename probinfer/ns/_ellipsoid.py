"""An ellipsoidal bound on the live points, and exact draws inside a contour from it.

For a prior that is uniform on its support (the unit cube of a prior transform), a new
live point can be drawn *exactly* from the prior above a contour by rejection: draw
uniformly inside a region that encloses the contour, keep the first draws that lie in the
prior's support and above the contour (Mukherjee, Parkinson & Liddle, 2006; Feroz &
Hobson's MultiNest and dynesty's ``"single"`` bound). The region here is one ellipsoid:
the live points' covariance, scaled to enclose them all, expanded by a factor that
bootstrap resamples of the live points say is needed to enclose points not used to build
it (dynesty's bootstrap), and enlarged in volume by a margin.

Each draw costs one likelihood evaluation, so in low dimensions, and while the contour is
close to an ellipsoid, this is far cheaper than an MCMC move (``5 d`` slice steps of a few
evaluations each) and the draws are independent of the survivors. When the contour is not
ellipsoidal (several modes, curved shells), the ellipsoid holds much empty volume and the
acceptance falls; :func:`probinfer.ns.nested_sampling` then returns to its MCMC move.

The bound is only as good as its enclosure: a part of the contour outside the ellipsoid is
never sampled, which biases ``log Z`` upwards. The bootstrap expansion and the volume margin
make that unlikely; the calibration of ``log_z`` against its error bar over seeds
(``tests/test_ns_slow.py``) is the check.

References:
    Mukherjee, P., Parkinson, D. & Liddle, A. R. (2006). A nested sampling algorithm for
    cosmological model selection. ApJ, 638, L51-L54.
    Speagle, J. S. (2020). dynesty: a dynamic nested sampling package for estimating
    Bayesian posteriors and evidences. MNRAS, 493(3), 3132-3158 (bootstrap expansion).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, PRNGKeyArray

from probinfer.mcmc._metric import population_covariance

# Bootstrap resamples that size the ellipsoid's expansion (dynesty uses 5 by default).
NUM_BOOTSTRAPS = 5


class Ellipsoid(NamedTuple):
    """``{center + transform @ v : |v| <= 1}``.

    Attributes:
        center: ``(d,)``.
        transform: ``(d, d)`` lower-triangular map of the unit ball onto the ellipsoid.
        log_volume: log of its volume (in the live points' coordinates).
    """

    center: Array
    transform: Array
    log_volume: Array


def _mahalanobis_radius(flat: Array, center: Array, cholesky: Array) -> Array:
    """``|L^-1 (x - center)|`` for each row of ``flat`` (``(num,)``)."""
    whitened = jax.scipy.linalg.solve_triangular(cholesky, (flat - center[None, :]).T, lower=True)
    return jnp.sqrt(jnp.sum(whitened**2, axis=0))


def _fit(flat: Array, log_weights: Array) -> tuple[Array, Array, Array]:
    """Mean, Cholesky factor of the covariance, and the radius enclosing the weighted
    points (the largest whitened distance among points of positive weight)."""
    weights = jnp.exp(log_weights)
    center = jnp.sum(weights[:, None] * flat, axis=0)
    cholesky = jnp.linalg.cholesky(population_covariance(flat, log_weights, True))
    radii = _mahalanobis_radius(flat, center, cholesky)
    return center, cholesky, jnp.max(jnp.where(weights > 0, radii, 0.0))


def bootstrap_expansion(key: PRNGKeyArray, flat: Float[Array, "num dim"]) -> Array:
    """How much an ellipsoid fitted to the points must grow to enclose unseen points.

    Each of :data:`NUM_BOOTSTRAPS` resamples (with replacement) fits an ellipsoid to the
    drawn points; the points left out are measured against it. The expansion is the largest
    ratio of a left-out point's radius to the fitted radius, at least 1.

    Args:
        key: PRNG key.
        flat: ``(num, d)`` points uniform inside the region to bound.

    Returns:
        A scalar ``>= 1``: the linear factor to apply to the fitted radius.
    """
    num = flat.shape[0]

    def one(key: PRNGKeyArray) -> Array:
        picks = jax.random.randint(key, (num,), 0, num)
        counts = jnp.zeros(num, flat.dtype).at[picks].add(1.0)
        center, cholesky, radius = _fit(flat, jnp.log(counts / num))
        radii = _mahalanobis_radius(flat, center, cholesky)
        left_out = jnp.max(jnp.where(counts == 0, radii, 0.0))
        return left_out / radius

    ratios = jax.vmap(one)(jax.random.split(key, NUM_BOOTSTRAPS))
    return jnp.maximum(1.0, jnp.max(ratios))


def bounding_ellipsoid(
    key: PRNGKeyArray, flat: Float[Array, "num dim"], enlarge: float
) -> Ellipsoid:
    """The ellipsoid that bounds the points: covariance-shaped, enclosing every point,
    expanded by :func:`bootstrap_expansion` and enlarged in volume by ``enlarge``.

    Args:
        key: PRNG key (the bootstrap).
        flat: ``(num, d)`` points, uniform inside the region to bound.
        enlarge: volume factor (``>= 1``) on top of the bootstrap expansion.

    Returns:
        The :class:`Ellipsoid`.
    """
    num, dim = flat.shape
    center, cholesky, radius = _fit(flat, jnp.full(num, -jnp.log(num), flat.dtype))
    scale = radius * bootstrap_expansion(key, flat) * enlarge ** (1.0 / dim)
    transform = scale * cholesky
    log_unit_ball = 0.5 * dim * jnp.log(jnp.pi) - jax.scipy.special.gammaln(0.5 * dim + 1.0)
    log_volume = log_unit_ball + jnp.sum(jnp.log(jnp.diag(transform)))
    return Ellipsoid(center, transform, log_volume)


def sample_ellipsoid(key: PRNGKeyArray, ellipsoid: Ellipsoid, num: int) -> Array:
    """``num`` points uniform inside the ellipsoid (``(num, d)``).

    Args:
        key: PRNG key.
        ellipsoid: the region.
        num: how many points.

    Returns:
        ``(num, d)`` points.
    """
    dim = ellipsoid.center.shape[0]
    dtype = ellipsoid.center.dtype
    key_direction, key_radius = jax.random.split(key)
    direction = jax.random.normal(key_direction, (num, dim), dtype)
    direction = direction / jnp.linalg.norm(direction, axis=1, keepdims=True)
    radius = jax.random.uniform(key_radius, (num, 1), dtype) ** (1.0 / dim)
    return ellipsoid.center[None, :] + (radius * direction) @ ellipsoid.transform.T


class BoundDraws(NamedTuple):
    """The outcome of :func:`draw_above_contour`.

    Attributes:
        positions: ``(num, d)`` flat draws above the contour (unfilled slots: a proposal).
        loglikelihood: ``(num,)`` their log likelihoods (``-inf`` in unfilled slots).
        is_filled: ``(num,)`` which slots hold a draw.
        num_evals: likelihood evaluations: proposals inside the prior's support.
        num_accepted: proposals that were in the support and above the contour (may exceed
            ``num``: the last round's extra draws are discarded).
        num_nonfinite: proposals in the support whose log likelihood was NaN or ``+inf``
            (rejected).
    """

    positions: Array
    loglikelihood: Array
    is_filled: Array
    num_evals: Array
    num_accepted: Array
    num_nonfinite: Array


def draw_above_contour(
    key: PRNGKeyArray,
    propose_fn: Callable[[PRNGKeyArray, int], Array],
    log_terms_fn: Callable[[Array], tuple[Array, Array]],
    threshold: Array,
    num: int,
    max_rounds: int,
) -> BoundDraws:
    """``num`` independent draws from a uniform prior above ``log L > threshold``, by
    rejection from a region that encloses the contour, ``num`` proposals per round (one
    vectorised evaluation).

    Accepted proposals fill the slots in the order drawn, so each slot holds the first
    accepted proposal not taken by an earlier slot: an independent uniform draw from the
    part of the contour inside the ellipsoid.

    Args:
        key: PRNG key.
        propose_fn: ``(key, num) -> (num, d)`` points uniform in the region (e.g.
            :func:`sample_ellipsoid`).
        log_terms_fn: flat position ``(d,)`` -> ``(log prior, log likelihood)``; the prior
            must be constant where it is finite.
        threshold: the contour's log likelihood.
        num: slots to fill.
        max_rounds: rounds at most (slots still empty then are reported unfilled).

    Returns:
        The :class:`BoundDraws`.

    Example:
        >>> import jax, jax.numpy as jnp
        >>> from probinfer import ns
        >>> ellipsoid = ns.Ellipsoid(jnp.full(2, 0.5), 0.3 * jnp.eye(2), jnp.zeros(()))
        >>> def log_terms(x):  # uniform prior on the unit square, log L = -|x - 1/2|^2
        ...     inside = jnp.all((x >= 0) & (x <= 1))
        ...     return jnp.where(inside, 0.0, -jnp.inf), -jnp.sum((x - 0.5) ** 2)
        >>> draws = ns.draw_above_contour(
        ...     jax.random.key(0), lambda key, num: ns.sample_ellipsoid(key, ellipsoid, num),
        ...     log_terms, jnp.asarray(-0.04), 100, 50)
        >>> bool(draws.is_filled.all()), bool((draws.loglikelihood > -0.04).all())
        (True, True)
    """

    def round_(carry: tuple) -> tuple:
        key, positions, loglikelihood, filled, rounds, evals, accepted, nonfinite = carry
        key, key_round = jax.random.split(key)
        proposals = propose_fn(key_round, num)
        logprior, proposal_loglikelihood = jax.vmap(log_terms_fn)(proposals)
        in_support = jnp.isfinite(logprior)
        invalid = in_support & (
            jnp.isnan(proposal_loglikelihood) | (proposal_loglikelihood == jnp.inf)
        )
        is_accepted = in_support & ~invalid & (proposal_loglikelihood > threshold)
        slots = filled + jnp.cumsum(is_accepted, dtype=jnp.int32) - 1
        slots = jnp.where(is_accepted & (slots < num), slots, num)  # `num`: dropped
        positions = positions.at[slots].set(proposals, mode="drop")
        loglikelihood = loglikelihood.at[slots].set(proposal_loglikelihood, mode="drop")
        num_accepted = jnp.sum(is_accepted, dtype=jnp.int32)
        return (
            key,
            positions,
            loglikelihood,
            jnp.minimum(filled + num_accepted, num),
            rounds + 1,
            evals + jnp.sum(in_support, dtype=jnp.int32),
            accepted + num_accepted,
            nonfinite + jnp.sum(invalid, dtype=jnp.int32),
        )

    def unfinished(carry: tuple) -> Array:
        filled, rounds = carry[3], carry[4]
        return (filled < num) & (rounds < max_rounds)

    zero = jnp.zeros((), jnp.int32)
    shape = jax.eval_shape(lambda key: propose_fn(key, num), key)
    initial = (
        key,
        jnp.zeros(shape.shape, shape.dtype),
        jnp.full(num, -jnp.inf, shape.dtype),
        zero,
        zero,
        zero,
        zero,
        zero,
    )
    _, positions, loglikelihood, filled, _, evals, accepted, nonfinite = jax.lax.while_loop(
        unfinished, round_, initial
    )
    return BoundDraws(
        positions=positions,
        loglikelihood=loglikelihood,
        is_filled=jnp.arange(num) < filled,
        num_evals=evals,
        num_accepted=accepted,
        num_nonfinite=nonfinite,
    )
