"""A test helper shared by the PFN test files: a model with every weight matrix randomised."""

import equinox as eqx
import jax


def randomise_weights(model, scale: float = 0.3):
    """``model`` with ``scale * N(0, 1)`` added to every 2-d weight (key 1).

    Zero-initialised residual branches make a fresh model ignore its context; randomising
    every weight matrix lets invariance tests fail.
    """
    params, static = eqx.partition(model, eqx.is_inexact_array)
    leaves, treedef = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.key(1), len(leaves))
    noisy = [
        leaf + scale * jax.random.normal(k, leaf.shape) if leaf.ndim == 2 else leaf
        for leaf, k in zip(leaves, keys, strict=True)
    ]
    return eqx.combine(jax.tree_util.tree_unflatten(treedef, noisy), static)
