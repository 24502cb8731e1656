"""Prior-data fitted networks: a transformer that predicts held-out targets from a dataset.

After Müller et al. (2022), "Transformers Can Do Bayesian Inference". Every token is one
point of a dataset: a *train* token embeds ``(x, y)``, a *test* token embeds ``x`` only. No
positional encodings, so the prediction is invariant to the order of the train points.
The attention mask lets every token attend to the train tokens and each test token also to
itself, never to other test tokens, so each test point's prediction depends on the train set
and its own input only. Residual branches end in zero-initialised projections (each layer
starts as the identity). The output at a test token of a regression :class:`PFN` is a
:class:`BarDistribution` over its ``y`` (a :class:`~probinfer.amortize.PFNClassifier`'s:
class logits): trained by maximum likelihood on datasets drawn from a prior, it
approximates the posterior predictive distribution of that prior.

A *scale-free* PFN (``scale_free=True``) first maps each dataset by its train points, as
TabPFN does: each input feature's train range onto the prior's ``[-1, 1]`` and the targets
to zero mean and unit standard deviation (:func:`standardisation`). Trained and used that
way, its prediction is exactly equivariant to a shift and a positive rescaling of each
input feature and of the targets: data in any units get the prediction the prior's units
would. What it approximates is the posterior predictive of the prior pushed through that
map (the prior over standardised data): the train points' location and scale are no longer
information the network can use.
"""

from __future__ import annotations

import abc
from typing import NamedTuple, Self

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float, Int, PRNGKeyArray

from probinfer.amortize._bar import BarDistribution
from probinfer.amortize.priors import INPUT_BOUND

# The least log share a re-binned bucket starts with (see `PFN.rebinned`).
MIN_LOG_SHARE = -30.0

# A scale-free model predicts from this many train points at least, whatever it was trained
# with: with fewer, the standardised targets are so heavy-tailed (about Student-t with
# n - 1 degrees of freedom: infinite variance below 4 points) that the outer buckets' tails
# cannot follow (gp_scale_free with 2 train points: +160 and +1,000 nats per test point in
# 2-d and 3-d under half-normal tails, mean of 30 datasets; from 5 points on it is within
# 0.1 nats of the exact reference, benchmarks/pfn.py).
SCALE_FREE_MIN_TRAIN = 5


class TransformerLayer(eqx.Module):
    """Pre-norm self-attention and MLP blocks with zero-initialised output projections.

    Attributes:
        attention: multi-head self-attention.
        attention_norm: layer norm before attention.
        mlp_in: first MLP projection.
        mlp_out: second MLP projection (zero-initialised).
        mlp_norm: layer norm before the MLP.
    """

    attention: eqx.nn.MultiheadAttention
    attention_norm: eqx.nn.LayerNorm
    mlp_in: eqx.nn.Linear
    mlp_out: eqx.nn.Linear
    mlp_norm: eqx.nn.LayerNorm

    def __init__(self, width: int, num_heads: int, mlp_width: int, *, key: PRNGKeyArray) -> None:
        key_attention, key_in, key_out = jax.random.split(key, 3)
        attention = eqx.nn.MultiheadAttention(num_heads, width, key=key_attention)
        # MultiheadAttention's output projection has no bias by default: zero weights make
        # the attention branch start at zero.
        self.attention = eqx.tree_at(
            lambda a: a.output_proj.weight, attention, jnp.zeros_like(attention.output_proj.weight)
        )
        self.attention_norm = eqx.nn.LayerNorm(width)
        self.mlp_in = eqx.nn.Linear(width, mlp_width, key=key_in)
        mlp_out = eqx.nn.Linear(mlp_width, width, key=key_out)
        assert mlp_out.bias is not None  # Linear has a bias unless use_bias=False
        self.mlp_out = eqx.tree_at(
            lambda m: (m.weight, m.bias),
            mlp_out,
            (jnp.zeros_like(mlp_out.weight), jnp.zeros_like(mlp_out.bias)),
        )
        self.mlp_norm = eqx.nn.LayerNorm(width)

    def __call__(self, tokens: Float[Array, "seq width"], mask: Array) -> Array:
        """Apply attention (with ``mask[i, j]``: token ``i`` may attend to ``j``) and MLP."""
        normed = jax.vmap(self.attention_norm)(tokens)
        tokens = tokens + self.attention(normed, normed, normed, mask=mask)
        normed = jax.vmap(self.mlp_norm)(tokens)
        hidden = jax.nn.gelu(jax.vmap(self.mlp_in)(normed))
        return tokens + jax.vmap(self.mlp_out)(hidden)


class Standardisation(NamedTuple):
    """One dataset's affine maps onto the prior's scale (see :func:`standardisation`).

    Attributes:
        x_shift: ``(num_features,)`` subtracted from each input feature.
        x_scale: ``(num_features,)`` then divided into it.
        y_shift: ``()`` subtracted from the targets.
        y_scale: ``()`` then divided into them.
    """

    x_shift: Array
    x_scale: Array
    y_shift: Array
    y_scale: Array

    def inputs(self, x: Float[Array, "n num_features"]) -> Float[Array, "n num_features"]:
        """Inputs in the prior's units."""
        return (x - self.x_shift[None, :]) / self.x_scale[None, :]

    def targets(self, y: Array) -> Array:
        """Targets in standardised units."""
        return (y - self.y_shift) / self.y_scale


def standardisation(
    x: Float[Array, "num_points num_features"],
    y: Float[Array, " num_points"],
    num_train: Int[Array, ""] | int,
) -> Standardisation:
    """The maps a scale-free PFN applies, from the first ``num_train`` rows (the train set).

    Each input feature's train range ``[min, max]`` maps onto ``[-1, 1]``, the prior's input
    range; a feature constant over the train set (an unused, zero-padded one) is only
    shifted to zero. The targets are shifted by their train mean and divided by their train
    standard deviation (``1 / n`` normalisation). Needs ``num_train >= 2`` and targets that
    are not all equal (:func:`probinfer.amortize.predict` checks both).
    """
    is_train = jnp.arange(x.shape[0]) < num_train
    count = jnp.maximum(num_train, 1).astype(y.dtype)
    low = jnp.min(jnp.where(is_train[:, None], x, jnp.inf), axis=0)
    high = jnp.max(jnp.where(is_train[:, None], x, -jnp.inf), axis=0)
    spread = high - low
    has_spread = spread > 0
    x_shift = jnp.where(has_spread, 0.5 * (low + high), jnp.where(jnp.isfinite(low), low, 0.0))
    x_scale = jnp.where(has_spread, spread / (2 * INPUT_BOUND), 1.0)
    y_shift = jnp.sum(jnp.where(is_train, y, 0.0)) / count
    variance = jnp.sum(jnp.where(is_train, (y - y_shift) ** 2, 0.0)) / count
    # The floor only keeps a degenerate training draw finite; `predict` refuses constant y.
    y_scale = jnp.sqrt(jnp.maximum(variance, jnp.finfo(y.dtype).tiny))
    return Standardisation(x_shift, x_scale, y_shift, y_scale)


def attention_mask(num_points: int, num_train: Int[Array, ""] | int) -> Array:
    """``mask[i, j]``: token ``i`` attends to ``j`` iff ``j`` is a train token or ``i == j``."""
    index = jnp.arange(num_points)
    is_train = index < num_train
    return is_train[None, :] | (index[:, None] == index[None, :])


class AbstractPFN(eqx.Module):
    """The transformer body shared by :class:`PFN` (regression) and :class:`PFNClassifier`.

    Every token is one point; a train token adds an embedding of its target's features
    (:meth:`target_features`) to that of its input. The decoder maps each token to its
    output logits (bucket logits for regression, class logits for classification).

    Attributes:
        x_encoder: linear embedding of the (zero-padded) inputs.
        y_encoder: linear embedding of the train targets' features.
        layers: transformer layers.
        output_norm: final layer norm.
        decoder_hidden: decoder hidden layer.
        decoder_out: decoder output layer (the output logits).
        num_features: input dimension (static).
        max_train: largest number of train points it was trained for (static).
        min_train: fewest train points it was trained for (static).
    """

    x_encoder: eqx.nn.Linear
    y_encoder: eqx.nn.Linear
    layers: tuple[TransformerLayer, ...]
    output_norm: eqx.nn.LayerNorm
    decoder_hidden: eqx.nn.Linear
    decoder_out: eqx.nn.Linear
    num_features: int = eqx.field(static=True)
    max_train: int = eqx.field(static=True)
    min_train: int = eqx.field(static=True)

    def _build_body(
        self,
        *,
        num_features: int,
        num_target_features: int,
        num_outputs: int,
        max_train: int,
        min_train: int,
        width: int,
        num_layers: int,
        num_heads: int,
        mlp_width: int,
        key: PRNGKeyArray,
    ) -> None:
        """Initialise the shared fields (called from a subclass's ``__init__``)."""
        if width % num_heads:
            raise ValueError(f"`width` ({width}) must be divisible by `num_heads` ({num_heads}).")
        keys = jax.random.split(key, num_layers + 4)
        self.x_encoder = eqx.nn.Linear(num_features, width, key=keys[0])
        self.y_encoder = eqx.nn.Linear(num_target_features, width, key=keys[1])
        self.layers = tuple(
            TransformerLayer(width, num_heads, mlp_width, key=k) for k in keys[2 : 2 + num_layers]
        )
        self.output_norm = eqx.nn.LayerNorm(width)
        self.decoder_hidden = eqx.nn.Linear(width, mlp_width, key=keys[-2])
        self.decoder_out = eqx.nn.Linear(mlp_width, num_outputs, key=keys[-1])
        self.num_features = int(num_features)
        self.max_train = int(max_train)
        self.min_train = int(min_train)

    def with_num_features(self, num_features: int) -> Self:
        """This model taking ``num_features`` inputs, with the same predictions as before.

        The input embedding gains zero columns for the new features, so on inputs whose new
        features are zero (how fewer features are padded) every output is unchanged;
        fine-tuning (``train(..., init_from=...)`` with a prior of more features) then
        learns what the new features say. The transformer body is unchanged.

        Args:
            num_features: the new input dimension, at least the current one.

        Returns:
            The widened model (this one when ``num_features`` is the current dimension).
        """
        if num_features < self.num_features:
            raise ValueError(
                f"`num_features` ({num_features}) is below the model's {self.num_features}: "
                "a model can gain input features, not lose them."
            )
        if num_features == self.num_features:
            return self
        old = self.x_encoder
        padding = jnp.zeros((old.weight.shape[0], num_features - self.num_features))
        weight = jnp.concatenate([old.weight, padding.astype(old.weight.dtype)], axis=1)
        # A new layer, so that its static `in_features` matches the new weight.
        encoder = eqx.nn.Linear(num_features, old.weight.shape[0], key=jax.random.key(0))
        encoder = eqx.tree_at(lambda m: (m.weight, m.bias), encoder, (weight, old.bias))
        widened = eqx.tree_at(lambda m: m.x_encoder, self, encoder)
        # `num_features` is static (not a leaf): set it on the new copy `tree_at` returned.
        object.__setattr__(widened, "num_features", int(num_features))
        return widened

    @property
    def fewest_train_points(self) -> int:
        """The fewest train points it predicts from."""
        return self.min_train

    @abc.abstractmethod
    def target_features(
        self, x: Float[Array, "num_points num_features"], y: Array, num_train: Int[Array, ""] | int
    ) -> tuple[Array, Float[Array, "num_points num_target_features"]]:
        """The inputs and the targets' features the tokens embed (after any map)."""

    @abc.abstractmethod
    def log_prob(
        self,
        x: Float[Array, "num_points num_features"],
        y: Float[Array, " num_points"],
        num_train: Int[Array, ""] | int,
    ) -> Float[Array, " num_points"]:
        """Log predictive probability (density) of every row's target: the training loss
        at rows ``>= num_train``."""

    def logits(
        self,
        x: Float[Array, "num_points num_features"],
        y: Float[Array, " num_points"],
        num_train: Int[Array, ""] | int,
    ) -> Float[Array, "num_points num_outputs"]:
        """Output logits for every point; rows ``>= num_train`` are the test predictions.

        One dataset per call (``vmap`` over datasets). ``y`` at test rows is ignored.

        Args:
            x: ``(num_points, num_features)`` inputs, train rows first.
            y: ``(num_points,)`` targets (test rows may hold anything).
            num_train: number of train rows.

        Returns:
            ``(num_points, num_outputs)`` logits.
        """
        return self._decode(self._encode(x, y, num_train))

    def _encode(
        self, x: Float[Array, "num_points num_features"], y: Array, num_train: Int[Array, ""] | int
    ) -> Float[Array, "num_points width"]:
        """Token embeddings after the transformer layers."""
        num_points = x.shape[0]
        x, y_features = self.target_features(x, y, num_train)
        is_train = (jnp.arange(num_points) < num_train)[:, None]
        tokens = jax.vmap(self.x_encoder)(x)
        y_tokens = jax.vmap(self.y_encoder)(jnp.where(is_train, y_features, 0.0))
        tokens = tokens + jnp.where(is_train, y_tokens, 0.0)
        mask = attention_mask(num_points, num_train)
        for layer in self.layers:
            tokens = layer(tokens, mask)
        return tokens

    def _decode(self, tokens: Float[Array, "num_tokens width"]) -> Array:
        """Output logits of each token (row-wise)."""
        hidden = jax.nn.gelu(jax.vmap(self.decoder_hidden)(jax.vmap(self.output_norm)(tokens)))
        return jax.vmap(self.decoder_out)(hidden)

    def __call__(
        self,
        x_train: Float[Array, "n num_features"],
        y_train: Float[Array, " n"],
        x_test: Float[Array, "m num_features"],
    ) -> Float[Array, "m num_outputs"]:
        """Logits of the predictive distribution at each test input, given a train set
        (for a scale-free :class:`PFN`, in standardised units: see its
        ``standardisation``)."""
        x = jnp.concatenate([x_train, x_test])
        y = jnp.concatenate([y_train, jnp.zeros(x_test.shape[0], y_train.dtype)])
        num_train = x_train.shape[0]
        # Decode the test tokens only: the output layer is the costliest per token.
        return self._decode(self._encode(x, y, num_train)[num_train:])


class PFN(AbstractPFN):
    """A prior-data fitted network for 1-d regression targets.

    Attributes:
        bar: the output distribution's buckets (fixed, not trained; in standardised
            target units when ``scale_free``).
        scale_free: whether each dataset is standardised by its train points first
            (static; see the module docstring).

    The transformer's fields are :class:`AbstractPFN`'s.
    """

    bar: BarDistribution
    scale_free: bool = eqx.field(static=True)

    def __init__(
        self,
        bar: BarDistribution,
        *,
        num_features: int,
        max_train: int,
        min_train: int = 1,
        scale_free: bool = False,
        width: int = 128,
        num_layers: int = 4,
        num_heads: int = 4,
        mlp_width: int = 256,
        key: PRNGKeyArray,
    ) -> None:
        self._build_body(
            num_features=num_features, num_target_features=1, num_outputs=bar.num_buckets,
            max_train=max_train, min_train=min_train, width=width, num_layers=num_layers,
            num_heads=num_heads, mlp_width=mlp_width, key=key,
        )  # fmt: skip
        self.bar = bar
        self.scale_free = bool(scale_free)
        if self.scale_free and self.min_train < 2:
            raise ValueError(
                f"a scale-free PFN needs `min_train >= 2` (got {min_train}): one train point "
                "sets no scale."
            )

    @property
    def fewest_train_points(self) -> int:
        """The fewest train points it predicts from: ``min_train``, and at least
        :data:`SCALE_FREE_MIN_TRAIN` for a scale-free model."""
        return max(self.min_train, SCALE_FREE_MIN_TRAIN) if self.scale_free else self.min_train

    def standardisation(
        self, x: Array, y: Array, num_train: Int[Array, ""] | int
    ) -> Standardisation:
        """The maps applied to a dataset: :func:`standardisation` if ``scale_free``, else
        the identity."""
        if self.scale_free:
            return standardisation(x, y, num_train)
        one = jnp.ones((), y.dtype)
        return Standardisation(jnp.zeros(x.shape[1], x.dtype), jnp.ones(x.shape[1], x.dtype),
                               0 * one, one)  # fmt: skip

    def log_prob(
        self,
        x: Float[Array, "num_points num_features"],
        y: Float[Array, " num_points"],
        num_train: Int[Array, ""] | int,
    ) -> Float[Array, " num_points"]:
        """Log predictive density of every row's target, in the data's own units.

        Rows ``>= num_train`` are the held-out predictions (the training loss): the
        prediction at such a row never depends on its own target (train rows' tokens and
        the standardisation do depend on theirs).
        """
        scaling = self.standardisation(x, y, num_train)
        log_density = self.bar.log_prob(self.logits(x, y, num_train), scaling.targets(y))
        return log_density - jnp.log(scaling.y_scale)

    def target_features(
        self, x: Float[Array, "num_points num_features"], y: Array, num_train: Int[Array, ""] | int
    ) -> tuple[Array, Float[Array, "num_points 1"]]:
        """The inputs and the targets as one feature, standardised if ``scale_free``."""
        if self.scale_free:
            scaling = standardisation(x, y, num_train)
            x, y = scaling.inputs(x), scaling.targets(y)
        return x, y[:, None]

    def rebinned(self, bar: BarDistribution) -> PFN:
        """This model with its output layer moved onto other buckets (e.g. finer ones).

        Each new bucket ``j`` takes the logit row of the old bucket ``k`` that holds most of
        it (:meth:`BarDistribution.bucket_shares`), shifted so that ``j`` gets ``k``'s
        density over its whole width: by ``log(sum_k' F_jk' w_k' / w_k)``, with ``F_jk'``
        the share of old bucket ``k'``'s own mass in ``j`` and ``w`` the old widths. So a
        new bucket inside one old bucket gets exactly its share of that bucket's mass (a
        refinement of the old borders keeps the density wherever both are uniform), and one
        that straddles an old border is off by the old density's jump there (near a tail,
        by the tail density's change over the bucket). The model takes ``bar``'s tails.
        Fine-tuning
        (``train(..., init_from=...)``) takes it from there. The transformer body is
        unchanged.

        Args:
            bar: the new buckets.

        Returns:
            The re-binned model.
        """
        old_borders = np.asarray(self.bar.borders, np.float64)
        old_widths = np.diff(old_borders)
        new_borders = np.asarray(bar.borders, np.float64)
        lower = np.concatenate([[-np.inf], new_borders[1:-1]])
        upper = np.concatenate([new_borders[1:-1], [np.inf]])
        shares = self.bar.bucket_shares(lower, upper)  # (new, old)
        source = np.argmax(shares, axis=1)
        # A row with no share at all lies beyond float64's reach in a tail: use that tail.
        beyond = np.where(upper <= old_borders[1], 0, self.bar.num_buckets - 1)
        source = np.where(shares.max(axis=1) > 0, source, beyond)
        shift = np.log(np.maximum(shares @ old_widths, 1e-300)) - np.log(old_widths[source])
        # Keep far-tail buckets learnable: an Adam step moves a logit by about the
        # learning rate, so a logit at -700 would never come back.
        shift = np.maximum(shift, MIN_LOG_SHARE)
        head = self.decoder_out
        assert head.bias is not None  # the decoder has a bias
        weight = head.weight[source]
        bias = head.bias[source] + jnp.asarray(shift, head.bias.dtype)
        new_head = eqx.nn.Linear(head.in_features, bar.num_buckets, key=jax.random.key(0))
        new_head = eqx.tree_at(lambda m: (m.weight, m.bias), new_head, (weight, bias))
        return eqx.tree_at(lambda m: (m.decoder_out, m.bar), self, (new_head, bar))
