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
        pointwise = call_compiled(_pointwise, (spec,), (data, latent), watch or CompileWatch())
        groups["log_likelihood"] = jax.device_get(pointwise)
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
