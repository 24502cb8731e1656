"""Marginal predictive distributions at test points: Gaussian, Student-t, scale mixture.

Each is an equinox module holding per-point parameters (shape ``(m,)``) with the same
methods: ``mean``, ``variance``, ``stddev``, ``log_prob(y)``, ``cdf(y)``, ``quantile(q)``
and ``sample(key, num_samples)``. Quantiles invert the CDF by bisection, which works for
every family alike.
"""

from __future__ import annotations

import abc

import equinox as eqx
import jax
import jax.numpy as jnp
from jax.scipy.special import betainc, gammaln, logsumexp, ndtr
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

# Bisection steps for quantiles: halves a bracket of +-1e12 standard deviations to well
# below float64 resolution.
BISECTION_STEPS = 128


class AbstractPredictive(eqx.Module):
    """Independent marginal predictive distributions at ``m`` test points."""

    @property
    @abc.abstractmethod
    def mean(self) -> Float[Array, " m"]:
        """Predictive mean per point."""

    @property
    @abc.abstractmethod
    def variance(self) -> Float[Array, " m"]:
        """Predictive variance per point (``inf`` when it does not exist)."""

    @property
    @abc.abstractmethod
    def _spread(self) -> Float[Array, " m"]:
        """A finite scale per point that brackets the quantiles."""

    @property
    def _center(self) -> Float[Array, " m"]:
        """A finite centre per point for the quantile bracket (the mean by default)."""
        return self.mean

    @property
    def stddev(self) -> Float[Array, " m"]:
        """Predictive standard deviation per point."""
        return jnp.sqrt(self.variance)

    @abc.abstractmethod
    def log_prob(self, y: Float[ArrayLike, " m"]) -> Float[Array, " m"]:
        """Log predictive density of ``y`` (one value per point)."""

    @abc.abstractmethod
    def cdf(self, y: Float[ArrayLike, " m"]) -> Float[Array, " m"]:
        """Predictive CDF at ``y``."""

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray, num_samples: int) -> Float[Array, "num_samples m"]:
        """Independent draws from each point's predictive."""

    def quantile(self, q: ArrayLike) -> Float[Array, " m"]:
        """The ``q``-quantile per point (``q`` in (0, 1), scalar or ``(m,)``).

        Args:
            q: probability level(s).

        Returns:
            ``y`` with ``cdf(y) = q``, found by bisection.
        """
        # An array `q`: the compiled bisection serves every level (a Python float would be
        # a static argument, compiled again for each).
        return _bisect_quantile(self, jnp.asarray(q, self.mean.dtype))


# Compiled once per predictive type and shape: run eagerly, the bisection loop was compiled
# again on every call (about 1 s each).
@eqx.filter_jit
def _bisect_quantile(predictive: AbstractPredictive, q: Array) -> Array:
    """:meth:`AbstractPredictive.quantile` for an array ``q`` of the predictive's dtype."""
    center, spread = predictive._center, predictive._spread
    lower = center - 1e12 * spread
    upper = center + 1e12 * spread

    def bisect(_: int, bracket: tuple[Array, Array]) -> tuple[Array, Array]:
        low, high = bracket
        middle = 0.5 * (low + high)
        below = predictive.cdf(middle) < q
        return jnp.where(below, middle, low), jnp.where(below, high, middle)

    low, high = jax.lax.fori_loop(0, BISECTION_STEPS, bisect, (lower, upper))
    return 0.5 * (low + high)


class NormalPredictive(AbstractPredictive):
    """``y ~ N(loc, scale_squared)`` per point (the Gaussian-process predictive).

    Attributes:
        loc: ``(m,)`` means.
        scale_squared: ``(m,)`` variances.
    """

    loc: Array
    scale_squared: Array

    @property
    def mean(self) -> Array:
        """The means."""
        return self.loc

    @property
    def variance(self) -> Array:
        """The variances."""
        return self.scale_squared

    @property
    def _spread(self) -> Array:
        return jnp.sqrt(self.scale_squared)

    def log_prob(self, y: ArrayLike) -> Array:
        """Gaussian log density."""
        return -0.5 * (
            jnp.log(2 * jnp.pi * self.scale_squared) + (y - self.loc) ** 2 / self.scale_squared
        )

    def cdf(self, y: ArrayLike) -> Array:
        """Gaussian CDF."""
        return ndtr((y - self.loc) / jnp.sqrt(self.scale_squared))

    def sample(self, key: PRNGKeyArray, num_samples: int) -> Array:
        """Gaussian draws."""
        noise = jax.random.normal(key, (num_samples, *self.loc.shape), self.loc.dtype)
        return self.loc[None, :] + jnp.sqrt(self.scale_squared)[None, :] * noise


class StudentTPredictive(AbstractPredictive):
    """``y = loc + sqrt(scale_squared) t`` with ``t ~ Student-t(df)`` per point.

    Attributes:
        df: degrees of freedom (scalar or ``(m,)``).
        loc: ``(m,)`` locations.
        scale_squared: ``(m,)`` squared scales.
    """

    df: Array
    loc: Array
    scale_squared: Array

    @property
    def mean(self) -> Array:
        """The locations (the mean exists for ``df > 1``; NaN otherwise)."""
        return jnp.where(self.df > 1, self.loc, jnp.nan)

    @property
    def variance(self) -> Array:
        """``scale_squared df / (df - 2)`` for ``df > 2``, else ``inf``."""
        return jnp.where(self.df > 2, self.scale_squared * self.df / (self.df - 2), jnp.inf)

    @property
    def _center(self) -> Array:
        return self.loc

    @property
    def _spread(self) -> Array:
        return jnp.sqrt(self.scale_squared) * jnp.ones_like(self.loc)

    def log_prob(self, y: ArrayLike) -> Array:
        """Student-t log density."""
        df = self.df
        z2 = (y - self.loc) ** 2 / self.scale_squared
        return (
            gammaln((df + 1) / 2)
            - gammaln(df / 2)
            - 0.5 * jnp.log(df * jnp.pi * self.scale_squared)
            - (df + 1) / 2 * jnp.log1p(z2 / df)
        )

    def cdf(self, y: ArrayLike) -> Array:
        """Student-t CDF via the regularised incomplete beta function."""
        t = (y - self.loc) / jnp.sqrt(self.scale_squared)
        t2 = t**2
        # Two forms of the same function: the tail form for |t| large, and the central
        # form near 0, where df / (df + t^2) rounds to 1 in float32.
        tail = 0.5 * betainc(self.df / 2, 0.5, self.df / (self.df + t2))
        central = 0.5 * betainc(0.5, self.df / 2, t2 / (self.df + t2))
        lower_tail = jnp.where(t2 < self.df, 0.5 - central, tail)
        return jnp.where(t > 0, 1 - lower_tail, lower_tail)

    def sample(self, key: PRNGKeyArray, num_samples: int) -> Array:
        """Student-t draws."""
        shape = (num_samples, *self.loc.shape)
        t = jax.random.t(key, self.df, shape, self.loc.dtype)
        scale = jnp.sqrt(self.scale_squared * jnp.ones_like(self.loc))
        return self.loc[None, :] + scale[None, :] * t


class ScaleMixturePredictive(AbstractPredictive):
    """``y | s ~ N(loc, s base_variance)`` with ``s`` from a discrete posterior, per point.

    The posterior over ``s`` is shared by all points (nodes ``log_scales`` with normalised
    ``log_weights``, from quadrature or importance sampling).

    Attributes:
        loc: ``(m,)`` means (the same for every ``s``).
        base_variance: ``(m,)`` variances at ``s = 1``.
        log_scales: ``(k,)`` nodes ``log s_j``.
        log_weights: ``(k,)`` normalised log weights.
    """

    loc: Array
    base_variance: Array
    log_scales: Array
    log_weights: Array

    @property
    def mean(self) -> Array:
        """The means."""
        return self.loc

    @property
    def variance(self) -> Array:
        """``E[s] base_variance``."""
        return jnp.exp(logsumexp(self.log_weights + self.log_scales)) * self.base_variance

    @property
    def _spread(self) -> Array:
        return jnp.sqrt(self.variance)

    def _component_variances(self) -> Array:
        return jnp.exp(self.log_scales)[:, None] * self.base_variance[None, :]

    def log_prob(self, y: ArrayLike) -> Array:
        """``log sum_j w_j N(y; loc, s_j base_variance)``."""
        variances = self._component_variances()
        y = jnp.asarray(y)
        squared_error = ((y - self.loc) ** 2)[None, :]
        log_normal = -0.5 * (jnp.log(2 * jnp.pi * variances) + squared_error / variances)
        return logsumexp(log_normal + self.log_weights[:, None], axis=0)

    def cdf(self, y: ArrayLike) -> Array:
        """``sum_j w_j Phi((y - loc) / sqrt(s_j base_variance))``."""
        z = (jnp.asarray(y) - self.loc)[None, :] / jnp.sqrt(self._component_variances())
        return jnp.sum(jnp.exp(self.log_weights)[:, None] * ndtr(z), axis=0)

    def sample(self, key: PRNGKeyArray, num_samples: int) -> Array:
        """Draw ``s`` from the weights, then ``y | s``, independently per point."""
        key_scale, key_noise = jax.random.split(key)
        shape = (num_samples, *self.loc.shape)
        index = jax.random.categorical(key_scale, self.log_weights, shape=shape)
        scales = jnp.exp(self.log_scales)[index]
        noise = jax.random.normal(key_noise, shape, self.loc.dtype)
        return self.loc[None, :] + jnp.sqrt(scales * self.base_variance[None, :]) * noise
