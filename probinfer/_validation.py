"""Checks of static settings shared by every layer (one home for each)."""

from __future__ import annotations

from typing import Any

import numpy as np


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
