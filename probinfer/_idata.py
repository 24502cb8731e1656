"""What a model adds to its draws' InferenceData: the ``log_likelihood`` and
``observed_data`` groups (what ``az.loo``, ``az.waic``, ``az.compare`` and ``az.plot_ppc``
read), ``constant_data`` (its other array arguments) and dimension names from its plates.

Only NumPyro models have observed sites and plates to name; a hand-written ``LogDensity``
has no pointwise likelihood, so it gets neither group.
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
    """``log_likelihood``, ``observed_data`` and ``constant_data`` groups for
    ``az.from_dict``.

    Args:
        spec: the target spec (groups only for a :class:`~probinfer.model.NumPyroModel`).
        data: its data.
        draws: the posterior group: site name -> ``(chain, draw, ...)`` constrained values.
        watch: accumulates compile time.

    Returns:
        ``{"log_likelihood": {site: (chain, draw, ...)}, "observed_data": {site: value},
        "constant_data": {argument: value}}``, each only when there is something to put in
        it (``{}`` for a target that is not a NumPyro model).
    """
    if not isinstance(spec, NumPyroModel):
        return {}
    density = spec.bind(data)
    groups: dict[str, dict[str, np.ndarray]] = {}
    constant = jax.device_get(density.constant_data())
    if constant:
        groups["constant_data"] = constant
    observed = jax.device_get(density.observed_data())
    if not observed:
        return groups
    latent = {name: draws[name] for name in spec.site_names}
    pointwise = call_compiled(_pointwise, (spec,), (data, latent), watch or CompileWatch())
    return {**groups, "log_likelihood": jax.device_get(pointwise), "observed_data": observed}


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
