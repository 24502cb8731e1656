"""GP regression data for a distribution transformer over a GP's hyperparameters.

The latent is ``theta = (log lengthscale, log variance, log noise)`` of a squared-exponential
GP: ``y ~ N(0, variance * K_lengthscale(x, x) + (noise + NOISE_JITTER) I)`` (``noise`` is a
variance, as in :class:`~probinfer.amortize.GPHyperPrior`, whose log-normal hyperprior is a
one-component Gaussian mixture over ``theta``). A Gaussian-mixture prior over ``theta`` plus
such data has no closed-form posterior: :func:`importance_posterior` gives a reference by
importance sampling (with its effective sample size), and :func:`gp_predictive_log_density`
turns draws of ``theta`` into the posterior predictive of new targets, which is what the
hyperparameters are for.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import logsumexp
from jaxtyping import Array, ArrayLike, Bool, Float, PRNGKeyArray

from probinfer._linalg import cholesky_lower, solve_lower_triangular
from probinfer._validation import check_magnitude, real_array
from probinfer.amortize.mixture import GaussianMixture

# theta's coordinates, in order.
HYPERPARAMETER_NAMES = ("log_lengthscale", "log_variance", "log_noise")
LATENT_DIM = 3
# Added to the noise variance everywhere (data, likelihood, predictive), as the GP PFN's
# NUTS reference does: it keeps the Cholesky factorisation stable in float32.
NOISE_JITTER = 1e-6


class GPRegressionData(eqx.Module):
    """Inputs and noisy targets of one GP draw.

    Build it with :func:`gp_regression_data`, which checks them.

    Attributes:
        inputs: ``(n, D)`` inputs.
        values: ``(n,)`` targets.
    """

    inputs: Float[Array, "n D"]
    values: Float[Array, " n"]

    @property
    def num_observations(self) -> int:
        """``n``."""
        return self.values.shape[0]

    @property
    def num_features(self) -> int:
        """``D``."""
        return self.inputs.shape[1]


def gp_regression_data(
    inputs: Float[ArrayLike, "n D"] | Float[ArrayLike, " n"], values: Float[ArrayLike, " n"]
) -> GPRegressionData:
    """Checked :class:`GPRegressionData` (``(n,)`` inputs are read as ``(n, 1)``).

    Raises:
        ValueError: on shapes that do not match, NaN or infinite entries, or values so
            large that their squares would overflow.
        TypeError: if either argument is not real numbers.
    """
    inputs_np = real_array("inputs", inputs).astype(float)
    values_np = real_array("values", values).astype(float)
    if inputs_np.ndim == 1:
        inputs_np = inputs_np[:, None]
    if inputs_np.ndim != 2 or values_np.ndim != 1 or inputs_np.shape[0] != values_np.shape[0]:
        raise ValueError(
            f"`inputs` must be (n, D) or (n,) and `values` (n,) with the same n, got "
            f"{inputs_np.shape} and {values_np.shape}."
        )
    for name, array in (("inputs", inputs_np), ("values", values_np)):
        if not np.all(np.isfinite(array)):
            raise ValueError(f"`{name}` contains NaN or infinite values; remove those points.")
        check_magnitude(name, array, "rescale the data (their units)")
    return GPRegressionData(jnp.asarray(inputs_np), jnp.asarray(values_np))


def _covariance(theta: Float[Array, " 3"], inputs: Array) -> Array:
    """``variance * K_lengthscale(x, x) + (noise + NOISE_JITTER) I``."""
    lengthscale, variance, noise = jnp.exp(theta[0]), jnp.exp(theta[1]), jnp.exp(theta[2])
    squared = jnp.sum((inputs[:, None, :] - inputs[None, :, :]) ** 2, axis=-1)
    kernel = variance * jnp.exp(-0.5 * squared / lengthscale**2)
    return kernel + (noise + NOISE_JITTER) * jnp.eye(inputs.shape[0], dtype=kernel.dtype)


def sample_gp_values(
    key: PRNGKeyArray, theta: Float[Array, " 3"], inputs: Float[Array, "n D"]
) -> Float[Array, " n"]:
    """One draw of the targets at ``inputs`` given ``theta``."""
    factor = jnp.linalg.cholesky(_covariance(theta, inputs))
    return factor @ jax.random.normal(key, (inputs.shape[0],), factor.dtype)


def gp_log_likelihood(
    theta: Float[Array, " 3"],
    data: GPRegressionData,
    observation_mask: Bool[Array, " n"] | None = None,
) -> Array:
    """``log N(values; 0, covariance(theta))`` over the real observations (nats).

    Padded observations (``observation_mask`` False) are cut out of the covariance (an
    identity row and column, value 0) and their constant removed, so they add nothing.
    """
    covariance = _covariance(theta, data.inputs)
    values = data.values
    if observation_mask is not None:
        pairs = observation_mask[:, None] & observation_mask[None, :]
        covariance = jnp.where(pairs, covariance, jnp.eye(values.shape[0], dtype=covariance.dtype))
        values = jnp.where(observation_mask, values, 0.0)
    factor = cholesky_lower(covariance)
    whitened = solve_lower_triangular(factor, values)
    count = values.shape[0] if observation_mask is None else jnp.sum(observation_mask)
    return (
        -0.5 * jnp.sum(whitened**2)
        - jnp.sum(jnp.log(jnp.diagonal(factor)))
        - 0.5 * count * jnp.log(2 * jnp.pi)
    )


def gp_predictive_log_density(
    draws: Float[Array, "S 3"],
    data: GPRegressionData,
    test_inputs: Float[Array, "m D"],
    test_values: Float[Array, " m"],
    log_weights: Float[Array, " S"] | None = None,
) -> Float[Array, " m"]:
    """``log sum_s w_s N(test_value; GP predictive at draw s)`` per test point (nats).

    The posterior predictive of each test target, marginal over the hyperparameter draws
    (equal weights unless ``log_weights``, normalised, are given). ``data`` holds real
    points only (no padding: every point conditions the GP).
    """

    def one(theta: Array) -> tuple[Array, Array]:
        lengthscale, variance, noise = jnp.exp(theta[0]), jnp.exp(theta[1]), jnp.exp(theta[2])
        factor = cholesky_lower(_covariance(theta, data.inputs))
        squared = jnp.sum((test_inputs[:, None, :] - data.inputs[None, :, :]) ** 2, axis=-1)
        cross = variance * jnp.exp(-0.5 * squared / lengthscale**2)
        # One solve for both right-hand sides.
        both = solve_lower_triangular(
            factor, jnp.concatenate([cross.T, data.values[:, None]], axis=1)
        )
        solved, alpha = both[:, :-1], both[:, -1]
        mean = solved.T @ alpha
        var = variance - jnp.sum(solved**2, axis=0) + noise + NOISE_JITTER
        return mean, jnp.sqrt(jnp.maximum(var, NOISE_JITTER))

    mean, sd = jax.vmap(one)(draws)
    log_p = jax.scipy.stats.norm.logpdf(test_values[None, :], mean, sd)
    if log_weights is None:
        log_weights = jnp.full(draws.shape[0], -jnp.log(draws.shape[0]), log_p.dtype)
    return logsumexp(log_p + log_weights[:, None], axis=0)


class ImportancePosterior(NamedTuple):
    """A weighted-draw posterior of ``theta``.

    Attributes:
        draws: ``(S, 3)`` draws of the proposal.
        log_weights: ``(S,)`` normalised log weights.
        log_joint: ``(S,)`` ``log prior + log likelihood`` at each draw (the posterior's
            log density there is ``log_joint - log_evidence``).
        log_evidence: estimate of ``log p(data)`` (nats).
        ess: effective sample size of the weights (Kish).
    """

    draws: Float[Array, "S 3"]
    log_weights: Float[Array, " S"]
    log_joint: Float[Array, " S"]
    log_evidence: Array
    ess: Array

    def log_prob(
        self, theta: Float[Array, " 3"], prior: GaussianMixture, data: GPRegressionData,
        observation_mask: Bool[Array, " n"] | None = None,
    ) -> Array:  # fmt: skip
        """The normalised posterior log density at ``theta`` (prior x likelihood / evidence)."""
        log_likelihood = gp_log_likelihood(theta, data, observation_mask)
        return prior.log_prob(theta) + log_likelihood - self.log_evidence

    def kl_to(self, q: GaussianMixture) -> tuple[Array, Array]:
        """``KL(posterior || q)`` (nats, whole latent) by the weighted draws, and its
        standard error."""
        weights = jnp.exp(self.log_weights)
        log_posterior = self.log_joint - self.log_evidence
        log_ratio = jnp.where(weights > 0, log_posterior - q.log_prob(self.draws), 0.0)
        kl = jnp.sum(weights * log_ratio)
        return kl, jnp.sqrt(jnp.sum(weights**2 * (log_ratio - kl) ** 2))


# A proposal's scale is widened by this factor (:func:`widened`): heavier than an
# approximate posterior where it is too narrow, so that the weights stay bounded.
PROPOSAL_WIDENING = 1.5


def widened(q: GaussianMixture, factor: float = PROPOSAL_WIDENING) -> GaussianMixture:
    """``q`` with every component's scale multiplied by ``factor`` (an importance proposal)."""
    return GaussianMixture(q.log_weights, q.means, factor * q.scale_tril)


def importance_posterior(
    key: PRNGKeyArray,
    prior: GaussianMixture,
    data: GPRegressionData,
    proposal: GaussianMixture,
    *,
    num_draws: int = 16_384,
    observation_mask: Bool[Array, " n"] | None = None,
) -> ImportancePosterior:
    """The posterior of ``theta`` by importance sampling from a defensive proposal.

    Draws come from ``r = (prior + proposal) / 2``: the prior half bounds the weights
    (``p(theta | data) / r <= 2 p(data | theta) / p(data)``), the proposal half (e.g. a
    widened transformer posterior) puts draws where the posterior is. The estimate is
    consistent whatever the proposal; its accuracy shows in ``ess``.
    """
    key_choice, key_prior, key_proposal = jax.random.split(key, 3)
    from_prior = jax.random.bernoulli(key_choice, 0.5, (num_draws,))
    draws = jnp.where(
        from_prior[:, None],
        prior.sample(key_prior, (num_draws,)),
        proposal.sample(key_proposal, (num_draws,)),
    )
    log_prior = prior.log_prob(draws)
    log_proposal = jnp.logaddexp(log_prior, proposal.log_prob(draws)) - jnp.log(2.0)
    log_likelihood = jax.vmap(lambda t: gp_log_likelihood(t, data, observation_mask))(draws)
    log_joint = log_prior + log_likelihood
    log_ratio = jnp.where(jnp.isnan(log_joint), -jnp.inf, log_joint - log_proposal)
    log_total = logsumexp(log_ratio)
    log_weights = log_ratio - log_total
    ess = jnp.exp(-logsumexp(2 * log_weights))
    return ImportancePosterior(draws, log_weights, log_joint, log_total - jnp.log(num_draws), ess)
