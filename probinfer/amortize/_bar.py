"""The "bar distribution": a histogram density with half-normal tails (Müller et al., 2022).

``K`` buckets with borders ``b_0 < b_1 < ... < b_K`` placed at quantiles of prior samples of
``y`` (equal prior mass per bucket). Given probabilities ``p_k`` (a softmax of the network's
logits), the density is

    p(y) = p_k / (b_{k+1} - b_k)                          for y in an inner bucket k,
    p(y) = p_0 * HalfNormal(b_1 - y; sigma_0)             for y < b_1 (left tail),
    p(y) = p_{K-1} * HalfNormal(y - b_{K-1}; sigma_{K-1}) for y > b_{K-1} (right tail),

so the support is all of R. Each tail's half-normal scale is chosen so that its median is
the width of the bucket it replaces (``sigma = width / Phi^{-1}(3/4)``): half the tail mass
stays where the histogram put it.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import ndtr, ndtri
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

# Phi^{-1}(3/4): the median of a half-normal with unit scale.
_HALF_NORMAL_MEDIAN = 0.6744897501960817


class BarDistribution(eqx.Module):
    """Bucket borders and the density, CDF, moments, quantiles and samples they define.

    Methods take ``logits`` of shape ``(..., K)`` (unnormalised log bucket probabilities)
    and broadcast over the leading axes.

    Attributes:
        borders: ``(K + 1,)`` increasing bucket borders.
    """

    borders: Array

    def __init__(self, borders: ArrayLike) -> None:
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
        self.borders = jnp.asarray(borders_np, jnp.result_type(float))

    @classmethod
    def from_samples(cls, samples: ArrayLike, num_buckets: int) -> BarDistribution:
        """Borders at the ``k / K`` quantiles of prior samples of ``y``.

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

    @property
    def num_buckets(self) -> int:
        """``K``."""
        return self.borders.shape[0] - 1

    @property
    def widths(self) -> Array:
        """``(K,)`` bucket widths."""
        return jnp.diff(self.borders)

    @property
    def tail_scales(self) -> tuple[Array, Array]:
        """Half-normal scales of the left and right tails."""
        widths = self.widths
        return widths[0] / _HALF_NORMAL_MEDIAN, widths[-1] / _HALF_NORMAL_MEDIAN

    def bucket_shares(self, lower: ArrayLike, upper: ArrayLike) -> np.ndarray:
        """The share of each bucket's own mass that lies in each interval ``[lower, upper]``.

        Bucket ``k``'s own distribution is the density with all mass on ``k``: uniform on an
        inner bucket, half-normal on a tail. Computed in float64 NumPy from lower-tail
        normal CDFs only, so far-tail shares keep their relative precision.

        Args:
            lower: ``(n,)`` interval starts (``-inf`` allowed).
            upper: ``(n,)`` interval ends (``inf`` allowed), ``>= lower``.

        Returns:
            ``(n, K)`` shares in ``[0, 1]``.
        """
        from scipy.special import ndtr as normal_cdf

        borders = np.asarray(self.borders, np.float64)
        widths = np.diff(borders)
        lo = np.asarray(lower, np.float64)[:, None]
        hi = np.asarray(upper, np.float64)[:, None]
        overlap = np.minimum(hi, borders[None, 1:]) - np.maximum(lo, borders[None, :-1])
        shares = np.clip(overlap, 0.0, None) / widths[None, :]
        left_scale, right_scale = (float(scale) for scale in self.tail_scales)
        # Left tail: the distance b_1 - y is half-normal; clip the interval to y <= b_1.
        near = (borders[1] - np.minimum(hi[:, 0], borders[1])) / left_scale
        far = (borders[1] - np.minimum(lo[:, 0], borders[1])) / left_scale
        shares[:, 0] = 2 * (normal_cdf(-near) - normal_cdf(-far))
        # Right tail: the distance y - b_{K-1} is half-normal; clip to y >= b_{K-1}.
        near = (np.maximum(lo[:, 0], borders[-2]) - borders[-2]) / right_scale
        far = (np.maximum(hi[:, 0], borders[-2]) - borders[-2]) / right_scale
        shares[:, -1] = 2 * (normal_cdf(-near) - normal_cdf(-far))
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
        left_scale, right_scale = self.tail_scales
        log_half_normal = 0.5 * jnp.log(2 / jnp.pi)

        def tail(distance: Array, scale: Array, log_mass: Array) -> Array:
            return log_mass + log_half_normal - jnp.log(scale) - 0.5 * (distance / scale) ** 2

        left = tail(borders[1] - y, left_scale, log_p[..., 0])
        right = tail(y - borders[-2], right_scale, log_p[..., -1])
        return jnp.where(y < borders[1], left, jnp.where(y > borders[-2], right, inner))

    def cdf(self, logits: Float[Array, "... K"], y: Float[ArrayLike, "*batch"]) -> Array:
        """``P(Y <= y)`` under each distribution."""
        p = jax.nn.softmax(logits, axis=-1)
        y = jnp.asarray(y, p.dtype)
        borders = self.borders
        left_scale, right_scale = self.tail_scales
        # Mass of each bucket below y: inner buckets are uniform, the tails half-normal.
        expand = (1,) * y.ndim + (-1,)
        lower, upper = borders[:-1].reshape(expand), borders[1:].reshape(expand)
        fraction = jnp.clip((y[..., None] - lower) / (upper - lower), 0.0, 1.0)
        left_fraction = jnp.where(y < borders[1], 2 * ndtr(-(borders[1] - y) / left_scale), 1.0)
        right_fraction = jnp.where(
            y > borders[-2], 2 * ndtr((y - borders[-2]) / right_scale) - 1, 0.0
        )
        fraction = fraction.at[..., 0].set(left_fraction)
        fraction = fraction.at[..., -1].set(right_fraction)
        return jnp.sum(p * fraction, axis=-1)

    def mean(self, logits: Float[Array, "... K"]) -> Array:
        """The mean of each distribution."""
        p = jax.nn.softmax(logits, axis=-1)
        borders = self.borders
        left_scale, right_scale = self.tail_scales
        centers = 0.5 * (borders[:-1] + borders[1:])
        half_normal_mean = jnp.sqrt(2 / jnp.pi)
        centers = centers.at[0].set(borders[1] - left_scale * half_normal_mean)
        centers = centers.at[-1].set(borders[-2] + right_scale * half_normal_mean)
        return p @ centers

    def variance(self, logits: Float[Array, "... K"]) -> Array:
        """The variance of each distribution."""
        p = jax.nn.softmax(logits, axis=-1)
        borders, widths = self.borders, self.widths
        left_scale, right_scale = self.tail_scales
        centers = 0.5 * (borders[:-1] + borders[1:])
        second = centers**2 + widths**2 / 12
        root = jnp.sqrt(2 / jnp.pi)
        # E[(b - Z)^2] and E[(b + Z)^2] for Z half-normal: b^2 -+ 2 b s root + s^2.
        second = second.at[0].set(
            borders[1] ** 2 - 2 * borders[1] * left_scale * root + left_scale**2
        )
        second = second.at[-1].set(
            borders[-2] ** 2 + 2 * borders[-2] * right_scale * root + right_scale**2
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
        left_scale, right_scale = self.tail_scales
        # Left tail: P(Y <= y) = p_0 * 2 Phi(-(b_1 - y)/s) = q -> y = b_1 + s Phi^{-1}(q / 2 p_0)
        left = borders[1] + left_scale * ndtri(jnp.clip(fraction / 2, 1e-30, 0.5))
        right = borders[-2] + right_scale * ndtri(jnp.clip(0.5 + fraction / 2, 0.5, 1 - 1e-7))
        return jnp.where(index == 0, left, jnp.where(index == k - 1, right, inner))

    def sample(
        self, key: PRNGKeyArray, logits: Float[Array, "... K"], num_samples: int
    ) -> Float[Array, "num_samples ..."]:
        """Independent draws from each distribution."""
        shape = (num_samples, *logits.shape[:-1])
        u = jax.random.uniform(key, shape, logits.dtype, minval=1e-7, maxval=1 - 1e-7)
        return self.quantile(jnp.broadcast_to(logits, (*shape, logits.shape[-1])), u)
