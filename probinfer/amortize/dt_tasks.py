"""Training tasks for the distribution transformer: a meta-prior over priors, then data.

A task draws one training example: a prior from its meta-prior (a Gaussian mixture, or a
parametric prior such as the normal-inverse-gamma), a latent ``theta`` from that prior,
and observations of ``theta``. The transformer is trained to
maximise ``log q(theta | prior, data)``; in expectation over the task that is minimising
``KL(exact posterior || q)``, so a task defines the family of priors and data that the
trained network answers for. Examples are padded to ``max_components`` components and
``max_observations`` observations with masks, so that a batch has one shape.
"""

from __future__ import annotations

import abc
from typing import ClassVar, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Bool, Float, PRNGKeyArray

from probinfer.amortize.gp_hyperparameters import (
    HYPERPARAMETER_NAMES as GP_HYPERPARAMETER_NAMES,
)
from probinfer.amortize.gp_hyperparameters import (
    LATENT_DIM as GP_LATENT_DIM,
)
from probinfer.amortize.gp_hyperparameters import (
    GPRegressionData,
    sample_gp_values,
)
from probinfer.amortize.mixture import GaussianMixture, LinearGaussianData
from probinfer.amortize.normal_inverse_gamma import LATENT_DIM, NormalData, NormalInverseGamma


class TrainingExample(NamedTuple):
    """One padded example (``K = max_components``, ``N = max_observations``).

    Attributes:
        prior: the prior, ``K`` components; padded ones have weight 0 (log weight
            ``-inf``), mean 0 and identity factor, so the prior is a normalised density.
            Or a parametric prior (:class:`NormalInverseGammaTask`).
        component_mask: ``(K,)`` which components are real (all, for a parametric prior:
            its posterior has ``K`` components).
        theta: ``(d,)`` the latent drawn from the prior.
        data: ``N`` observations of ``theta``; padded ones have design 0, value 0 and unit
            noise: the same likelihood for every ``theta``, so they leave the posterior
            unchanged (but add ``-log(2 pi) / 2`` each to a log marginal likelihood).
            Padded draws of a normal (:class:`NormalData`) have value 0 and are masked;
            padded GP points (:class:`GPRegressionData`) have input 0, value 0 and are
            masked.
        observation_mask: ``(N,)`` which observations are real.
    """

    prior: GaussianMixture | NormalInverseGamma
    component_mask: Bool[Array, " K"]
    theta: Float[Array, " d"]
    data: LinearGaussianData | NormalData | GPRegressionData
    observation_mask: Bool[Array, " N"]


def masked_log_weights(log_weights: Array, mask: Array) -> Array:
    """Log weights renormalised over the real components (padded ones get ``-inf``)."""
    return jax.nn.log_softmax(jnp.where(mask, log_weights, -jnp.inf))


class AbstractPosteriorTask(eqx.Module):
    """A meta-prior over priors (Gaussian mixtures, or a parametric family) and a data model.

    Attributes:
        dim: latent dimension ``d``.
        max_components: the most prior components an example has (the posterior's
            number of components, for a parametric prior).
        max_observations: the most observations an example has.
        prior_family: the :data:`~probinfer.amortize.distribution_transformer.PRIOR_FAMILIES`
            entry its priors belong to (a class constant).
    """

    prior_family: ClassVar[str] = "gaussian_mixture"
    dim: eqx.AbstractVar[int]
    max_components: eqx.AbstractVar[int]
    max_observations: eqx.AbstractVar[int]

    @abc.abstractmethod
    def sample(self, key: PRNGKeyArray) -> TrainingExample:
        """One padded training example."""

    @abc.abstractmethod
    def spec(self) -> dict:
        """A JSON description from which :func:`task_from_spec` rebuilds this task."""

    def prior_ranges(self) -> tuple[tuple[str, float, float], ...]:
        """``(name, low, high)`` of each parametric prior parameter the meta-prior spans
        (none for mixture priors, whose trained range :func:`data_sharpness` checks)."""
        return ()

    def sharpness_bound(self) -> float | None:
        """The largest ``data_sharpness`` any example can have, where the meta-prior
        bounds it (``None``: unbounded, use a percentile of draws)."""
        return None


def _check_sizes(
    max_components: int, max_observations: int, min_observations: int, *, dim: int = 1
) -> None:
    """Refuse sizes that are not integers, or out of range."""
    for name, value in (("dim", dim), ("max_components", max_components),
                        ("max_observations", max_observations),
                        ("min_observations", min_observations)):  # fmt: skip
        if not isinstance(value, (int, np.integer)) or isinstance(value, bool):
            raise TypeError(f"`{name}` must be an integer, got {value!r}.")
    for name, value in (("dim", dim), ("max_components", max_components),
                        ("max_observations", max_observations)):  # fmt: skip
        if value < 1:
            raise ValueError(f"`{name}` must be >= 1, got {value}.")
    if not 0 <= min_observations <= max_observations:
        raise ValueError(
            f"`min_observations` must be in [0, max_observations={max_observations}], "
            f"got {min_observations}."
        )


def _check_range(name: str, pair: tuple[float, float]) -> tuple[float, float]:
    if len(pair) != 2 or not 0 < pair[0] <= pair[1]:
        raise ValueError(f"`{name}` must be (low, high) with 0 < low <= high, got {pair}.")
    return float(pair[0]), float(pair[1])


def _log_uniform(key: PRNGKeyArray, bounds: tuple[float, float], shape: tuple = ()) -> Array:
    low, high = np.log(bounds)
    return jnp.exp(jax.random.uniform(key, shape, minval=low, maxval=high))


def _random_scale_tril(key: PRNGKeyArray, dim: int, sd: Array) -> Array:
    """A Cholesky factor with standard deviations ``sd`` and a random correlation.

    The correlation is a normalised Wishart draw with ``dim + 2`` degrees of freedom
    (correlations spread over (-1, 1), rarely near the ends).
    """
    factor = jax.random.normal(key, (dim, dim + 2))
    gram = factor @ factor.T
    inverse_sd = 1 / jnp.sqrt(jnp.diagonal(gram))
    correlation = gram * inverse_sd[:, None] * inverse_sd[None, :]
    return sd[:, None] * jnp.linalg.cholesky(correlation)


def _sample_mixture_prior(
    key: PRNGKeyArray,
    max_components: int,
    center: Array,
    mean_sd: Array,
    component_sd: tuple[float, float],
) -> tuple[GaussianMixture, Array]:
    """A padded mixture prior from the meta-prior and its component mask.

    ``K ~ U{1..max_components}`` components with Dirichlet(1) weights, means ``center +
    mean_sd * N(0, I)``, per-axis standard deviations log-uniform on ``component_sd`` and a
    random correlation (:func:`_random_scale_tril`).
    """
    k_count, k_weights, k_means, k_sd, k_corr = jax.random.split(key, 5)
    dim = center.shape[0]
    count = jax.random.randint(k_count, (), 1, max_components + 1)
    mask = jnp.arange(max_components) < count
    log_weights = masked_log_weights(
        jnp.log(jnp.maximum(jax.random.dirichlet(k_weights, jnp.ones(max_components)), 1e-30)),
        mask,
    )
    means = center[None, :] + mean_sd[None, :] * jax.random.normal(k_means, (max_components, dim))
    low, high = jnp.log(jnp.asarray(component_sd))
    sd = jnp.exp(jax.random.uniform(k_sd, (max_components, dim), minval=low, maxval=high))
    trils = jax.vmap(lambda k, s: _random_scale_tril(k, dim, s))(
        jax.random.split(k_corr, max_components), sd
    )
    # Padded components: weight 0 (log weight -inf), finite placeholder moments.
    means = jnp.where(mask[:, None], means, 0.0)
    trils = jnp.where(mask[:, None, None], trils, jnp.eye(dim)[None])
    return GaussianMixture(log_weights, means, trils), mask


class LinearGaussianTask(AbstractPosteriorTask):
    """Mixture priors with linear-Gaussian observations (the exact posterior is known).

    The meta-prior: ``K ~ U{1..max_components}`` components with Dirichlet(1) weights,
    means ``N(0, mean_sd^2 I)``, per-axis standard deviations log-uniform on
    ``component_sd`` and a random correlation. Then ``theta`` from the prior and
    ``n ~ U{min_observations..max_observations}`` observations ``a_j @ theta + s_j eps``
    with ``a_j ~ N(0, I)`` and ``s_j`` log-uniform on ``noise_sd``.

    The defaults are the shipped models' meta-prior. Wider ranges (sharper data, narrower
    or farther-apart components) make the task harder for a network of a given size: with
    noise down to 0.1, components down to 0.1 and 16 observations, the default network
    stood at KL 0.15 nats per dimension after 3,000 steps, where on the default range it
    stood at 0.06 after 2,000 (and 0.006 after 20,000): a posterior 100x narrower than
    its prior needs its mean placed to about 1% of the prior's width.

    Attributes:
        dim: latent dimension.
        max_components: most prior components.
        max_observations: most observations.
        min_observations: fewest observations (0 trains the prior-to-prior map too).
        mean_sd: spread of the component means.
        component_sd: ``(low, high)`` of the components' standard deviations.
        noise_sd: ``(low, high)`` of the observation noise's standard deviations.
    """

    dim: int = eqx.field(static=True)
    max_components: int = eqx.field(static=True)
    max_observations: int = eqx.field(static=True)
    min_observations: int = eqx.field(static=True)
    mean_sd: float = eqx.field(static=True)
    component_sd: tuple[float, float] = eqx.field(static=True)
    noise_sd: tuple[float, float] = eqx.field(static=True)

    def __init__(
        self,
        dim: int,
        *,
        max_components: int = 4,
        max_observations: int = 8,
        min_observations: int = 0,
        mean_sd: float = 1.0,
        component_sd: tuple[float, float] = (0.2, 1.0),
        noise_sd: tuple[float, float] = (0.3, 3.0),
    ) -> None:
        _check_sizes(max_components, max_observations, min_observations, dim=dim)
        if not mean_sd >= 0:
            raise ValueError(f"`mean_sd` must be >= 0, got {mean_sd}.")
        self.dim = int(dim)
        self.max_components = int(max_components)
        self.max_observations = int(max_observations)
        self.min_observations = int(min_observations)
        self.mean_sd = float(mean_sd)
        self.component_sd = _check_range("component_sd", component_sd)
        self.noise_sd = _check_range("noise_sd", noise_sd)

    def sample_prior(self, key: PRNGKeyArray) -> tuple[GaussianMixture, Array]:
        """A padded prior from the meta-prior and its component mask."""
        return _sample_mixture_prior(
            key,
            self.max_components,
            jnp.zeros(self.dim),
            jnp.full(self.dim, self.mean_sd),
            self.component_sd,
        )

    def sample(self, key: PRNGKeyArray) -> TrainingExample:
        """Prior, latent and ``n`` observations, padded."""
        k_prior, k_theta, k_count, k_design, k_noise, k_eps = jax.random.split(key, 6)
        prior, mask = self.sample_prior(k_prior)
        theta = prior.sample(k_theta)
        size = self.max_observations
        count = jax.random.randint(k_count, (), self.min_observations, size + 1)
        observed = jnp.arange(size) < count
        design = jax.random.normal(k_design, (size, self.dim))
        low, high = jnp.log(jnp.asarray(self.noise_sd))
        noise_sd = jnp.exp(jax.random.uniform(k_noise, (size,), minval=low, maxval=high))
        values = design @ theta + noise_sd * jax.random.normal(k_eps, (size,))
        data = LinearGaussianData(
            jnp.where(observed[:, None], design, 0.0),
            jnp.where(observed, values, 0.0),
            jnp.where(observed, noise_sd, 1.0),
        )
        return TrainingExample(prior, mask, theta, data, observed)

    def spec(self) -> dict:
        """JSON description (``{"type": "linear_gaussian", ...}``)."""
        return {
            "type": "linear_gaussian",
            "dim": self.dim,
            "max_components": self.max_components,
            "max_observations": self.max_observations,
            "min_observations": self.min_observations,
            "mean_sd": self.mean_sd,
            "component_sd": list(self.component_sd),
            "noise_sd": list(self.noise_sd),
        }


class NormalInverseGammaTask(AbstractPosteriorTask):
    """Normal-inverse-gamma priors with draws of a normal (the exact posterior is known).

    The meta-prior: ``pseudo_count`` and ``concentration`` log-uniform on their ranges,
    ``loc ~ N(0, 1)`` and ``rate`` log-uniform on ``[0.1, 10]`` (the units of ``y``: the
    network removes them exactly, so they do not matter). Then ``theta = (mu, log sigma^2)`` from
    the prior and ``n ~ U{min_observations..max_observations}`` draws ``y_j ~ N(mu,
    sigma^2)``. The transformer answers with a ``max_components``-component mixture over
    ``theta``.

    Attributes:
        dim: 2, ``(mu, log sigma^2)``.
        max_components: components of the posterior mixture.
        max_observations: most observations.
        min_observations: fewest observations (0 trains the prior's own shape too).
        pseudo_count: ``(low, high)`` of the prior's worth for ``mu``, in observations.
        concentration: ``(low, high)`` of the inverse-gamma shape of ``sigma^2``.
    """

    prior_family: ClassVar[str] = "normal_inverse_gamma"
    dim: int = eqx.field(static=True)
    max_components: int = eqx.field(static=True)
    max_observations: int = eqx.field(static=True)
    min_observations: int = eqx.field(static=True)
    pseudo_count: tuple[float, float] = eqx.field(static=True)
    concentration: tuple[float, float] = eqx.field(static=True)

    def __init__(
        self,
        *,
        max_components: int = 4,
        max_observations: int = 16,
        min_observations: int = 0,
        pseudo_count: tuple[float, float] = (0.1, 10.0),
        concentration: tuple[float, float] = (0.5, 10.0),
    ) -> None:
        _check_sizes(max_components, max_observations, min_observations)
        self.dim = LATENT_DIM
        self.max_components = int(max_components)
        self.max_observations = int(max_observations)
        self.min_observations = int(min_observations)
        self.pseudo_count = _check_range("pseudo_count", pseudo_count)
        self.concentration = _check_range("concentration", concentration)

    def sample_prior(self, key: PRNGKeyArray) -> NormalInverseGamma:
        """A prior from the meta-prior."""
        k_loc, k_count, k_concentration, k_rate = jax.random.split(key, 4)
        return NormalInverseGamma(
            jax.random.normal(k_loc),
            _log_uniform(k_count, self.pseudo_count),
            _log_uniform(k_concentration, self.concentration),
            _log_uniform(k_rate, (0.1, 10.0)),
        )

    def sample(self, key: PRNGKeyArray) -> TrainingExample:
        """Prior, latent and ``n`` draws, padded."""
        k_prior, k_theta, k_count, k_eps = jax.random.split(key, 4)
        prior = self.sample_prior(k_prior)
        theta = prior.sample(k_theta)
        size = self.max_observations
        count = jax.random.randint(k_count, (), self.min_observations, size + 1)
        observed = jnp.arange(size) < count
        values = theta[0] + jnp.exp(0.5 * theta[1]) * jax.random.normal(k_eps, (size,))
        data = NormalData(jnp.where(observed, values, 0.0))
        mask = jnp.ones(self.max_components, bool)
        return TrainingExample(prior, mask, theta, data, observed)

    def prior_ranges(self) -> tuple[tuple[str, float, float], ...]:
        """The trained ranges of ``pseudo_count`` and ``concentration`` (``loc`` and
        ``rate`` carry the units, which the network removes)."""
        return (("pseudo_count", *self.pseudo_count), ("concentration", *self.concentration))

    def sharpness_bound(self) -> float:
        """The largest ``data_sharpness`` of any example: ``sqrt(max_observations *
        max(1 / pseudo_count, 1 / (2 concentration)))`` at the ranges' lower ends."""
        most = max(1 / self.pseudo_count[0], 0.5 / self.concentration[0])
        return float(np.sqrt(self.max_observations * most))

    def spec(self) -> dict:
        """JSON description (``{"type": "normal_inverse_gamma", ...}``)."""
        return {
            "type": "normal_inverse_gamma",
            "max_components": self.max_components,
            "max_observations": self.max_observations,
            "min_observations": self.min_observations,
            "pseudo_count": list(self.pseudo_count),
            "concentration": list(self.concentration),
        }


# A GP task's trained range of component means: this many `mean_sd` either side of the
# centre (two-sided normal tail 1e-3).
MEAN_RANGE_SDS = 3.3


class GPHyperparameterTask(AbstractPosteriorTask):
    """Mixture priors over a GP's log hyperparameters, with GP regression data.

    The latent is ``theta = (log lengthscale, log variance, log noise)``
    (:mod:`probinfer.amortize.gp_hyperparameters`). The meta-prior: ``K ~
    U{1..max_components}`` components with Dirichlet(1) weights, means ``center + mean_sd *
    N(0, I)``, per-axis standard deviations log-uniform on ``component_sd`` and a random
    correlation. Then ``theta`` from the prior, ``n ~ U{min_observations..max_observations}``
    inputs uniform on ``[-1, 1]^num_features`` and the GP's targets at them. The defaults
    centre the meta-prior on the hyperprior of the shipped GP PFN
    (:class:`~probinfer.amortize.GPHyperPrior`'s defaults: means ``(-1, 0, -4)``, standard
    deviations ``(0.5, 0.3, 1)``), which therefore lies well inside it.

    There is no closed-form posterior: the exact answer is approximated by importance
    sampling (:func:`~probinfer.amortize.importance_posterior`) when the model is judged.

    Attributes:
        dim: 3.
        max_components: most prior components.
        max_observations: most observations.
        min_observations: fewest observations.
        num_features: input dimension ``D``.
        center: ``(3,)`` centre of the component means.
        mean_sd: ``(3,)`` spread of the component means per axis.
        component_sd: ``(low, high)`` of the components' standard deviations.
    """

    prior_family: ClassVar[str] = "gp_hyperparameters"
    dim: int = eqx.field(static=True)
    max_components: int = eqx.field(static=True)
    max_observations: int = eqx.field(static=True)
    min_observations: int = eqx.field(static=True)
    num_features: int = eqx.field(static=True)
    center: tuple[float, float, float] = eqx.field(static=True)
    mean_sd: tuple[float, float, float] = eqx.field(static=True)
    component_sd: tuple[float, float] = eqx.field(static=True)

    def __init__(
        self,
        *,
        max_components: int = 2,
        max_observations: int = 20,
        min_observations: int = 0,
        num_features: int = 1,
        center: tuple[float, float, float] = (-1.0, 0.0, -4.0),
        mean_sd: tuple[float, float, float] = (0.5, 0.5, 1.0),
        component_sd: tuple[float, float] = (0.1, 1.0),
    ) -> None:
        _check_sizes(max_components, max_observations, min_observations)
        if not isinstance(num_features, (int, np.integer)) or isinstance(num_features, bool):
            raise TypeError(f"`num_features` must be an integer, got {num_features!r}.")
        if num_features < 1:
            raise ValueError(f"`num_features` must be >= 1, got {num_features}.")
        for name, triple in (("center", center), ("mean_sd", mean_sd)):
            if len(triple) != GP_LATENT_DIM or not all(np.isfinite(triple)):
                raise ValueError(f"`{name}` must be 3 finite numbers, got {triple}.")
        if not all(value >= 0 for value in mean_sd):
            raise ValueError(f"`mean_sd` must be >= 0, got {mean_sd}.")
        self.dim = GP_LATENT_DIM
        self.max_components = int(max_components)
        self.max_observations = int(max_observations)
        self.min_observations = int(min_observations)
        self.num_features = int(num_features)
        self.center = tuple(float(v) for v in center)  # type: ignore[assignment]
        self.mean_sd = tuple(float(v) for v in mean_sd)  # type: ignore[assignment]
        self.component_sd = _check_range("component_sd", component_sd)

    def sample_prior(self, key: PRNGKeyArray) -> tuple[GaussianMixture, Array]:
        """A padded prior from the meta-prior and its component mask."""
        return _sample_mixture_prior(
            key,
            self.max_components,
            jnp.asarray(self.center),
            jnp.asarray(self.mean_sd),
            self.component_sd,
        )

    def sample(self, key: PRNGKeyArray) -> TrainingExample:
        """Prior, hyperparameters, inputs and the GP's targets, padded."""
        k_prior, k_theta, k_count, k_inputs, k_values = jax.random.split(key, 5)
        prior, mask = self.sample_prior(k_prior)
        theta = prior.sample(k_theta)
        size = self.max_observations
        count = jax.random.randint(k_count, (), self.min_observations, size + 1)
        observed = jnp.arange(size) < count
        inputs = jax.random.uniform(k_inputs, (size, self.num_features), minval=-1.0, maxval=1.0)
        # The first `count` of a draw at all `size` inputs are a draw at those inputs.
        values = sample_gp_values(k_values, theta, inputs)
        data = GPRegressionData(
            jnp.where(observed[:, None], inputs, 0.0), jnp.where(observed, values, 0.0)
        )
        return TrainingExample(prior, mask, theta, data, observed)

    def prior_ranges(self) -> tuple[tuple[str, float, float], ...]:
        """Where the meta-prior puts the component means of each axis of ``theta``
        (``center +- 3.3 mean_sd``: all but one in 1,000 draws), and the range of the
        components' standard deviations."""
        means = tuple(
            (name, c - MEAN_RANGE_SDS * sd, c + MEAN_RANGE_SDS * sd)
            for name, c, sd in zip(GP_HYPERPARAMETER_NAMES, self.center, self.mean_sd, strict=True)
        )
        return (*means, ("component_sd", *self.component_sd))

    def spec(self) -> dict:
        """JSON description (``{"type": "gp_hyperparameters", ...}``)."""
        return {
            "type": "gp_hyperparameters",
            "max_components": self.max_components,
            "max_observations": self.max_observations,
            "min_observations": self.min_observations,
            "num_features": self.num_features,
            "center": list(self.center),
            "mean_sd": list(self.mean_sd),
            "component_sd": list(self.component_sd),
        }


def task_from_spec(spec: dict) -> AbstractPosteriorTask:
    """Rebuild a task from :meth:`AbstractPosteriorTask.spec`'s description.

    Raises:
        ValueError: on an unknown type or setting.
    """
    settings = dict(spec)
    kind = settings.pop("type", None)
    if kind not in ("linear_gaussian", "normal_inverse_gamma", "gp_hyperparameters"):
        raise ValueError(
            f"unknown task type {kind!r}; use 'linear_gaussian', 'normal_inverse_gamma' or "
            "'gp_hyperparameters'."
        )
    try:
        for name in ("component_sd", "noise_sd", "pseudo_count", "concentration", "center",
                     "mean_sd"):  # fmt: skip
            if isinstance(settings.get(name), list):
                settings[name] = tuple(settings[name])
        if kind == "normal_inverse_gamma":
            return NormalInverseGammaTask(**settings)
        if kind == "gp_hyperparameters":
            return GPHyperparameterTask(**settings)
        dim = settings.pop("dim")
        return LinearGaussianTask(dim, **settings)
    except (TypeError, KeyError) as error:
        raise ValueError(f"bad task settings for type {kind!r}: {error}") from None


def sample_examples(key: PRNGKeyArray, task: AbstractPosteriorTask, num: int) -> TrainingExample:
    """``num`` independent examples, stacked on a leading axis."""
    return jax.vmap(task.sample)(jax.random.split(key, num))
