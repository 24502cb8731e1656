"""Model front ends: a NumPyro model or a hand-written log density, as a target for inference.

Each front end gives a hashable *spec* (everything static: it keys the compiled programs)
and *data* (arrays passed to the compiled programs as values); ``spec.bind(data)`` gives the
functions of a position that kernels use, and ``.target`` the prior/likelihood
:class:`Target` that tempering and nested sampling use.

- :mod:`probinfer.model._numpyro`: NumPyro models (``NumPyroModel`` -> ``ModelDensity``).
- :mod:`probinfer.model._logdensity`: plain functions (``LogDensity`` -> ``BoundLogDensity``).
- :mod:`probinfer.model._unit_cube`: a log likelihood and a prior transform from the unit
  cube, as nested samplers take them (:class:`UnitCube`, a ``LogDensity``).
- :mod:`probinfer.model._target`: the :class:`Target` they produce.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from probinfer.model._common import INIT_RADIUS, MAX_INIT_TRIES
from probinfer.model._logdensity import BoundLogDensity, LogDensity
from probinfer.model._numpyro import ModelDensity, NumPyroModel, from_numpyro, prepare_numpyro
from probinfer.model._target import AuxLogDensity, Target, value_and_aux
from probinfer.model._unit_cube import BoundUnitCube, UnitCube

__all__ = [
    "INIT_RADIUS",
    "AuxLogDensity",
    "MAX_INIT_TRIES",
    "BoundLogDensity",
    "BoundUnitCube",
    "LogDensity",
    "ModelDensity",
    "NumPyroModel",
    "Target",
    "UnitCube",
    "from_numpyro",
    "prepare",
    "value_and_aux",
]


def prepare(
    model: Callable[..., Any] | LogDensity, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[NumPyroModel | LogDensity, tuple[Any, ...]]:
    """Split a model and its arguments into a hashable spec and array data.

    Args:
        model: a NumPyro model function or a :class:`LogDensity`.
        args: positional arguments: the model's, or the ``LogDensity``'s data.
        kwargs: keyword arguments of the model (none for a ``LogDensity``).

    Returns:
        ``(spec, data)``; ``spec.bind(data)`` gives the density.

    Raises:
        TypeError: for keyword data with a ``LogDensity``, data its functions reject, or a
            non-callable model.
        ValueError: for discrete, Delta or param latent sites.
    """
    if isinstance(model, LogDensity):
        return model, model.prepare_data(args, kwargs)
    return prepare_numpyro(model, args, kwargs)
