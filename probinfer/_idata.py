"""The InferenceData groups a model adds to its posterior draws: ``log_likelihood`` and
``observed_data`` (what ``az.loo``, ``az.waic``, ``az.compare`` and ``az.plot_ppc`` read).

Only NumPyro models have observed sites to name; a hand-written ``LogDensity`` has no
pointwise likelihood, so it gets neither group.
"""

from __future__ import annotations

from typing import Any

import jax
import numpy as np

from probinfer.driver import CompileWatch, call_compiled
from probinfer.model import NumPyroModel

PyTree = Any


def _pointwise(spec: NumPyroModel, data: PyTree, draws: dict[str, Any]) -> dict[str, Any]:
    """Pointwise log likelihoods of ``(chain, draw, ...)`` constrained draws, one program."""
    density = spec.bind(data)
    return jax.vmap(jax.vmap(density.pointwise_loglikelihood))(draws)


def model_groups(
    spec: Any, data: PyTree, draws: dict[str, np.ndarray], watch: CompileWatch | None = None
) -> dict[str, dict[str, np.ndarray]]:
    """``log_likelihood`` and ``observed_data`` groups for ``az.from_dict``.

    Args:
        spec: the target spec (groups only for a :class:`~probinfer.model.NumPyroModel`).
        data: its data.
        draws: the posterior group: site name -> ``(chain, draw, ...)`` constrained values.
        watch: accumulates compile time.

    Returns:
        ``{"log_likelihood": {site: (chain, draw, ...)}, "observed_data": {site: value}}``,
        or ``{}`` for a target without observed sites.
    """
    if not isinstance(spec, NumPyroModel):
        return {}
    observed = jax.device_get(spec.bind(data).observed_data())
    if not observed:
        return {}
    latent = {name: draws[name] for name in spec.site_names}
    pointwise = call_compiled(_pointwise, (spec,), (data, latent), watch or CompileWatch())
    return {"log_likelihood": jax.device_get(pointwise), "observed_data": observed}
