"""The scale-mixture NNGP as a NumPyro likelihood, for sampling ``s`` and hyperparameters.

Inside a NumPyro model, draw ``s`` from a scale prior (and any kernel hyperparameters),
then observe ``y`` under :func:`gaussian_process`; ``probinfer.sample`` (NUTS) then samples
the joint posterior of ``s`` and the hyperparameters::

    def model(x, y):
        s = numpyro.sample("s", nngp.burr_xii(2.0, 1.0))
        w = numpyro.sample("weight_variance", dist.LogNormal(0.5, 0.5))
        kernel = nngp.mlp(2, weight_variance=w)
        numpyro.sample("y", nngp.gaussian_process(kernel, x, scale=s, noise=0.1), obs=y)
"""

from __future__ import annotations

import jax.numpy as jnp
import numpyro.distributions as dist
from jaxtyping import ArrayLike, Float

from probinfer.nngp._checks import check_inputs, check_positive
from probinfer.nngp._kernel import AbstractKernel


def gaussian_process(
    kernel: AbstractKernel,
    x: Float[ArrayLike, "n d"],
    *,
    scale: ArrayLike = 1.0,
    noise: ArrayLike = 1e-2,
    jitter: float = 1e-6,
) -> dist.MultivariateNormal:
    """The distribution of ``y`` at ``x`` given ``s``: ``N(0, s (K + noise I))``.

    Args:
        kernel: the NNGP kernel (its variances may be NumPyro sample values).
        x: inputs, ``(n, d)``.
        scale: the last-layer variance scale ``s`` (> 0).
        noise: relative noise variance (> 0), as in :class:`ScaleMixtureProcess`.
        jitter: diagonal jitter before the Cholesky factorisation.

    Returns:
        A NumPyro ``MultivariateNormal`` with event shape ``(n,)``.
    """
    check_inputs(x, "x")
    check_positive(scale, "scale")
    check_positive(noise, "noise")
    x = jnp.asarray(x, jnp.result_type(float))
    cov = kernel(x) + (noise + jitter) * jnp.eye(x.shape[0], dtype=x.dtype)
    scale_tril = jnp.sqrt(scale) * jnp.linalg.cholesky(cov)
    return dist.MultivariateNormal(jnp.zeros(x.shape[0], x.dtype), scale_tril=scale_tril)
