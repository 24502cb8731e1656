"""A parametric (non-mixture) prior for the distribution transformer: normal-inverse-gamma.

Draws ``y_j ~ N(mu, sigma^2)`` of unknown mean and variance, with the conjugate prior
``sigma^2 ~ InverseGamma(concentration, rate)`` (NumPyro's parameterisation), ``mu |
sigma^2 ~ N(loc, sigma^2 / pseudo_count)``:
the inverse-gamma hyperprior on a variance that hierarchical models are built from. The
latent is unconstrained, ``theta = (mu, log sigma^2)``, so that a Gaussian-mixture
posterior over it is a proper approximation; every density here is over ``theta`` (with
the ``log sigma^2`` Jacobian). The exact posterior is again normal-inverse-gamma
(:meth:`NormalInverseGamma.condition`), which is what a transformer trained on this prior
is validated against.

The problem is equivariant to the units of ``y``: ``y -> c y + t`` (``c > 0``) maps
``loc -> c loc + t``, ``rate -> c^2 rate`` and the posterior's ``mu -> c mu + t``,
``log sigma^2 -> log sigma^2 + 2 log c``, leaving ``pseudo_count`` and ``concentration``
alone. :meth:`NormalInverseGamma.frame` gives the shift and scale of ``theta`` that remove
the units, so that a network sees only the dimensionless ``pseudo_count``,
``concentration`` and standardised ``y``.
"""

from __future__ import annotations

import math

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from probinfer._validation import check_magnitude, check_sample_shape, real_array

# Dimension of the latent theta = (mu, log sigma^2).
LATENT_DIM = 2


class NormalData(eqx.Module):
    """Independent draws ``values[j] ~ N(mu, sigma^2)`` of unknown mean and variance.

    Build it with :func:`normal_data`, which checks the values.

    Attributes:
        values: ``(n,)`` observed values.
    """

    values: Float[Array, " n"]

    @property
    def num_observations(self) -> int:
        """``n``."""
        return self.values.shape[0]


def normal_data(values: Float[ArrayLike, " n"]) -> NormalData:
    """Checked :class:`NormalData`.

    Raises:
        ValueError: if ``values`` is not one-dimensional, holds NaN or infinite values, or
            values so large that their squares would overflow.
        TypeError: if ``values`` is not real numbers.
    """
    return NormalData(jnp.asarray(checked_values(values)))


def checked_values(values: Float[ArrayLike, " n"]) -> np.ndarray:
    """``values`` as a float NumPy array after :func:`normal_data`'s checks (no device copy)."""
    values_np = real_array("values", values).astype(float)
    if values_np.ndim != 1:
        raise ValueError(f"`values` must have shape (n,), got {values_np.shape}.")
    if not np.all(np.isfinite(values_np)):
        raise ValueError("`values` contains NaN or infinite values; remove those entries.")
    check_magnitude("values", values_np, "rescale the data (their units)")
    return values_np


class NormalInverseGamma(eqx.Module):
    """The normal-inverse-gamma distribution of ``theta = (mu, log sigma^2)``.

    ``sigma^2 ~ InverseGamma(concentration, rate)`` (density ``∝ sigma^(-2 (concentration
    + 1)) exp(-rate / sigma^2)``, NumPyro's ``InverseGamma(concentration, rate)``) and ``mu |
    sigma^2 ~ N(loc, sigma^2 / pseudo_count)``. Build it with :func:`normal_inverse_gamma`,
    which checks the parameters.

    Attributes:
        loc: prior mean of ``mu``.
        pseudo_count: how many observations' worth the prior's ``loc`` is (``> 0``).
        concentration: inverse-gamma shape of ``sigma^2`` (``> 0``; half the prior's
            observations' worth for the variance).
        rate: NumPyro's ``rate`` of ``sigma^2``'s inverse gamma (SciPy ``invgamma``'s
            ``scale``; ``> 0``, in units of ``y^2``).

    Python numbers are converted to arrays on construction (unchecked: use
    :func:`normal_inverse_gamma` for checks).
    """

    loc: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    pseudo_count: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    concentration: Float[Array, ""] = eqx.field(converter=jnp.asarray)
    rate: Float[Array, ""] = eqx.field(converter=jnp.asarray)

    @property
    def dim(self) -> int:
        """The latent's dimension, 2."""
        return LATENT_DIM

    @property
    def mean(self) -> Float[Array, " 2"]:
        """``E[theta] = (loc, log rate - digamma(concentration))``: the mean of ``log
        sigma^2``, not of ``sigma^2`` (which NumPyro's ``InverseGamma.mean`` gives)."""
        log_variance = jnp.log(self.rate) - jax.scipy.special.digamma(self.concentration)
        return jnp.stack([self.loc, log_variance])

    def frame(self) -> tuple[Float[Array, " 2"], Float[Array, " 2"], Float[Array, ""]]:
        """The units to remove: ``theta``'s shift and per-axis scale, and ``y``'s scale.

        ``typical_sd = exp(E[log sigma^2] / 2)``; the shift is :attr:`mean`, the scale is
        ``(typical_sd / sqrt(pseudo_count), sqrt(trigamma(concentration)))`` (``mu``'s
        scale given a typical ``sigma``, and ``log sigma^2``'s exact standard deviation). Under
        ``y -> c y + t`` the standardised ``theta`` and ``(y - loc) / typical_sd`` do not
        change.

        Returns:
            ``(shift, scale, typical_sd)``.
        """
        shift = self.mean
        typical_sd = jnp.exp(0.5 * shift[1])
        scale = jnp.stack(
            [
                typical_sd / jnp.sqrt(self.pseudo_count),
                jnp.sqrt(jax.scipy.special.polygamma(1, self.concentration)),
            ]
        )
        return shift, scale, typical_sd

    def log_prob(self, theta: Float[ArrayLike, "... 2"]) -> Float[Array, ...]:
        """Log density of ``theta = (mu, log sigma^2)`` (any leading shape)."""
        theta = jnp.asarray(theta)
        if theta.ndim == 0 or theta.shape[-1] != LATENT_DIM:
            raise ValueError(
                f"`theta` must have shape (..., 2) holding (mu, log sigma^2), got {theta.shape}."
            )
        mu, log_variance = theta[..., 0], theta[..., 1]
        # log sigma^2 ~ the log of an inverse gamma: density a log b - lgamma(a) - a l - b e^-l.
        log_variance_density = (
            self.concentration * jnp.log(self.rate)
            - jax.scipy.special.gammaln(self.concentration)
            - self.concentration * log_variance
            - self.rate * jnp.exp(-log_variance)
        )
        # In log space: exp(log_variance) would overflow float32 where the density is not 0.
        mean_density = -0.5 * (
            self.pseudo_count * (mu - self.loc) ** 2 * jnp.exp(-log_variance)
            + log_variance
            - jnp.log(self.pseudo_count)
            + math.log(2 * math.pi)
        )
        return log_variance_density + mean_density

    def sample(
        self, key: PRNGKeyArray, sample_shape: int | tuple[int, ...] = ()
    ) -> Float[Array, "... 2"]:
        """Independent draws of ``theta``, shape ``sample_shape + (2,)``."""
        sample_shape = check_sample_shape(sample_shape)
        key_gamma, key_normal = jax.random.split(key)
        dtype = jnp.result_type(self.loc)
        # sigma^2 = rate / G with G ~ Gamma(concentration, 1); log G straight from
        # log-space draws, so a small concentration does not underflow G to zero.
        log_gamma = jax.random.loggamma(key_gamma, self.concentration, sample_shape, dtype)
        log_variance = jnp.log(self.rate) - log_gamma
        normal = jax.random.normal(key_normal, sample_shape, dtype)
        mu = self.loc + jnp.exp(0.5 * log_variance) / jnp.sqrt(self.pseudo_count) * normal
        return jnp.stack([mu, log_variance], axis=-1)

    def condition(
        self, data: NormalData, *, observation_mask: Bool[Array, " n"] | None = None
    ) -> NormalInverseGamma:
        """The exact posterior given draws of ``N(mu, sigma^2)`` (the conjugate update).

        Args:
            data: the observations.
            observation_mask: ``(n,)`` which observations count (default all).
        """
        count, sample_mean, within = _summaries(data, observation_mask)
        pseudo_count = self.pseudo_count + count
        loc = (self.pseudo_count * self.loc + count * sample_mean) / pseudo_count
        between = self.pseudo_count * count / pseudo_count * (sample_mean - self.loc) ** 2
        return NormalInverseGamma(
            loc,
            pseudo_count,
            self.concentration + 0.5 * count,
            self.rate + 0.5 * (within + between),
        )

    def log_marginal_likelihood(
        self, data: NormalData, *, observation_mask: Bool[Array, " n"] | None = None
    ) -> Array:
        """``log p(data)`` with this prior (the exact evidence, a multivariate Student-t)."""
        post = self.condition(data, observation_mask=observation_mask)
        # The count from the data, not post.pseudo_count - pseudo_count: that difference
        # rounds away for a large pseudo_count.
        count = _summaries(data, observation_mask)[0]
        return (
            jax.scipy.special.gammaln(post.concentration)
            - jax.scipy.special.gammaln(self.concentration)
            + self.concentration * jnp.log(self.rate)
            - post.concentration * jnp.log(post.rate)
            + 0.5 * (jnp.log(self.pseudo_count) - jnp.log(post.pseudo_count))
            - 0.5 * count * math.log(2 * math.pi)
        )


def _summaries(data: NormalData, observation_mask: Array | None) -> tuple[Array, Array, Array]:
    """Count, mean and centred sum of squares of the observations the mask keeps."""
    values = data.values
    if observation_mask is None:
        observation_mask = jnp.ones(values.shape, bool)
    # Masked entries may hold anything (NaN included): replaced, not multiplied by 0.
    values = jnp.where(observation_mask, values, 0.0)
    count = jnp.sum(observation_mask).astype(values.dtype)
    sample_mean = jnp.sum(values) / jnp.maximum(count, 1.0)
    # Centred sums of squares: no cancellation between large, nearly equal terms.
    within = jnp.sum(jnp.where(observation_mask, values - sample_mean, 0.0) ** 2)
    return count, sample_mean, within


def normal_inverse_gamma(
    loc: float, pseudo_count: float, concentration: float, rate: float
) -> NormalInverseGamma:
    """A checked :class:`NormalInverseGamma` prior.

    Args:
        loc: prior mean of ``mu``.
        pseudo_count: the prior's worth for ``mu`` in observations (``> 0``).
        concentration: inverse-gamma shape of ``sigma^2`` (``> 0``).
        rate: NumPyro's ``rate`` of ``sigma^2``'s ``InverseGamma(concentration, rate)``
            (SciPy ``invgamma``'s ``scale``; ``> 0``, units of ``y^2``).

    Raises:
        ValueError: on a NaN, infinite or non-positive parameter (``loc`` may be any
            finite number), or one so extreme that float arithmetic would overflow.
        TypeError: if a parameter is not one real number.
    """
    checked = {}
    for name, value in (("loc", loc), ("pseudo_count", pseudo_count),
                        ("concentration", concentration), ("rate", rate)):  # fmt: skip
        array = real_array(name, value).astype(float)
        if array.shape != ():
            raise ValueError(f"`{name}` must be one number, got shape {array.shape}.")
        if not np.isfinite(array):
            raise ValueError(f"`{name}` must be finite, got {float(array)}.")
        if name != "loc" and not array > 0:
            raise ValueError(f"`{name}` must be > 0, got {float(array)}.")
        fix = (
            "rescale the data (their units)"
            if name in ("loc", "rate")
            else f"pass a `{name}` of a usable size (a trained model's range is far "
            "narrower: `DistributionTransformer.prior_ranges`)"
        )
        check_magnitude(name, array[None], fix, scale=name != "loc")
        checked[name] = jnp.asarray(array)
    return NormalInverseGamma(**checked)
