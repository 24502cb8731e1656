"""What the predictives' ``plot`` methods share: their 1-d inputs and axes."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
from jaxtyping import ArrayLike, Float

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def one_feature_inputs(
    x_test: Float[ArrayLike, " m"], num_points: int, ax: Axes | None
) -> tuple[np.ndarray, Axes]:
    """``x_test`` as ``(m,)`` float64 inputs, checked against the ``num_points`` the
    predictive was made at, and the axes to draw on (a new figure's if ``ax`` is None).

    Raises:
        ValueError: if ``x_test`` is not ``num_points`` one-feature inputs.
    """
    import matplotlib.pyplot as plt

    x = np.asarray(x_test, np.float64)
    if x.ndim == 2 and x.shape[1] == 1:
        x = x[:, 0]
    if x.shape != (num_points,):
        raise ValueError(
            f"`x_test` must be the {num_points} one-feature inputs the predictive was made at, "
            f"got shape {np.shape(x_test)}; plot 1-d inputs only."
        )
    if ax is None:
        _, ax = plt.subplots(figsize=(6, 3.5))
    return x, ax
