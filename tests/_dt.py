"""Helpers shared by the distribution-transformer tests."""

from __future__ import annotations

import json
from pathlib import Path

import equinox as eqx
import jax
import numpy as np

from probinfer import amortize
from probinfer.amortize import DistributionTransformer, GaussianMixture


@eqx.filter_jit
def apply_compiled(model: DistributionTransformer, prior, data, **masks) -> GaussianMixture:
    """``model(prior, data, **masks)``, compiled (eager dispatch is slower than compiling)."""
    return model(prior, data, **masks)


def random_weights(model: DistributionTransformer, key: jax.Array) -> DistributionTransformer:
    """The model with every weight random (zero-initialised branches included), so that
    nothing the symmetry tests check is trivially true."""
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, treedef = jax.tree.flatten(params)
    keys = jax.random.split(key, len(leaves))
    noisy = [0.3 * jax.random.normal(k, leaf.shape) for k, leaf in zip(keys, leaves, strict=True)]
    return eqx.combine(jax.tree.unflatten(treedef, noisy), static)


def assert_matches_exact_posterior(model: DistributionTransformer, folder: Path) -> dict:
    """300 held-out examples of the task saved in ``folder`` (a key training never used).

    The true latent is a draw from the exact posterior given its data, so ``E[log p(theta)
    - log q(theta)]`` over examples equals the mean ``KL(exact || q)`` (estimated from 256
    exact draws per example): the two estimators agree within 4.5 standard errors of
    their per-example difference (a wrong exact posterior breaks it). Then the KL per
    dimension is below the 0.05 nats goal by more than 3 standard errors.

    Returns:
        The evaluation's summary.
    """
    config = json.loads((folder / "config.json").read_text())
    task = amortize.task_from_spec(config["task"])
    evaluation = amortize.evaluate_dt(model, task, jax.random.key(777), num_examples=300)
    difference = np.asarray(evaluation.nll_q - evaluation.nll_exact - evaluation.kl)
    assert abs(difference.mean()) < 4.5 * difference.std(ddof=1) / np.sqrt(difference.size)
    summary = evaluation.summary(task.dim)
    assert summary["kl_per_dim"] + 3 * summary["kl_se"] < 0.05, summary
    return summary
