"""Checks of static settings shared by every layer (one home for each)."""

from __future__ import annotations

from typing import Any

import jax
import numpy as np


def is_real_dtype(dtype: Any) -> bool:
    """Integers and floats of any width (bfloat16 included); not bools, complex or text."""
    return bool(jax.numpy.issubdtype(dtype, np.integer) or jax.numpy.issubdtype(dtype, np.floating))


def check_count(name: str, value: Any, minimum: int) -> int:
    """An integer setting (a count, a size, a seed) of at least ``minimum``.

    Args:
        name: the argument's name, for the message.
        value: the value given (a Python or NumPy integer; ``bool`` is refused).
        minimum: the smallest valid value.

    Returns:
        ``value`` as a Python int.

    Raises:
        ValueError: naming the argument, the bound and the value.
    """
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"`{name}` must be an int >= {minimum}, got {value!r}.")
    return int(value)


def check_sample_shape(sample_shape: Any) -> tuple[int, ...]:
    """A draws' ``sample_shape`` as a tuple of ints >= 0 (an int ``n`` means ``(n,)``).

    Raises:
        ValueError: naming ``sample_shape`` and the bad size.
    """
    if isinstance(sample_shape, int | np.integer):
        sample_shape = (sample_shape,)
    return tuple(check_count("sample_shape", size, 0) for size in sample_shape)


def real_array(name: str, value: Any) -> np.ndarray:
    """``value`` as a NumPy array of real numbers (booleans and integers kept as they are).

    Args:
        name: the argument's name, for the message.
        value: an array, a nested list or a scalar.

    Returns:
        ``np.asarray(value)``.

    Raises:
        TypeError: naming the argument when ``value`` is not numeric (strings, ``None``,
            objects, ragged lists) or is complex.
    """
    try:
        array = np.asarray(value)
    except ValueError as error:  # ragged nested sequences
        raise TypeError(
            f"`{name}` must hold real numbers (a float or an array of floats), but it is "
            f"not rectangular ({error})."
        ) from None
    # bfloat16 and the other ml_dtypes floats are kind "V" to NumPy.
    if array.dtype.kind not in "biuf" and not jax.numpy.issubdtype(array.dtype, np.floating):
        if array.dtype.kind == "c":
            what = "complex numbers"
        elif array.dtype.kind == "O":
            what = f"a {type(value).__name__} of non-numeric values (or integers beyond int64)"
        else:
            what = f"a {type(value).__name__} of dtype {array.dtype}"
        raise TypeError(
            f"`{name}` must hold real numbers (a float or an array of floats), got {what}."
        )
    return array


def check_magnitude(
    name: str,
    array: np.ndarray,
    fix: str,
    *,
    scale: bool = False,
    dtype: Any = None,
    what: str = "entries",
) -> None:
    """Raise ``ValueError`` naming ``name`` when entries of ``array`` are so large (or, for
    a ``scale``, so close to zero) that their squares (inverse squares) would overflow the
    float dtype JAX computes in: NaN results otherwise.

    Args:
        name: the argument's name, for the message.
        array: concrete values.
        fix: what to do, e.g. "rescale the inputs".
        scale: ``array`` holds positive scales that are divided by: tiny ones are refused.
        dtype: the dtype computed in; by default JAX's default float (float32 unless
            ``jax_enable_x64`` is on).
        what: what ``array`` holds, for the message (e.g. "standard deviations").

    Raises:
        ValueError: naming ``name``, the extreme value and the fix.
    """
    if dtype is None:
        dtype = jax.dtypes.canonicalize_dtype(np.float64)
    # Squares (and sums of thousands of them) stay far from overflow below this bound:
    # about 1.8e16 in float32, 1.3e151 in float64.
    limit = 1e-3 * np.sqrt(float(np.finfo(dtype).max))
    if not array.size:
        return
    magnitudes = np.abs(np.asarray(array, np.float64))
    if float(np.max(magnitudes)) > limit:
        extreme, reason = f"up to {float(np.max(magnitudes)):.3g}", "their squares overflow"
    elif scale and float(np.min(magnitudes)) < 1 / limit:
        extreme = f"down to {float(np.min(magnitudes)):.3g}"
        reason = "their inverse squares overflow"
    else:
        return
    raise ValueError(
        f"`{name}` has {what} {extreme}, too extreme for {np.dtype(dtype).name} arithmetic "
        f"({reason}); {fix}, or enable float64 with "
        '`jax.config.update("jax_enable_x64", True)`.'
    )


def draws_by_site(label: str, posterior: Any, min_draws: int = 0) -> list[tuple[str, np.ndarray]]:
    """``(name, (chain, draw, ...) array)`` for every site of a posterior, checked.

    Args:
        label: how the message names the posterior (e.g. ``"idata.posterior"``).
        posterior: a mapping of site name to draws (a dict, or an xarray ``Dataset``).
        min_draws: the fewest draws per chain the caller can use.

    Raises:
        TypeError: when ``posterior`` is not a mapping, or a site does not hold real
            numbers.
        ValueError: when a site has no chain and draw axes, no chains, or fewer than
            ``min_draws`` draws.
    """
    from collections.abc import Mapping

    if not isinstance(posterior, Mapping):  # an xarray Dataset is a mapping of its sites
        raise TypeError(
            f"`{label}` must be a dict of site name -> (chain, draw, ...) array or an "
            f"xarray Dataset (`idata.posterior`), got {type(posterior).__name__}; wrap one "
            'array of draws as `{"x": draws}`.'
        )
    sites = []
    for name, array in posterior.items():
        values = real_array(f"{label}['{name}']", getattr(array, "values", array))
        if values.ndim < 2 or values.shape[0] == 0 or values.shape[1] < min_draws:
            raise ValueError(
                f"`{label}['{name}']` has shape {values.shape}; draws must be shaped "
                "(chain, draw, ...) with at least one chain"
                f"{f' and {min_draws} draw(s) per chain' if min_draws else ''} (`draws[None]` "
                "adds the chain axis of one chain)."
            )
        sites.append((str(name), values))
    return sites


def nonfinite_counts(sites: list[tuple[str, np.ndarray]]) -> dict[str, int]:
    """NaN and infinite values per site (only sites that have some), counted in NumPy in the
    draws' own dtype: ``{name: count}``.

    Args:
        sites: ``(name, values)`` pairs, e.g. from :func:`draws_by_site`.

    Returns:
        The counts of the sites with at least one non-finite value.
    """
    counts = {name: int(np.sum(~np.isfinite(values))) for name, values in sites}
    return {name: count for name, count in counts.items() if count}
