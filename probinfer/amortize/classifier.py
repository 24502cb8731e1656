"""A prior-data fitted network for classification: class probabilities from a dataset.

The transformer is :class:`~probinfer.amortize.pfn.PFN`'s (:class:`AbstractPFN`): a train
token embeds its input and its label one-hot, a test token its input only, and the output
at a test token is one logit per class. Trained by maximum likelihood (cross-entropy) on
labelled datasets drawn from a prior (:class:`~probinfer.amortize.GPClassificationPrior`),
its softmax approximates that prior's posterior predictive class probabilities.
"""

from __future__ import annotations

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Int, PRNGKeyArray

from probinfer._validation import check_count
from probinfer.amortize.pfn import AbstractPFN


class PFNClassifier(AbstractPFN):
    """A PFN whose targets are class labels ``0..num_classes-1``.

    Attributes:
        num_classes: number of classes (static, >= 2).

    The transformer's fields are :class:`AbstractPFN`'s. Labels travel as floats in the
    ``y`` arrays the training loop shares with the regression PFN (exact for any class
    count below 2^24).
    """

    num_classes: int = eqx.field(static=True)

    def __init__(
        self,
        *,
        num_classes: int,
        num_features: int,
        max_train: int,
        min_train: int = 1,
        width: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_width: int = 256,
        key: PRNGKeyArray,
    ) -> None:
        num_classes = check_count("num_classes", num_classes, 2)
        self._build_body(
            num_features=num_features, num_target_features=num_classes,
            num_outputs=num_classes, max_train=max_train, min_train=min_train,
            width=width, num_layers=num_layers, num_heads=num_heads, mlp_width=mlp_width,
            key=key,
        )  # fmt: skip
        self.num_classes = num_classes

    @property
    def scale_free(self) -> bool:
        """Always ``False``: a classifier takes inputs in its prior's units (``[-1, 1]``)."""
        return False

    def target_features(
        self, x: Float[Array, "num_points num_features"], y: Array, num_train: Int[Array, ""] | int
    ) -> tuple[Array, Float[Array, "num_points num_classes"]]:
        """The inputs, and each label one-hot (test rows' labels are masked out later)."""
        del num_train
        return x, jax.nn.one_hot(y.astype(jnp.int32), self.num_classes, dtype=x.dtype)

    def log_prob(
        self,
        x: Float[Array, "num_points num_features"],
        y: Float[Array, " num_points"],
        num_train: Int[Array, ""] | int,
    ) -> Float[Array, " num_points"]:
        """Log predictive probability of every row's label.

        Rows ``>= num_train`` are the held-out predictions (the training loss: minus the
        cross-entropy); the prediction at such a row never depends on its own label.
        """
        log_probs = jax.nn.log_softmax(self.logits(x, y, num_train), axis=-1)
        labels = y.astype(jnp.int32)[:, None]
        return jnp.take_along_axis(log_probs, labels, axis=-1)[:, 0]
