"""Input checks shared by the NNGP modules: run before tracing, skipped for tracers."""

from __future__ import annotations

import sys

import jax
import jax.core
import numpy as np
from jaxtyping import ArrayLike

from probinfer._validation import check_magnitude, real_array


def is_concrete(value: object) -> bool:
    """Whether ``value`` holds data (not a tracer inside ``jit``/``grad``)."""
    return not isinstance(value, jax.core.Tracer)


def check_positive(value: ArrayLike, name: str, *, allow_zero: bool = False) -> None:
    """Raise ``ValueError`` naming ``name`` if a concrete ``value`` is not (strictly) positive.

    Args:
        value: a scalar or array; tracers pass unchecked.
        name: the argument's name, for the message.
        allow_zero: accept zero (for example a bias variance).

    Raises:
        ValueError: if any entry is NaN, infinite, negative, or zero without ``allow_zero``.
        TypeError: if ``value`` is None or not real numbers.
    """
    if not is_concrete(value):
        return
    if value is None:
        raise TypeError(f"`{name}` must be a number, got None.")
    array = real_array(name, value).astype(float)
    bad = ~np.isfinite(array) | (array < 0 if allow_zero else array <= 0)
    if np.any(bad):
        bound = ">= 0" if allow_zero else "> 0"
        raise ValueError(
            f"`{name}` must be finite and {bound}, got {array[bad].ravel()[0]!r}; "
            f"pass a positive value (variances, scales and shape parameters are positive)."
        )


def check_inputs(x: ArrayLike, name: str, *, num_features: int | None = None) -> np.ndarray | None:
    """Check that concrete inputs are a finite ``(num_points, num_features)`` array.

    Args:
        x: the inputs; tracers pass unchecked (``None`` is returned).
        name: the argument's name, for the message.
        num_features: the feature count ``x`` must have, when known.

    Returns:
        ``x`` as a NumPy array, or ``None`` for a tracer.

    Raises:
        ValueError: on a wrong rank, a feature-count mismatch, a non-finite entry or
            entries so large that the kernel's arithmetic would overflow.
        TypeError: if ``x`` is not an array of real numbers.
    """
    if not is_concrete(x):
        return None
    array = real_array(name, x)
    if array.ndim != 2:
        raise ValueError(
            f"`{name}` must have shape (num_points, num_features), got shape {array.shape}; "
            f"reshape a single feature with `{name}[:, None]`."
        )
    if num_features is not None and array.shape[1] != num_features:
        raise ValueError(
            f"`{name}` has {array.shape[1]} features but {num_features} were expected "
            f"(the other inputs' or the training inputs' feature count); pass inputs with "
            f"the same columns."
        )
    if not np.all(np.isfinite(array)):
        row = int(np.argwhere(~np.isfinite(array))[0, 0])
        raise ValueError(
            f"`{name}` contains NaN or infinite values (first at row {row}); remove or "
            f"impute them before computing the kernel."
        )
    check_magnitude(name, array, "rescale the inputs (for example standardise each column)")
    return array


def stacklevel_outside_probinfer() -> int:
    """The ``stacklevel`` that attributes a warning to the first caller outside probinfer."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_globals.get("__name__", "").split(".")[0] in (
        "probinfer",
        "equinox",
    ):
        frame, level = frame.f_back, level + 1
    return level
