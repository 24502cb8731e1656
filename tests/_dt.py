"""Helpers shared by the distribution-transformer tests."""

from __future__ import annotations

import equinox as eqx
import jax

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
