"""A trained :class:`~probinfer.amortize.PFNClassifier`'s predictive class probabilities,
and the check of class labels (:func:`probinfer.amortize.predict` makes the predictive)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import jax
import numpy as np
from jaxtyping import Array, ArrayLike, Float, Int, PRNGKeyArray

from probinfer._validation import real_array
from probinfer.amortize._plotting import one_feature_inputs
from probinfer.amortize._predictive_base import AbstractDrawingPredictive
from probinfer.nngp._classification import check_labels

if TYPE_CHECKING:
    from matplotlib.axes import Axes


def as_labels(
    values: ArrayLike, num_points: int, num_classes: int, *, name: str, rows_of: str
) -> np.ndarray:
    """Class labels as integers, checked: integers, or floats holding whole numbers (as
    the classification priors draw them), one per row of ``rows_of``, in
    ``0..num_classes-1``.

    Raises:
        TypeError: if they are not real numbers (strings, complex, ragged lists).
        ValueError: on a fraction, a wrong shape, or a label out of range.
    """
    array = real_array(name, values)
    if not np.issubdtype(array.dtype, np.integer):
        whole = np.rint(array)
        if not np.all(whole == array):
            bad = float(array[whole != array].ravel()[0])
            raise ValueError(
                f"`{name}` must hold class labels 0..{num_classes - 1}, got {bad:g}; pass "
                "whole numbers."
            )
        array = whole.astype(np.int64)
    labels, _ = check_labels(array, num_points, num_classes, name=name, rows_of=rows_of)
    return labels


class PFNClassPredictive(AbstractDrawingPredictive):
    """A classifier PFN's predictive class probabilities at each test point.

    Attributes:
        logits: ``(m, num_classes)`` class logits (the model's dtype).
    """

    logits: Array

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return int(self.logits.shape[-1])

    @property
    def probabilities(self) -> np.ndarray:
        """``(m, num_classes)`` predictive class probabilities (float64, rows sum to 1)."""
        return np.exp(self.log_probabilities)

    @property
    def log_probabilities(self) -> np.ndarray:
        """``(m, num_classes)`` log predictive class probabilities (float64)."""
        logits = np.asarray(self.logits, np.float64)
        top = logits.max(axis=-1, keepdims=True)
        return logits - top - np.log(np.exp(logits - top).sum(axis=-1, keepdims=True))

    @property
    def predicted_class(self) -> np.ndarray:
        """``(m,)`` the most probable class per test point."""
        return np.argmax(np.asarray(self.logits), axis=-1)

    def log_prob(self, labels: Int[ArrayLike, " m"]) -> np.ndarray:
        """``(m,)`` log predictive probability of each test point's label (float64)."""
        labels_np = as_labels(
            labels, self.logits.shape[0], self.num_classes, name="labels", rows_of="x_test"
        )
        rows = np.arange(labels_np.shape[0])
        return self.log_probabilities[rows, labels_np]

    def sample(self, key: PRNGKeyArray, num_samples: int) -> np.ndarray:
        """``(num_samples, m)`` independent label draws per point (integers)."""
        draws = jax.random.categorical(key, self.logits, shape=(num_samples, self.logits.shape[0]))
        return np.asarray(draws)

    def plot(
        self,
        x_test: Float[ArrayLike, " m"],
        x_train: Float[ArrayLike, " n"] | None = None,
        labels_train: Int[ArrayLike, " n"] | None = None,
        *,
        ax: Axes | None = None,
    ) -> Axes:
        """Each class's predictive probability against a 1-d input, and the train labels
        (needs matplotlib).

        Args:
            x_test: ``(m,)`` or ``(m, 1)`` inputs the predictive was made at.
            x_train: train inputs to mark (optional).
            labels_train: their labels, marked at probability 1 in their class's colour.
            ax: axes to draw on (default: a new figure's).

        Returns:
            The axes.
        """
        x, ax = one_feature_inputs(x_test, self.logits.shape[0], ax)
        order = np.argsort(x)
        probabilities = self.probabilities[order]
        for c in range(self.num_classes):
            ax.plot(x[order], probabilities[:, c], color=f"C{c}", label=f"P(class {c})")
        if x_train is not None and labels_train is not None:
            labels = np.ravel(labels_train).astype(int)
            for c in range(self.num_classes):
                chosen = labels == c
                ax.scatter(np.ravel(x_train)[chosen], np.ones(chosen.sum()), color=f"C{c}",
                           marker="|", s=120, zorder=3, label=f"train, class {c}")  # fmt: skip
        ax.set_ylim(-0.02, 1.08)
        ax.set_xlabel("x")
        ax.set_ylabel("predictive probability")
        ax.legend(loc="best", fontsize="small")
        return ax
