"""Judging a distribution transformer against the exact posterior of its task.

For linear-Gaussian data the exact posterior of a Gaussian-mixture prior is known
(:meth:`GaussianMixture.condition`), and so is that of a normal-inverse-gamma prior given
draws of a normal (:meth:`NormalInverseGamma.condition`), so the approximation error is
measured, not guessed:
the gap in negative log density of the true latent (whose expectation is the expected
``KL(exact || q)``) and ``KL(exact || q)`` itself by Monte Carlo from the exact posterior.
A GP's hyperparameter posterior has no closed form: there the exact posterior is
replaced by importance sampling (:func:`~probinfer.amortize.importance_posterior`, from
the prior and the widened transformer posterior), whose effective sample size is kept
with the figures.
"""

from __future__ import annotations

from typing import NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, PRNGKeyArray

from probinfer.amortize.distribution_transformer import DistributionTransformer
from probinfer.amortize.dt_tasks import (
    AbstractPosteriorTask,
    TrainingExample,
    masked_log_weights,
    sample_examples,
)
from probinfer.amortize.gp_hyperparameters import (
    GPRegressionData,
    importance_posterior,
    widened,
)
from probinfer.amortize.mixture import GaussianMixture, LinearGaussianData
from probinfer.amortize.normal_inverse_gamma import NormalData, NormalInverseGamma


class DTEvaluation(NamedTuple):
    """Per-example figures (nats, whole latent; divide by ``d`` for per-dimension).

    Attributes:
        nll_q: ``-log q(theta)`` of the true latent.
        nll_exact: ``-log p(theta | prior, data)`` of the true latent.
        kl: Monte Carlo ``KL(exact || q)``.
        kl_se: its Monte Carlo standard error.
        num_components: prior components (the posterior's, for a parametric prior).
        num_observations: observations.
        reference_ess: effective sample size of the importance-sampling reference (GP
            hyperparameters; ``None`` where the exact posterior is known).
    """

    nll_q: Float[Array, " n"]
    nll_exact: Float[Array, " n"]
    kl: Float[Array, " n"]
    kl_se: Float[Array, " n"]
    num_components: Array
    num_observations: Array
    reference_ess: Array | None = None

    def summary(self, dim: int) -> dict[str, float]:
        """Means per latent dimension, with standard errors over examples."""
        gap = np.asarray(self.nll_q - self.nll_exact) / dim
        kl = np.asarray(self.kl) / dim
        count = gap.shape[0]
        return {
            "examples": count,
            "nll_gap_per_dim": float(gap.mean()),
            "nll_gap_se": float(gap.std(ddof=1) / np.sqrt(count)),
            "kl_per_dim": float(kl.mean()),
            "kl_se": float(kl.std(ddof=1) / np.sqrt(count)),
            "nll_exact_per_dim": float(np.mean(np.asarray(self.nll_exact)) / dim),
        }


def exact_posterior(example: TrainingExample) -> GaussianMixture | NormalInverseGamma:
    """The exact posterior of one padded example (padded observations carry no data).

    Raises:
        TypeError: for GP data, whose posterior has no closed form (use
            :func:`~probinfer.amortize.importance_posterior`, as :func:`evaluate_dt` does).
    """
    if isinstance(example.data, GPRegressionData):
        raise TypeError(
            "a GP's hyperparameter posterior has no closed form: use "
            "`amortize.importance_posterior` (or `evaluate_dt`, which does)."
        )
    prior = example.prior
    if isinstance(prior, NormalInverseGamma):
        assert isinstance(example.data, NormalData)  # a task pairs them
        return prior.condition(example.data, observation_mask=example.observation_mask)
    assert isinstance(example.data, LinearGaussianData)  # a task pairs them
    masked = GaussianMixture(
        masked_log_weights(prior.log_weights, example.component_mask),
        prior.means,
        prior.scale_tril,
    )
    # A padded observation has design 0: its likelihood is the same for every component.
    return masked.condition(example.data)


# Examples per compiled call of the importance-sampling evaluation (a Python loop over
# vmapped chunks: each holds chunk x num_draws covariance matrices at once).
IMPORTANCE_CHUNK = 4


def _evaluate_by_importance(
    model: DistributionTransformer, examples: TrainingExample, key: PRNGKeyArray, num_draws: int
) -> DTEvaluation:
    count = examples.theta.shape[0]
    keys = jax.random.key_data(jax.random.split(key, count))
    # Sliced on the host: slicing device arrays compiles a program per shape.
    host = jax.tree.map(np.asarray, (examples, keys))
    parts = []
    for start in range(0, count, IMPORTANCE_CHUNK):
        stop = start + IMPORTANCE_CHUNK
        chunk, chunk_keys = jax.tree.map(lambda leaf, a=start, b=stop: leaf[a:b], host)
        parts.append(
            _importance_chunk(model, chunk, jax.random.wrap_key_data(chunk_keys), num_draws)
        )
    nll_q, nll_exact, kl, kl_se, ess = (
        jnp.concatenate([np.asarray(part[i]) for part in parts]) for i in range(5)
    )
    return _evaluation(examples, nll_q, nll_exact, kl, kl_se, ess)


def _evaluation(examples: TrainingExample, *figures: Array) -> DTEvaluation:
    """The per-example figures with the examples' component and observation counts."""
    nll_q, nll_exact, kl, kl_se, *ess = figures
    return DTEvaluation(
        nll_q,
        nll_exact,
        kl,
        kl_se,
        examples.component_mask.sum(-1),
        examples.observation_mask.sum(-1),
        *ess,
    )


@eqx.filter_jit
def _importance_chunk(
    model: DistributionTransformer, examples: TrainingExample, keys: Array, num_draws: int
) -> tuple[Array, ...]:
    def one(example: TrainingExample, key: PRNGKeyArray) -> tuple[Array, ...]:
        # The task pairs a mixture prior with GP data.
        assert isinstance(example.data, GPRegressionData)
        assert isinstance(example.prior, GaussianMixture)
        q = model(
            example.prior,
            example.data,
            component_mask=example.component_mask,
            observation_mask=example.observation_mask,
        )
        prior = GaussianMixture(
            masked_log_weights(example.prior.log_weights, example.component_mask),
            example.prior.means,
            example.prior.scale_tril,
        )
        reference = importance_posterior(
            key, prior, example.data, widened(q), num_draws=num_draws,
            observation_mask=example.observation_mask,
        )  # fmt: skip
        kl, kl_se = reference.kl_to(q)
        nll_exact = -reference.log_prob(
            example.theta, prior, example.data, example.observation_mask
        )
        nll_q = -q.log_prob(example.theta)
        return nll_q, nll_exact, kl, kl_se, reference.ess

    return jax.vmap(one)(examples, keys)


@eqx.filter_jit
def _evaluate(
    model: DistributionTransformer, examples: TrainingExample, key: PRNGKeyArray, num_draws: int
) -> DTEvaluation:
    def one(example: TrainingExample, key: PRNGKeyArray) -> tuple[Array, ...]:
        q = model(
            example.prior,
            example.data,
            component_mask=example.component_mask,
            observation_mask=example.observation_mask,
        )
        exact = exact_posterior(example)
        draws = exact.sample(key, (num_draws,))
        log_ratio = exact.log_prob(draws) - q.log_prob(draws)
        return (
            -q.log_prob(example.theta),
            -exact.log_prob(example.theta),
            log_ratio.mean(),
            log_ratio.std() / jnp.sqrt(num_draws),
        )

    keys = jax.random.split(key, examples.theta.shape[0])
    return _evaluation(examples, *jax.lax.map(lambda args: one(*args), (examples, keys)))


def evaluate_dt(
    model: DistributionTransformer,
    task: AbstractPosteriorTask,
    key: PRNGKeyArray,
    *,
    num_examples: int = 1000,
    num_draws: int | None = None,
) -> DTEvaluation:
    """Compare ``model`` with the exact posterior on fresh examples of ``task``.

    Args:
        model: the transformer.
        task: the task (:class:`LinearGaussianTask`, :class:`NormalInverseGammaTask`:
            closed-form posteriors; :class:`GPHyperparameterTask`: importance sampling);
            held-out priors and data come from its meta-prior.
        key: PRNG key (use one the training never saw).
        num_examples: examples.
        num_draws: exact-posterior draws per example for the KL estimate (default 256),
            or importance draws for a GP task (default 16,384).

    Returns:
        Per-example figures; :meth:`DTEvaluation.summary` averages them.
    """
    key_examples, key_draws = jax.random.split(key)
    examples = sample_examples(key_examples, task, num_examples)
    if task.prior_family == "gp_hyperparameters":
        return _evaluate_by_importance(model, examples, key_draws, num_draws or 16_384)
    return _evaluate(model, examples, key_draws, num_draws or 256)
