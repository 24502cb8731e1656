"""The integral over the scale ``s``, shared by every conditioned scale-mixture process.

A conditioned process describes ``y | s ~ N(0, s C)`` by three numbers and the ``s = 1``
predictive moments: ``q = y^T C^{-1} y``, ``log |C|`` and ``n``. Whether ``C`` is the
exact ``K + (noise + jitter) I`` (:class:`~probinfer.nngp.ScaleMixturePosterior`) or an
inducing-point approximation (:class:`~probinfer.nngp.SparseScaleMixturePosterior`), the
marginal likelihood and the predictive follow from them alike:

    log p(y) = -n/2 log(2 pi) - 1/2 log|C| + log E_prior[s^(-n/2) exp(-q / (2 s))],

a Student-t predictive for an inverse-gamma prior, and otherwise a mixture over ``s`` from
:mod:`probinfer.nngp._scale_posterior`.
"""

from __future__ import annotations

import abc
from typing import TYPE_CHECKING, Literal

import equinox as eqx
import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from probinfer.nngp._checks import check_inputs
from probinfer.nngp._predictive import (
    AbstractPredictive,
    NormalPredictive,
    ScaleMixturePredictive,
    StudentTPredictive,
)
from probinfer.nngp._scale_posterior import (
    ScaleWeights,
    importance_sampling,
    inverse_gamma_posterior,
    quadrature,
)

if TYPE_CHECKING:
    from probinfer.nngp._process import ScaleMixtureProcess

Method = Literal["auto", "exact", "quadrature", "importance"]


class AbstractScaleMixturePosterior(eqx.Module):
    """A :class:`ScaleMixtureProcess` conditioned on ``(x, y)``: the integral over ``s``.

    Every subclass describes a Gaussian model ``y | s ~ N(0, s C)`` by ``q = y^T C^{-1} y``,
    ``log |C|`` and the ``s = 1`` predictive moments; the scale integral, the marginal
    likelihood and the predictive distributions are shared.

    Attributes:
        process: the prior process.
        x: ``(n, d)`` training inputs.
        quad_form: ``q = y^T C^{-1} y``.
        log_det: ``log |C|``.
    """

    process: eqx.AbstractVar[ScaleMixtureProcess]
    x: eqx.AbstractVar[Array]
    quad_form: eqx.AbstractVar[Array]
    log_det: eqx.AbstractVar[Array]

    @abc.abstractmethod
    def _moments(self, x_test: Array, include_noise: bool) -> tuple[Array, Array]:
        """The predictive mean and ``s = 1`` variance at ``x_test``."""

    @property
    def num_obs(self) -> int:
        """Number of training points ``n``."""
        return self.x.shape[0]

    def _resolve(self, method: Method) -> Method:
        if method not in ("auto", "exact", "quadrature", "importance"):
            raise ValueError(
                f"`method` must be 'auto', 'exact', 'quadrature' or 'importance', got {method!r}."
            )
        if method == "auto":
            return "exact" if self.process.has_exact_posterior else "quadrature"
        if method == "exact" and not self.process.has_exact_posterior:
            raise ValueError(
                f"method='exact' needs an inverse-gamma scale prior (or none); the prior is "
                f"{type(self.process.scale_prior).__name__}. Use method='quadrature' (exact "
                "to numerical precision) or 'importance'."
            )
        if method in ("quadrature", "importance") and self.process.scale_prior is None:
            raise ValueError(f"method={method!r} needs a scale prior; a plain GP is exact.")
        return method

    def scale_weights(
        self,
        *,
        method: Method = "quadrature",
        key: PRNGKeyArray | None = None,
        num_samples: int = 4096,
        num_nodes: int = 512,
    ) -> ScaleWeights:
        """The posterior over ``s`` as weighted nodes (quadrature) or draws (importance).

        Args:
            method: ``"quadrature"`` or ``"importance"``.
            key: PRNG key, required for importance sampling.
            num_samples: prior draws for importance sampling.
            num_nodes: quadrature nodes.

        Returns:
            The :class:`ScaleWeights`.

        Raises:
            ValueError: for ``"importance"`` without a key, or without a scale prior.
        """
        method = self._resolve(method)
        prior = self.process.scale_prior
        # _resolve rejects "quadrature" and "importance" without a scale prior.
        assert prior is not None
        if method == "importance":
            if key is None:
                raise ValueError("method='importance' needs `key=jax.random.key(...)`.")
            return importance_sampling(
                key, prior, self.quad_form, self.num_obs, num_samples=num_samples
            )
        return quadrature(prior, self.quad_form, self.num_obs, num_nodes=num_nodes)

    def log_marginal_likelihood(
        self,
        *,
        method: Method = "auto",
        key: PRNGKeyArray | None = None,
        num_samples: int = 4096,
        num_nodes: int = 512,
    ) -> Float[Array, ""]:
        """``log p(y | x)`` in nats.

        Args:
            method: ``"exact"`` (plain GP or inverse gamma), ``"quadrature"``,
                ``"importance"``, or ``"auto"`` (exact when available, else quadrature).
            key: PRNG key (importance sampling only).
            num_samples: prior draws for importance sampling.
            num_nodes: quadrature nodes.

        Returns:
            The log marginal likelihood.
        """
        method = self._resolve(method)
        n = self.num_obs
        gaussian_part = -0.5 * n * jnp.log(2 * jnp.pi) - 0.5 * self.log_det
        prior = self.process.scale_prior
        if method == "exact":
            if prior is None:
                return gaussian_part - 0.5 * self.quad_form
            assert isinstance(prior, dist.InverseGamma)  # _resolve allows no other for "exact"
            _, _, log_normalizer = inverse_gamma_posterior(
                prior.concentration, prior.rate, self.quad_form, n
            )
            return gaussian_part + log_normalizer
        weights = self.scale_weights(
            method=method, key=key, num_samples=num_samples, num_nodes=num_nodes
        )
        return gaussian_part + weights.log_normalizer

    def predict(
        self,
        x_test: Float[ArrayLike, "m d"],
        *,
        include_noise: bool = True,
        method: Method = "auto",
        key: PRNGKeyArray | None = None,
        num_samples: int = 4096,
        num_nodes: int = 512,
    ) -> AbstractPredictive:
        """The marginal posterior predictive at each test input.

        Args:
            x_test: test inputs, ``(m, d)``.
            include_noise: predict noisy targets ``y*`` (default) or the latent ``f*``.
            method: how to integrate ``s``; see :meth:`log_marginal_likelihood`.
            key: PRNG key (importance sampling only).
            num_samples: prior draws for importance sampling.
            num_nodes: quadrature nodes.

        Returns:
            A :class:`NormalPredictive` (plain GP), :class:`StudentTPredictive` (inverse
            gamma, exact) or :class:`ScaleMixturePredictive` (quadrature / importance).

        Raises:
            ValueError: if ``x_test``'s feature count differs from the training inputs'.
        """
        check_inputs(x_test, "x_test", num_features=self.x.shape[1])
        method = self._resolve(method)
        mean, base_variance = self._moments(jnp.asarray(x_test, self.x.dtype), include_noise)
        return self._predictive(mean, base_variance, method, key, num_samples, num_nodes)

    def _predictive(
        self,
        mean: Array,
        base_variance: Array,
        method: Method,
        key: PRNGKeyArray | None,
        num_samples: int,
        num_nodes: int,
    ) -> AbstractPredictive:
        """The predictive from the ``s = 1`` moments, ``s`` integrated by ``method``."""
        prior = self.process.scale_prior
        if prior is None:
            return NormalPredictive(mean, base_variance)
        if method == "exact":
            assert isinstance(prior, dist.InverseGamma)  # _resolve allows no other for "exact"
            a_post, b_post, _ = inverse_gamma_posterior(
                prior.concentration, prior.rate, self.quad_form, self.num_obs
            )
            return StudentTPredictive(2 * a_post, mean, b_post / a_post * base_variance)
        weights = self.scale_weights(
            method=method, key=key, num_samples=num_samples, num_nodes=num_nodes
        )
        return ScaleMixturePredictive(mean, base_variance, weights.log_scales, weights.log_weights)
