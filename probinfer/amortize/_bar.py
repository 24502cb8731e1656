"""The "bar distribution": a histogram density with generalised Pareto tails (after Müller
et al., 2022, whose tails are half-normal).

``K`` buckets with borders ``b_0 < b_1 < ... < b_K`` placed at quantiles of prior samples of
``y`` (equal prior mass per bucket). Given probabilities ``p_k`` (a softmax of the network's
logits), the density is

    p(y) = p_k / (b_{k+1} - b_k)          for y in an inner bucket k,
    p(y) = p_0 * f_left(b_1 - y)          for y < b_1 (left tail),
    p(y) = p_{K-1} * f_right(y - b_{K-1}) for y > b_{K-1} (right tail),

so the support is all of R. Each ``f`` is a generalised Pareto density of the excess beyond
the outer inner border (:class:`Tail`). Its shape does not enter training: the network's
loss depends on the tails only through a term without parameters, so the bucket
probabilities are the same whatever the tails are, and the tails can be chosen after
training. The default is exponential with median the width of the bucket it replaces (half
the tail mass stays where the histogram put it), computed from the borders when used, so
that training programs do not depend on it; :meth:`BarDistribution.with_fitted_tails` fits
both to prior samples by maximum likelihood, the best fixed shape for the prior (training
and :func:`probinfer.amortize.fit_tails` fit a model's so).
"""

from __future__ import annotations

import math
import warnings
from types import ModuleType
from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray
from scipy import optimize

# Tail shapes are fitted on [0, MAX_TAIL_SHAPE]: a negative shape would bound the support, and
# a shape of 1 or more would make the mean infinite.
MAX_TAIL_SHAPE = 0.95

# Fewer samples than this beyond an outer border fit a tail too loosely: that tail keeps the
# default.
MIN_TAIL_SAMPLES = 100


class Tail(NamedTuple):
    """A generalised Pareto distribution of a tail's excess ``e >= 0`` beyond its border:
    survival ``(1 + shape * e / scale) ** (-1 / shape)``, exponential ``exp(-e / scale)``
    when ``shape == 0``.

    Attributes:
        shape: ``xi`` in ``[0, MAX_TAIL_SHAPE]``, a Python float (it selects the
            formulas); larger is heavier (the excess has moments below ``1 / shape``).
        scale: ``sigma > 0``, in the units of ``y`` (a float, or a scalar array for the
            default tails, which follow the borders).
    """

    shape: float
    scale: float | Array

    def log_survival(self, excess: ArrayLike, xp: ModuleType = jnp) -> Array | np.ndarray:
        """``log P(e > excess)`` for ``excess >= 0`` (``xp``: ``jnp``, or ``np`` on the host)."""
        t = xp.asarray(excess) / self.scale
        return -t if self.shape == 0 else -xp.log1p(self.shape * t) / self.shape

    def log_density(self, excess: ArrayLike, xp: ModuleType = jnp) -> Array | np.ndarray:
        """Log density of the excess at ``excess >= 0``."""
        return (1 + self.shape) * self.log_survival(excess, xp) - xp.log(self.scale)

    def excess_quantile(self, survival: ArrayLike) -> Array:
        """The excess whose survival probability is ``survival`` in ``(0, 1]``."""
        log_s = jnp.log(survival)
        if self.shape == 0:
            return -self.scale * log_s
        return self.scale * jnp.expm1(-self.shape * log_s) / self.shape

    @property
    def mean_excess(self) -> float | Array:
        """``E[e]`` (finite: the shape stays below 1)."""
        return self.scale / (1 - self.shape)

    @property
    def second_moment_excess(self) -> float | Array:
        """``E[e^2]``, infinite for a shape of 1/2 or more."""
        if self.shape >= 0.5:
            return math.inf
        return 2 * self.scale**2 / ((1 - self.shape) * (1 - 2 * self.shape))


def fit_tail(excess: ArrayLike) -> Tail:
    """The :class:`Tail` of maximum likelihood for positive excesses, shape in
    ``[0, MAX_TAIL_SHAPE]``.

    The scale is profiled out for each shape (a 1-d bounded search in ``log scale`` around
    the median excess, which heavy tails do not drag along as they do the mean) and the
    shape found by a bounded search of the profile, its ends tried too; at shape 0 the scale
    is the mean excess. Warns when the shape or the scale ends at a bound: the data's tail
    is heavier than a tail may be (its far end gets too little mass), or the search failed.

    Args:
        excess: ``(n,)`` positive excesses beyond the border, ``n >= MIN_TAIL_SAMPLES``.

    Returns:
        The fitted tail.
    """
    e = np.asarray(excess, np.float64).ravel()
    if e.size < MIN_TAIL_SAMPLES or not np.all(e > 0) or not np.all(np.isfinite(e)):
        raise ValueError(
            f"fitting a tail needs at least {MIN_TAIL_SAMPLES} finite positive excesses, got "
            f"{e.size} (of which {int(np.sum(~(e > 0) | ~np.isfinite(e)))} not finite and "
            "positive); draw more prior samples."
        )
    log_median = math.log(float(np.median(e)))
    scale_bounds = (log_median - 10, log_median + 10)
    profile: dict[float, tuple[float, float]] = {}  # shape -> (scale, negative log likelihood)

    def negative_log_likelihood(shape: float, scale: float) -> float:
        return -float(np.sum(Tail(shape, scale).log_density(e, np)))

    def profiled(shape: float) -> tuple[float, float]:
        if shape not in profile:
            if shape == 0:
                scale = float(e.mean())
            else:
                found = optimize.minimize_scalar(
                    lambda log_scale: negative_log_likelihood(shape, math.exp(log_scale)),
                    bounds=scale_bounds,
                    method="bounded",
                )
                scale = math.exp(found.x)  # pyright: ignore[reportAttributeAccessIssue]
            profile[shape] = (scale, negative_log_likelihood(shape, scale))
        return profile[shape]

    found = optimize.minimize_scalar(
        lambda shape: profiled(shape)[1],
        bounds=(0.0, MAX_TAIL_SHAPE),
        method="bounded",
        options={"xatol": 1e-4},
    )
    candidates = [0.0, float(found.x), MAX_TAIL_SHAPE]  # pyright: ignore[reportAttributeAccessIssue]
    shape = min(candidates, key=lambda s: profiled(s)[1])
    scale = profiled(shape)[0]
    at_scale_bound = not scale_bounds[0] + 1e-3 < math.log(scale) < scale_bounds[1] - 1e-3
    if shape == MAX_TAIL_SHAPE or at_scale_bound:
        warnings.warn(
            f"the tail fit ended at a bound (shape {shape:.3f} of at most {MAX_TAIL_SHAPE}, "
            f"scale {scale:.4g} for a median excess of {math.exp(log_median):.4g}): the "
            f"{e.size} excesses are heavier-tailed than a tail may be, so its far end gets "
            "too little mass.",
            UserWarning,
            stacklevel=2,
        )
    return Tail(shape, scale)


class BarDistribution(eqx.Module):
    """Bucket borders, tails, and the density, CDF, moments, quantiles and samples they
    define.

    Methods take ``logits`` of shape ``(..., K)`` (unnormalised log bucket probabilities)
    and broadcast over the leading axes.

    Attributes:
        borders: ``(K + 1,)`` increasing bucket borders.
        fitted_tails: the left and right :class:`Tail` (static), or None for the default
            (exponential with median the replaced bucket's width; :attr:`tails` gives
            either).
    """

    borders: Array
    fitted_tails: tuple[Tail, Tail] | None = eqx.field(static=True)

    def __init__(self, borders: ArrayLike, tails: tuple[Tail, Tail] | None = None) -> None:
        borders_np = np.asarray(borders, dtype=float)
        if borders_np.ndim != 1 or borders_np.size < 4:
            raise ValueError(
                f"`borders` must be a 1-d array of at least 4 values (3 buckets), got shape "
                f"{borders_np.shape}."
            )
        if not np.all(np.diff(borders_np) > 0):
            raise ValueError(
                "`borders` must be strictly increasing; build them with "
                "`BarDistribution.from_samples` (duplicate prior samples collapse buckets)."
            )
        pair = None
        if tails is not None:
            pair = [Tail(float(shape), float(scale)) for shape, scale in tails]
            if len(pair) != 2 or not all(
                0 <= tail.shape <= MAX_TAIL_SHAPE and 0 < tail.scale < math.inf for tail in pair
            ):
                raise ValueError(
                    f"`tails` must be a (left, right) pair of Tail(shape, scale) with shape "
                    f"in [0, {MAX_TAIL_SHAPE}] and a finite scale > 0, got {tails}."
                )
        # A JAX array keeps its dtype (a loaded model's borders keep the weights' dtype).
        dtype = borders.dtype if isinstance(borders, jax.Array) else float
        self.borders = jnp.asarray(
            borders_np, dtype if jnp.issubdtype(dtype, jnp.floating) else float
        )
        self.fitted_tails = None if pair is None else (pair[0], pair[1])

    @classmethod
    def from_samples(cls, samples: ArrayLike, num_buckets: int) -> BarDistribution:
        """Borders at the ``k / K`` quantiles of prior samples of ``y`` (default tails).

        Args:
            samples: prior draws of ``y`` (any shape; flattened).
            num_buckets: ``K`` (>= 3).

        Returns:
            The distribution.
        """
        values = np.sort(np.asarray(samples, dtype=np.float64).ravel())
        if num_buckets < 3 or values.size < 2 * num_buckets:
            raise ValueError(
                f"need num_buckets >= 3 and at least 2 * num_buckets samples, got "
                f"{num_buckets} buckets and {values.size} samples."
            )
        borders = np.quantile(values, np.linspace(0.0, 1.0, num_buckets + 1))
        return cls(borders)

    def with_fitted_tails(self, samples: ArrayLike) -> BarDistribution:
        """These borders with each tail fitted (:func:`fit_tail`) to the prior samples of
        ``y`` beyond its outer inner border.

        A side with fewer than :data:`MIN_TAIL_SAMPLES` samples beyond its border keeps its
        tail, with a warning naming the count (with neither side fitted, this is returned).

        Args:
            samples: prior draws of ``y`` (any shape; flattened), many more than
                ``MIN_TAIL_SAMPLES * K`` so that each tail gets enough.

        Returns:
            The distribution with fitted tails.
        """
        values = np.asarray(samples, np.float64).ravel()
        borders = np.asarray(self.borders, np.float64)
        excesses = (borders[1] - values[values < borders[1]],
                    values[values > borders[-2]] - borders[-2])  # fmt: skip
        tails = list(self.tails)
        fitted = False
        for side, excess in enumerate(excesses):
            if excess.size >= MIN_TAIL_SAMPLES:
                tails[side] = fit_tail(excess)
                fitted = True
            else:
                warnings.warn(
                    f"only {excess.size} samples lie beyond the "
                    f"{('left', 'right')[side]} outer border (at least {MIN_TAIL_SAMPLES} "
                    "are needed to fit a tail): that tail stays as it was. Draw more samples.",
                    UserWarning,
                    stacklevel=2,
                )
        return self.with_tails((tails[0], tails[1])) if fitted else self

    def with_tails(self, tails: tuple[Tail, Tail] | None) -> BarDistribution:
        """These borders with other tails (None: the default)."""
        return BarDistribution(self.borders, tails)

    @property
    def tails(self) -> tuple[Tail, Tail]:
        """The left and right tails, as Python floats (the fitted ones, or the default)."""
        if self.fitted_tails is not None:
            return self.fitted_tails
        widths = np.diff(np.asarray(self.borders, np.float64))
        return Tail(0.0, float(widths[0] / math.log(2))), Tail(0.0, float(widths[-1] / math.log(2)))

    def _tails_in_use(self) -> tuple[Tail, Tail]:
        """The tails for compiled code: the default's scales follow the borders (arrays),
        so a program does not depend on them."""
        if self.fitted_tails is not None:
            return self.fitted_tails
        widths = self.widths
        return Tail(0.0, widths[0] / math.log(2)), Tail(0.0, widths[-1] / math.log(2))

    @property
    def num_buckets(self) -> int:
        """``K``."""
        return self.borders.shape[0] - 1

    @property
    def widths(self) -> Array:
        """``(K,)`` bucket widths."""
        return jnp.diff(self.borders)

    def bucket_shares(self, lower: ArrayLike, upper: ArrayLike) -> np.ndarray:
        """The share of each bucket's own mass that lies in each interval ``[lower, upper]``.

        Bucket ``k``'s own distribution is the density with all mass on ``k``: uniform on an
        inner bucket, the tail's on a tail. Computed in float64 NumPy from survival
        probabilities, so far-tail shares keep their relative precision.

        Args:
            lower: ``(n,)`` interval starts (``-inf`` allowed).
            upper: ``(n,)`` interval ends (``inf`` allowed), ``>= lower``.

        Returns:
            ``(n, K)`` shares in ``[0, 1]``.
        """
        borders = np.asarray(self.borders, np.float64)
        widths = np.diff(borders)
        lo = np.asarray(lower, np.float64)[:, None]
        hi = np.asarray(upper, np.float64)[:, None]
        overlap = np.minimum(hi, borders[None, 1:]) - np.maximum(lo, borders[None, :-1])
        shares = np.clip(overlap, 0.0, None) / widths[None, :]
        left, right = self.tails

        def survival(tail: Tail, excess: np.ndarray) -> np.ndarray:
            return np.exp(tail.log_survival(excess, np))

        # Left tail: the excess is b_1 - y; clip the interval to y <= b_1.
        near = borders[1] - np.minimum(hi[:, 0], borders[1])
        far = borders[1] - np.minimum(lo[:, 0], borders[1])
        shares[:, 0] = survival(left, near) - survival(left, far)
        # Right tail: the excess is y - b_{K-1}; clip to y >= b_{K-1}.
        near = np.maximum(lo[:, 0], borders[-2]) - borders[-2]
        far = np.maximum(hi[:, 0], borders[-2]) - borders[-2]
        shares[:, -1] = survival(right, near) - survival(right, far)
        return shares

    def log_prob(self, logits: Float[Array, "... K"], y: Float[ArrayLike, "*batch"]) -> Array:
        """Log density of ``y`` under each distribution.

        Args:
            logits: ``(..., K)`` unnormalised log bucket probabilities.
            y: values, broadcastable to ``logits.shape[:-1]``.

        Returns:
            ``(...)`` log densities.
        """
        log_p = jax.nn.log_softmax(logits, axis=-1)
        y = jnp.asarray(y, log_p.dtype)
        borders, widths = self.borders, self.widths
        k = self.num_buckets
        index = jnp.clip(jnp.searchsorted(borders, y, side="right") - 1, 0, k - 1)
        log_bucket = jnp.take_along_axis(log_p, index[..., None], axis=-1)[..., 0]
        inner = log_bucket - jnp.log(widths[index])
        left_tail, right_tail = self._tails_in_use()
        # Excesses clipped at 0 so that the branch not taken stays finite (and so its
        # gradient).
        left = log_p[..., 0] + left_tail.log_density(jnp.maximum(borders[1] - y, 0.0))
        right = log_p[..., -1] + right_tail.log_density(jnp.maximum(y - borders[-2], 0.0))
        return jnp.where(y < borders[1], left, jnp.where(y > borders[-2], right, inner))

    def cdf(self, logits: Float[Array, "... K"], y: Float[ArrayLike, "*batch"]) -> Array:
        """``P(Y <= y)`` under each distribution."""
        p = jax.nn.softmax(logits, axis=-1)
        y = jnp.asarray(y, p.dtype)
        borders = self.borders
        left_tail, right_tail = self._tails_in_use()
        # Mass of each bucket below y: inner buckets are uniform, the tails their own.
        expand = (1,) * y.ndim + (-1,)
        lower, upper = borders[:-1].reshape(expand), borders[1:].reshape(expand)
        fraction = jnp.clip((y[..., None] - lower) / (upper - lower), 0.0, 1.0)
        left_survival = jnp.exp(left_tail.log_survival(jnp.maximum(borders[1] - y, 0.0)))
        right_below = -jnp.expm1(right_tail.log_survival(jnp.maximum(y - borders[-2], 0.0)))
        fraction = fraction.at[..., 0].set(jnp.where(y < borders[1], left_survival, 1.0))
        fraction = fraction.at[..., -1].set(jnp.where(y > borders[-2], right_below, 0.0))
        return jnp.sum(p * fraction, axis=-1)

    def mean(self, logits: Float[Array, "... K"]) -> Array:
        """The mean of each distribution."""
        p = jax.nn.softmax(logits, axis=-1)
        borders = self.borders
        left_tail, right_tail = self._tails_in_use()
        centers = 0.5 * (borders[:-1] + borders[1:])
        centers = centers.at[0].set(borders[1] - left_tail.mean_excess)
        centers = centers.at[-1].set(borders[-2] + right_tail.mean_excess)
        return p @ centers

    def variance(self, logits: Float[Array, "... K"]) -> Array:
        """The variance of each distribution (infinite when a tail's shape is 1/2 or
        more: every bucket has some mass)."""
        p = jax.nn.softmax(logits, axis=-1)
        borders, widths = self.borders, self.widths
        left_tail, right_tail = self._tails_in_use()
        if max(left_tail.shape, right_tail.shape) >= 0.5:
            return jnp.full(p.shape[:-1], jnp.inf, p.dtype)
        centers = 0.5 * (borders[:-1] + borders[1:])
        second = centers**2 + widths**2 / 12
        # E[(b - e)^2] and E[(b + e)^2] for the excess e: b^2 -+ 2 b E[e] + E[e^2].
        second = second.at[0].set(
            borders[1] ** 2
            - 2 * borders[1] * left_tail.mean_excess
            + left_tail.second_moment_excess
        )
        second = second.at[-1].set(
            borders[-2] ** 2
            + 2 * borders[-2] * right_tail.mean_excess
            + right_tail.second_moment_excess
        )
        mean = self.mean(logits)
        return p @ second - mean**2

    def quantile(self, logits: Float[Array, "... K"], q: ArrayLike) -> Array:
        """The ``q``-quantile of each distribution (``q`` in (0, 1))."""
        p = jax.nn.softmax(logits, axis=-1)
        q = jnp.asarray(q, p.dtype)
        cumulative = jnp.cumsum(p, axis=-1)
        k = self.num_buckets
        index = jnp.clip(jnp.sum(cumulative < q[..., None], axis=-1), 0, k - 1)
        below = jnp.take_along_axis(cumulative, index[..., None], axis=-1)[..., 0]
        mass = jnp.take_along_axis(p, index[..., None], axis=-1)[..., 0]
        below = below - mass
        fraction = jnp.clip((q - below) / jnp.maximum(mass, 1e-30), 0.0, 1.0)
        borders = self.borders
        inner = borders[index] + fraction * (borders[index + 1] - borders[index])
        left_tail, right_tail = self._tails_in_use()
        # Left tail: P(Y <= y) = p_0 S(b_1 - y) = q, so the excess's survival is the
        # fraction; right tail: its survival is 1 - fraction (floored at float32's reach).
        left = borders[1] - left_tail.excess_quantile(jnp.clip(fraction, 1e-30, 1.0))
        right = borders[-2] + right_tail.excess_quantile(jnp.clip(1 - fraction, 1e-7, 1.0))
        return jnp.where(index == 0, left, jnp.where(index == k - 1, right, inner))

    def sample(
        self, key: PRNGKeyArray, logits: Float[Array, "... K"], num_samples: int
    ) -> Float[Array, "num_samples ..."]:
        """Independent draws from each distribution."""
        shape = (num_samples, *logits.shape[:-1])
        u = jax.random.uniform(key, shape, logits.dtype, minval=1e-7, maxval=1 - 1e-7)
        return self.quantile(jnp.broadcast_to(logits, (*shape, logits.shape[-1])), u)
