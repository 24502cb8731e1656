"""What a model adds to its draws' InferenceData: the ``log_likelihood`` and
``observed_data`` groups (what ``az.loo``, ``az.waic``, ``az.compare`` and ``az.plot_ppc``
read), ``constant_data`` (its other array arguments) and dimension names from its plates.

Only NumPyro models have observed sites and plates to name; a hand-written ``LogDensity``
has no pointwise likelihood, so it gets neither group.
"""

from __future__ import annotations

import math
from typing import Any

import jax
import numpy as np

from probinfer.driver import CompileWatch, call_compiled
from probinfer.model import NumPyroModel

PyTree = Any


# Draws per call of the pointwise log-likelihood program: a fixed block, so that runs with
# any number of chains and draws share one program (and memory stays bounded per call).
POINTWISE_BLOCK = 256


def _pointwise(spec: NumPyroModel, data: PyTree, draws: dict[str, Any]) -> dict[str, Any]:
    """Pointwise log likelihoods of a block of ``(draw, ...)`` constrained draws.

    One draw after another (``lax.map``), not batched (``vmap``): a batched LAPACK call (a
    multivariate normal's Cholesky or triangular solve) splits its batch over XLA:CPU's
    thread pool and waits for the parts with jaxlib 0.10.0-0.11.0 (excluded by the
    requirements; kept for environments that install them anyway), and two independent ones
    (a model with two such likelihood terms) each held a pool thread while waiting for parts
    queued behind the other: ``pi.sample`` never returned (gdb: both threads in
    ``lapack_dtrsm_ffi``'s ``ParallelBatchMap``; see ``probinfer/_linalg.py``).
    """
    return jax.lax.map(spec.bind(data).pointwise_loglikelihood, draws)


def pointwise_loglikelihood(
    spec: NumPyroModel, data: PyTree, draws: dict[str, np.ndarray], watch: CompileWatch
) -> dict[str, np.ndarray]:
    """Each observed site's pointwise log likelihood for ``(chain, draw, ...)`` draws.

    Runs blocks of :data:`POINTWISE_BLOCK` draws through one compiled program (the last
    block padded with repeats of the first draw), fetched in one transfer.

    Args:
        spec: the NumPyro model spec.
        data: its data.
        draws: latent site name -> ``(chain, draw, ...)`` constrained values.
        watch: accumulates compile time.

    Returns:
        Observed site name -> ``(chain, draw, ...)`` log likelihoods.
    """
    lead = next(iter(draws.values())).shape[:2]
    count = math.prod(lead)
    padded = -(-count // POINTWISE_BLOCK) * POINTWISE_BLOCK
    flat = {}
    for name, values in draws.items():
        values = np.reshape(np.asarray(values), (count, *np.shape(values)[2:]))
        flat[name] = np.concatenate([values, np.repeat(values[:1], padded - count, axis=0)])
    blocks = []
    for start in range(0, padded, POINTWISE_BLOCK):
        block = {name: values[start : start + POINTWISE_BLOCK] for name, values in flat.items()}
        blocks.append(call_compiled(_pointwise, (spec,), (data, block), watch))
    fetched = jax.device_get(blocks)
    return {
        name: np.concatenate([block[name] for block in fetched])[:count].reshape(
            lead + fetched[0][name].shape[1:]
        )
        for name in fetched[0]
    }


def model_groups(
    spec: Any,
    data: PyTree,
    draws: dict[str, np.ndarray] | None = None,
    watch: CompileWatch | None = None,
) -> dict[str, dict[str, np.ndarray]]:
    """``observed_data``, ``constant_data`` and (given draws) ``log_likelihood`` groups for
    ``az.from_dict``.

    Args:
        spec: the target spec (groups only for a :class:`~probinfer.model.NumPyroModel`).
        data: its data.
        draws: the posterior group: site name -> ``(chain, draw, ...)`` constrained values;
            None for no ``log_likelihood`` group.
        watch: accumulates compile time.

    Returns:
        ``{"log_likelihood": {site: (chain, draw, ...)}, "observed_data": {site: value},
        "constant_data": {argument: value}}``, each only when there is something to put in
        it (``{}`` for a target that is not a NumPyro model).
    """
    if not isinstance(spec, NumPyroModel):
        return {}
    density = spec.bind(data)
    observed = density.observed_data()
    groups = {"observed_data": observed, "constant_data": density.constant_data(observed)}
    groups = {name: jax.device_get(group) for name, group in groups.items() if group}
    if draws is not None and observed:
        latent = {name: draws[name] for name in spec.site_names}
        groups["log_likelihood"] = pointwise_loglikelihood(
            spec, data, latent, watch or CompileWatch()
        )
    return groups


def model_dims(spec: Any, data: PyTree) -> dict[str, list[str]] | None:
    """Dimension names from a NumPyro model's plates, for ``az.from_dict(dims=...)``.

    Args:
        spec: the target spec.
        data: its data.

    Returns:
        Site name -> dimension names (see
        :meth:`~probinfer.model.ModelDensity.site_dims`), or None for other targets.
    """
    if not isinstance(spec, NumPyroModel):
        return None
    return spec.bind(data).site_dims() or None
