"""Priors on the last-layer variance scale ``s``, as NumPyro distributions on ``s > 0``.

Each constructor checks its parameters and returns a NumPyro distribution, so the same
object is the ``scale_prior`` of a :class:`ScaleMixtureProcess` and a prior inside a NumPyro
model (``numpyro.sample("s", nngp.burr_xii(...))``) sampled with ``probinfer.sample``.
Any other NumPyro distribution with positive support also works as a scale prior.

=======================  ===========================================  ====================
constructor              prior on ``s``                               process
=======================  ===========================================  ====================
``inverse_gamma(a, b)``  ``s ~ InvGamma(a, b)``                       Student-t, dof ``2a``
``gamma(a, b)``          ``s ~ Gamma(a, rate b)``                     lighter than Student-t
``half_cauchy_std(c)``   ``sqrt(s) ~ HalfCauchy(c)``                  heavy-tailed
``log_normal(m, v)``     ``log s ~ N(m, v^2)``                        all moments, heavy
``burr_xii(c, k, l)``    ``P(s > x) = (1 + (x/l)^c)^-k``              power tails
=======================  ===========================================  ====================
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, ArrayLike
from numpyro.distributions import constraints

from probinfer.nngp._checks import check_positive


class BurrXII(dist.Distribution):
    """The Burr type XII distribution: ``P(S > x) = (1 + (x / scale)^c)^(-k)`` for ``x > 0``.

    Density ``(c k / scale) (x/scale)^(c-1) (1 + (x/scale)^c)^(-k-1)``; moments of order
    ``< c k`` exist, so small ``c k`` gives power-law tails.

    Args:
        c: first shape parameter (> 0).
        k: second shape parameter (> 0).
        scale: scale parameter (> 0).
    """

    arg_constraints = {
        "c": constraints.positive,
        "k": constraints.positive,
        "scale": constraints.positive,
    }
    # A class attribute, as NumPyro's own distributions declare it (its documented way to
    # override the base `support` property), which pyright cannot model.
    support: constraints.Constraint = (  # pyright: ignore[reportIncompatibleMethodOverride]
        constraints.positive
    )
    reparametrized_params = ["c", "k", "scale"]

    def __init__(
        self,
        c: ArrayLike,
        k: ArrayLike,
        scale: ArrayLike = 1.0,
        *,
        validate_args: bool | None = None,
    ) -> None:
        self.c, self.k, self.scale = jnp.asarray(c), jnp.asarray(k), jnp.asarray(scale)
        batch_shape = jnp.broadcast_shapes(jnp.shape(c), jnp.shape(k), jnp.shape(scale))
        super().__init__(batch_shape=batch_shape, validate_args=validate_args)

    def sample(self, key: jax.Array | None, sample_shape: tuple[int, ...] = ()) -> Array:
        """Inverse-CDF sampling: ``x = scale ((1 - u)^(-1/k) - 1)^(1/c)``."""
        assert key is not None  # NumPyro's signature allows None; sampling needs a key
        shape = sample_shape + self.batch_shape
        u = jax.random.uniform(key, shape, minval=jnp.finfo(jnp.result_type(float)).tiny)
        # (1 - u)^(-1/k) - 1 computed as expm1(-log1p(-u) / k) keeps precision near u = 0.
        return self.scale * jnp.expm1(-jnp.log1p(-u) / self.k) ** (1 / self.c)

    def log_prob(self, value: ArrayLike, intermediates: list[Any] | None = None) -> Array:
        """Log density at ``value > 0``."""
        del intermediates  # sampling records none
        z = value / self.scale
        return (
            jnp.log(self.c * self.k / self.scale)
            + (self.c - 1) * jnp.log(z)
            - (self.k + 1) * jnp.log1p(z**self.c)
        )

    def cdf(self, value: ArrayLike) -> Array:
        """``1 - (1 + (value/scale)^c)^(-k)``."""
        return -jnp.expm1(-self.k * jnp.log1p((value / self.scale) ** self.c))


def inverse_gamma(concentration: ArrayLike, rate: ArrayLike) -> dist.InverseGamma:
    """``s ~ InvGamma(a, b)``: the scale mixture is a Student-t process (closed form).

    Args:
        concentration: ``a > 0``; the process has ``2a`` degrees of freedom.
        rate: ``b > 0``; the process's scale kernel is ``(b / a) K``.

    Returns:
        The NumPyro distribution.
    """
    check_positive(concentration, "concentration")
    check_positive(rate, "rate")
    return dist.InverseGamma(concentration, rate)


def gamma(concentration: ArrayLike, rate: ArrayLike) -> dist.Gamma:
    """``s ~ Gamma(a, rate=b)``.

    Args:
        concentration: ``a > 0``.
        rate: ``b > 0``.

    Returns:
        The NumPyro distribution.
    """
    check_positive(concentration, "concentration")
    check_positive(rate, "rate")
    return dist.Gamma(concentration, rate)


def half_cauchy_std(scale: ArrayLike) -> dist.TransformedDistribution:
    """``sqrt(s) ~ HalfCauchy(scale)``: a half-Cauchy prior on the last layer's std.

    Args:
        scale: the half-Cauchy scale (> 0), in units of the standard deviation.

    Returns:
        The NumPyro distribution of ``s`` (the square of a half-Cauchy variable).
    """
    check_positive(scale, "scale")
    return dist.TransformedDistribution(dist.HalfCauchy(scale), dist.transforms.PowerTransform(2.0))


def log_normal(loc: ArrayLike, scale: ArrayLike) -> dist.LogNormal:
    """``log s ~ Normal(loc, scale^2)``.

    Args:
        loc: mean of ``log s``.
        scale: standard deviation of ``log s`` (> 0).

    Returns:
        The NumPyro distribution.
    """
    check_positive(scale, "scale")
    return dist.LogNormal(loc, scale)


def burr_xii(c: ArrayLike, k: ArrayLike, scale: ArrayLike = 1.0) -> BurrXII:
    """``s ~ BurrXII(c, k, scale)``; see :class:`BurrXII`.

    Args:
        c: first shape parameter (> 0).
        k: second shape parameter (> 0).
        scale: scale (> 0).

    Returns:
        The NumPyro distribution.
    """
    for value, name in ((c, "c"), (k, "k"), (scale, "scale")):
        check_positive(value, name)
    return BurrXII(c, k, scale)


def check_scale_prior(scale_prior: object) -> None:
    """Raise ``TypeError`` unless ``scale_prior`` is ``None`` or a positive NumPyro distribution.

    Args:
        scale_prior: the candidate prior.

    Raises:
        TypeError: for anything else, naming the constructors to use.
    """
    if scale_prior is None:
        return
    if (
        not isinstance(scale_prior, dist.Distribution)
        or scale_prior.support not in (constraints.positive, constraints.softplus_positive)
        or scale_prior.event_shape != ()
        or scale_prior.batch_shape != ()
    ):
        raise TypeError(
            f"`scale_prior` must be a scalar NumPyro distribution on s > 0 (or None for a "
            f"plain GP), got {scale_prior!r}; use `nngp.inverse_gamma`, `nngp.gamma`, "
            f"`nngp.half_cauchy_std`, `nngp.log_normal` or `nngp.burr_xii`."
        )
