"""Training a PFN on datasets drawn fresh from a prior, with resumable checkpoints.

Each step draws ``batch_size`` datasets of ``num_points`` points from the prior, splits each
at one ``num_train`` (uniform on ``[min_train, max_train]``, shared by the batch) and
minimises the mean negative log predictive density (a classifier's: probability) of the
held-out targets. The optimiser is an optax chain: global-norm clipping, then AdamW with
linear warm-up and cosine decay. Steps run in jitted chunks; between chunks a progress bar
shows the loss and steps/s, and the training state ``(model, opt_state, key, step)`` is
saved atomically with equinox's tree serialisation. Step ``t`` uses ``fold_in(key, t)``,
so a run resumed from a checkpoint continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
import io
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple, Protocol

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, Float, PRNGKeyArray

import probinfer
from probinfer._validation import check_count
from probinfer.amortize._bar import MIN_TAIL_SAMPLES, BarDistribution, Tail
from probinfer.amortize.classifier import PFNClassifier
from probinfer.amortize.pfn import PFN, AbstractPFN, standardisation
from probinfer.amortize.priors import AbstractDatasetPrior, GPClassificationPrior, sample_batch
from probinfer.checkpoint import atomic_write, atomic_write_checked, read_checked
from probinfer.driver import drive, progress_bar

MODEL_FILE = "model.eqx"
STATE_FILE = "state.eqx"
CONFIG_FILE = "config.json"
CURVE_FILE = "training_curve.json"


def check_training_settings(config: Any, counts: dict[str, int]) -> None:
    """Check a training config's shared settings: each count an int at or above its
    minimum (stored as a Python int, so that the config stays JSON-serialisable), a
    `width` that the heads divide, a positive learning rate.

    Args:
        config: a frozen dataclass with ``width``, ``num_heads`` and ``learning_rate``.
        counts: the count fields' names and minimums.

    Raises:
        ValueError: naming the setting.
    """
    for name, minimum in counts.items():
        object.__setattr__(config, name, check_count(name, getattr(config, name), minimum))
    if config.width % config.num_heads:
        raise ValueError(
            f"`width` ({config.width}) must be divisible by `num_heads` ({config.num_heads})."
        )
    if not config.learning_rate > 0:
        raise ValueError(f"`learning_rate` must be > 0, got {config.learning_rate}.")


@dataclasses.dataclass(frozen=True)
class TrainingConfig:
    """Everything that defines a training run (saved next to its checkpoints).

    Attributes:
        num_steps: optimiser steps.
        batch_size: datasets per step.
        max_train: most train points per dataset (the model's limit at prediction time).
        min_train: fewest train points per dataset.
        num_test: held-out points per dataset.
        num_buckets: bar-distribution buckets (unused by a classifier, whose outputs are
            its prior's classes).
        width: transformer width.
        num_layers: transformer layers.
        num_heads: attention heads.
        mlp_width: MLP hidden width.
        learning_rate: peak learning rate.
        warmup_steps: linear warm-up steps.
        weight_decay: AdamW weight decay.
        clip_norm: global gradient-norm clip.
        steps_per_chunk: steps per jitted chunk (progress and checkpoints between chunks).
        seed: PRNG seed.
        scale_free: standardise each dataset by its train points (:class:`PFN`'s
            ``scale_free``; needs ``min_train >= 2``).
    """

    num_steps: int = 20_000
    batch_size: int = 64
    max_train: int = 50
    min_train: int = 1
    num_test: int = 10
    num_buckets: int = 256
    width: int = 128
    num_layers: int = 4
    num_heads: int = 4
    mlp_width: int = 256
    learning_rate: float = 1e-3
    warmup_steps: int = 500
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    steps_per_chunk: int = 100
    seed: int = 0
    scale_free: bool = False

    def __post_init__(self) -> None:
        counts = dict.fromkeys(("num_steps", "batch_size", "max_train", "min_train", "num_test",
                                "width", "num_layers", "num_heads", "mlp_width",
                                "steps_per_chunk"), 1)  # fmt: skip
        check_training_settings(self, {**counts, "num_buckets": 2})
        if self.min_train > self.max_train:
            raise ValueError(
                f"`min_train` ({self.min_train}) must be <= `max_train` ({self.max_train})."
            )
        if self.scale_free and self.min_train < 2:
            raise ValueError(
                f"a scale-free model needs `min_train >= 2` (got {self.min_train}): one train "
                "point sets no scale."
            )

    @property
    def num_points(self) -> int:
        """Points per training dataset: ``max_train + num_test``."""
        return self.max_train + self.num_test


class TrainState(eqx.Module):
    """Everything a resumed run needs (with the fitted tails, which ``config.json`` holds).

    Attributes:
        model: the PFN.
        opt_state: the optax state.
        key: the run's base key data (``uint32``; step ``t`` uses ``fold_in(key, t)``).
        step: steps taken.
    """

    model: AbstractPFN
    opt_state: Any
    key: Array
    step: Array


def trainable(model: AbstractPFN) -> AbstractPFN:
    """The filter spec of the trained leaves: every float array except a regression PFN's
    bucket borders."""
    spec = jax.tree.map(eqx.is_inexact_array, model)
    if not isinstance(model, PFN):
        return spec
    return eqx.tree_at(lambda m: m.bar.borders, spec, replace=False)


class OptimizerSettings(Protocol):
    """The settings :func:`make_optimizer` reads (every training config has them)."""

    @property
    def num_steps(self) -> int: ...
    @property
    def learning_rate(self) -> float: ...
    @property
    def warmup_steps(self) -> int: ...
    @property
    def weight_decay(self) -> float: ...
    @property
    def clip_norm(self) -> float: ...


def read_saved_config(folder: Path, writer: str) -> dict:
    """The ``config.json`` of a saved model folder, after checking that its files exist.

    Args:
        folder: the folder.
        writer: what writes such folders (named in the error).

    Raises:
        FileNotFoundError: if the folder lacks ``config.json`` or ``model.eqx``.
    """
    for name in (CONFIG_FILE, MODEL_FILE):
        if not (folder / name).exists():
            raise FileNotFoundError(
                f"{folder / name} not found; pass a folder written by {writer}."
            )
    return json.loads((folder / CONFIG_FILE).read_text())


RUN_PARTS = {
    "training": "training config",
    "prior": "prior",
    "task": "task",
    "init_from": "`init_from`",
    "library": "probinfer version",
}
"""What each key of a training checkpoint's ``config.json`` that must match on resume is."""


def refuse_other_run(folder: Path, expected: dict[str, Any]) -> None:
    """Refuse to resume a training checkpoint written by another run.

    Args:
        folder: the checkpoint folder.
        expected: this run's value of each key of ``config.json`` that must match
            (:data:`RUN_PARTS`).

    Raises:
        ValueError: naming the parts that differ.
    """
    saved = json.loads((folder / CONFIG_FILE).read_text())
    differing = [RUN_PARTS[name] for name, value in expected.items() if saved.get(name) != value]
    if differing:
        raise ValueError(
            f"{folder} holds a checkpoint of a different run: its {', '.join(differing)} "
            "differ(s) from this run's. Pass a new `checkpoint_dir`, or the original settings "
            "(and probinfer version) to resume."
        )


def save_leaves(path: Path, tree: Any) -> None:
    """Write a pytree's leaves (equinox serialisation) atomically, with a checksum."""
    atomic_write_checked(path, lambda file: eqx.tree_serialise_leaves(file, tree))


def load_leaves(path: Path, like: Any) -> Any:
    """Read leaves written by :func:`save_leaves` into ``like``'s structure.

    Raises:
        ValueError: naming the file if it is truncated or corrupted.
    """
    fix = f"Delete the folder {path.parent} to start the training run over."
    return eqx.tree_deserialise_leaves(io.BytesIO(read_checked(path, fix)), like)


def deserialise_model(path: Path, skeleton: Any) -> Any:
    """Load a saved model's leaves into ``skeleton``, whatever ``jax_enable_x64`` says.

    A skeleton built under x64 has float64 weights while a model trained in float32 has
    float32 ones on disk (and equinox refuses a dtype change): the skeleton's floating
    leaves are cast to float32 first, and to float64 if the file holds float64 weights.

    A file written before models carried a checksum is loaded with a ``DeprecationWarning``.

    Raises:
        ValueError: naming the file if it is truncated or corrupted.
    """
    fix = ("Train or save the model again (`train` writes it to its `checkpoint_dir`), or "
           "reinstall probinfer for a shipped model.")  # fmt: skip
    content = read_checked(path, fix, allow_unchecked=True)
    for dtype in (jnp.float32, jnp.float64):
        like = jax.tree.map(
            lambda x, dtype=dtype: x.astype(dtype) if eqx.is_inexact_array(x) else x, skeleton
        )
        try:
            return eqx.tree_deserialise_leaves(io.BytesIO(content), like)
        except RuntimeError as error:
            cause = error  # equinox wraps a leaf's error in one naming the leaf's path
            while cause.__cause__ is not None:
                cause = cause.__cause__
            if isinstance(cause, EOFError | ValueError):  # an unchecked file cut short
                raise ValueError(
                    f"the file {path} is truncated or corrupted and was not loaded "
                    f"({type(cause).__name__}: {cause}). {fix}"
                ) from None
            if "dtype" not in str(error) + str(cause) or dtype == jnp.float64:
                raise
    raise AssertionError("unreachable")


def make_optimizer(config: OptimizerSettings) -> optax.GradientTransformation:
    """Clipping, then AdamW on a linear warm-up + cosine decay schedule."""
    schedule = optax.warmup_cosine_decay_schedule(
        0.0,
        config.learning_rate,
        min(config.warmup_steps, config.num_steps - 1),
        config.num_steps,
        end_value=config.learning_rate * 0.01,
    )
    return optax.chain(
        optax.clip_by_global_norm(config.clip_norm),
        optax.adamw(schedule, weight_decay=config.weight_decay),
    )


def bar_from_prior(
    key: PRNGKeyArray, prior: AbstractDatasetPrior, config: TrainingConfig
) -> BarDistribution:
    """Bucket borders at quantiles of ``y`` from 512 prior datasets (of the held-out ``y``
    after standardisation, for a scale-free model), with the default tails (:func:`train`
    fits them: :func:`fit_tails`)."""
    if not config.scale_free:
        _, y = jax.vmap(lambda k: prior.sample(k, config.num_points))(jax.random.split(key, 512))
        return BarDistribution.from_samples(np.asarray(y), config.num_buckets)
    key_data, key_split = jax.random.split(key)
    x, y = jax.vmap(lambda k: prior.sample(k, config.num_points))(jax.random.split(key_data, 512))
    num_train = jax.random.randint(key_split, (512,), config.min_train, config.max_train + 1)
    targets = jax.vmap(lambda xi, yi, n: standardisation(xi, yi, n).targets(yi))(x, y, num_train)
    held_out = np.arange(config.num_points)[None, :] >= np.asarray(num_train)[:, None]
    return BarDistribution.from_samples(np.asarray(targets)[held_out], config.num_buckets)


# Tail fitting draws prior datasets in chunks of this many, each with this many held-out
# points, until each tail has `TAIL_SAMPLES` samples beyond its border (or `max_datasets`).
TAIL_CHUNK = 512
TAIL_TEST_POINTS = 20
TAIL_SAMPLES = 1_000
# `train` fits a run's tails with `fold_in(key(seed), TAIL_KEY)`.
TAIL_KEY = 1


@eqx.filter_jit
def _held_out_targets(
    key: PRNGKeyArray, prior: AbstractDatasetPrior, model: PFN
) -> Float[Array, " chunk_points"]:
    """``TAIL_TEST_POINTS`` held-out targets from each of ``TAIL_CHUNK`` prior datasets, as
    the model sees them: standardised by a train set of a size it predicts from (uniform,
    drawn per dataset) for a scale-free model, else raw (their distribution does not depend
    on the train set)."""
    key_data, key_active, key_split = jax.random.split(key, 3)
    num_points = model.max_train + TAIL_TEST_POINTS
    # As in training, 1 to all features active (drawn here per dataset).
    num_active = jax.random.randint(key_active, (TAIL_CHUNK,), 1, prior.num_features + 1)
    x, y = jax.vmap(lambda k, a: prior.sample(k, num_points, a))(
        jax.random.split(key_data, TAIL_CHUNK), num_active
    )
    if not model.scale_free:
        return y[:, -TAIL_TEST_POINTS:].ravel()
    num_train = jax.random.randint(
        key_split, (TAIL_CHUNK,), model.fewest_train_points, model.max_train + 1
    )
    targets = jax.vmap(lambda xi, yi, n: standardisation(xi, yi, n).targets(yi))(x, y, num_train)
    rows = num_train[:, None] + jnp.arange(TAIL_TEST_POINTS)[None, :]
    return jnp.take_along_axis(targets, rows, axis=1).ravel()


def fit_tails(
    model: PFN, prior: AbstractDatasetPrior, *, key: PRNGKeyArray, max_datasets: int = 65_536
) -> PFN:
    """The model with its bar distribution's tails fitted to its prior
    (:meth:`BarDistribution.with_fitted_tails`).

    The tails do not enter training (the bucket probabilities are the same whatever they
    are), so they can be fitted before, during or after it; maximum likelihood on held-out
    prior targets beyond the outer borders gives the fixed tail shape with the least expected
    loss on the prior. Draws datasets in chunks (:data:`TAIL_CHUNK`; ``max_datasets``
    rounded up to whole chunks) until each tail has :data:`TAIL_SAMPLES` samples beyond its
    border or the rate so far shows that it cannot get
    :data:`~probinfer.amortize._bar.MIN_TAIL_SAMPLES` (a tail with fewer gets the default
    one, with a warning).

    Args:
        model: the PFN (its borders, train-set sizes and ``scale_free`` are used).
        prior: the dataset prior it is trained on.
        key: PRNG key.
        max_datasets: most prior datasets to draw.

    Returns:
        The model with fitted tails.
    """
    borders = np.asarray(model.bar.borders, np.float64)
    beyond: list[np.ndarray] = []
    counts = np.zeros(2, int)
    chunks = max(1, math.ceil(max_datasets / TAIL_CHUNK))
    for chunk in range(chunks):
        targets = np.asarray(_held_out_targets(jax.random.fold_in(key, chunk), prior, model))
        left, right = targets < borders[1], targets > borders[-2]
        beyond.append(targets[left | right])
        counts += (int(left.sum()), int(right.sum()))
        # Each side done: enough samples, or (after 8 chunks) too few coming to fit it.
        hopeless = chunk >= 7 and counts * chunks / (chunk + 1) < MIN_TAIL_SAMPLES
        if np.all((counts >= TAIL_SAMPLES) | hopeless):
            break
    bar = model.bar.with_tails(None).with_fitted_tails(np.concatenate(beyond))
    return eqx.tree_at(lambda m: m.bar, model, bar)


def saved_tails(bar: BarDistribution) -> list[list[float]] | None:
    """A bar distribution's fitted tails as ``config.json`` records them, ``[[shape,
    scale]] * 2``, or None for the default ones (a resumed run then fits them)."""
    if bar.fitted_tails is None:
        return None
    return [[tail.shape, float(tail.scale)] for tail in bar.fitted_tails]


def tails_from_config(saved: list[list[float]] | None) -> tuple[Tail, Tail] | None:
    """The tails a ``config.json`` records (:func:`saved_tails`), or None for the default."""
    return None if saved is None else (Tail(*saved[0]), Tail(*saved[1]))


def save_fitted_tails(folder: str | Path, *, seed: int = 0) -> PFN:
    """Fit the tails of the PFN saved in ``folder`` to the prior its ``config.json`` names
    (:func:`fit_tails`), and record them there (atomically); the weights are untouched.

    Args:
        folder: a model folder written by :func:`train` (or a shipped model's).
        seed: PRNG seed of the prior datasets.

    Returns:
        The model with the fitted tails.
    """
    from probinfer.amortize._predict import load, prior_from_spec

    folder = Path(folder)
    model = load(folder)
    if not isinstance(model, PFN):
        raise ValueError(
            f"{folder} holds a {type(model).__name__}, whose output (class probabilities) has "
            "no tails to fit; fit tails of a regression PFN."
        )
    saved = read_saved_config(folder, "`probinfer pfn train`")
    model = fit_tails(model, prior_from_spec(saved["prior"]), key=jax.random.key(seed))
    payload = {**saved, "tails": saved_tails(model.bar)}

    def write_config(file: BinaryIO) -> None:
        file.write(json.dumps(payload, indent=2).encode())

    atomic_write(folder / CONFIG_FILE, write_config)
    return model


def build_model(
    head: BarDistribution | int, num_features: int, config: TrainingConfig, *, key: PRNGKeyArray
) -> AbstractPFN:
    """A freshly initialised PFN of the architecture ``config`` describes: a regression
    :class:`PFN` with the bar distribution ``head``, or a :class:`PFNClassifier` with
    ``head`` classes."""
    body = {
        "num_features": num_features,
        "max_train": config.max_train,
        "min_train": config.min_train,
        "width": config.width,
        "num_layers": config.num_layers,
        "num_heads": config.num_heads,
        "mlp_width": config.mlp_width,
        "key": key,
    }
    if isinstance(head, int | np.integer):
        return PFNClassifier(num_classes=head, **body)
    return PFN(head, scale_free=config.scale_free, **body)


def initial_state(prior: AbstractDatasetPrior, config: TrainingConfig) -> TrainState:
    """A fresh model (buckets from the prior, or a classifier for a classification prior)
    and optimiser state."""
    key = jax.random.key(config.seed)
    key_bar, key_model, key_run = jax.random.split(key, 3)
    if isinstance(prior, GPClassificationPrior):
        if config.scale_free:
            raise ValueError(
                "a classification prior trains a classifier, which takes inputs in its "
                "prior's units: set `scale_free` to false."
            )
        head: BarDistribution | int = prior.num_classes
    else:
        head = bar_from_prior(key_bar, prior, config)
    model = build_model(head, prior.num_features, config, key=key_model)
    opt_state = make_optimizer(config).init(eqx.filter(model, trainable(model)))
    return TrainState(model, opt_state, jax.random.key_data(key_run), jnp.asarray(0, jnp.int32))


def batch_loss(
    model: AbstractPFN, key: PRNGKeyArray, prior: AbstractDatasetPrior, config: TrainingConfig
) -> Array:
    """Mean negative log predictive density (a classifier's: probability, the
    cross-entropy) of the held-out points of one prior batch."""
    key_data, key_split = jax.random.split(key)
    x, y = sample_batch(key_data, prior, config.batch_size, config.num_points)
    num_train = jax.random.randint(key_split, (), config.min_train, config.max_train + 1)
    log_prob = jax.vmap(lambda xi, yi: model.log_prob(xi, yi, num_train))(x, y)
    is_test = (jnp.arange(config.num_points) >= num_train)[None, :]
    return -jnp.sum(jnp.where(is_test, log_prob, 0.0)) / (
        config.batch_size * (config.num_points - num_train)
    )


def _warm_start(state: TrainState, config: TrainingConfig, folder: Path) -> TrainState:
    """``state`` with its model replaced by the one saved in ``folder``.

    The kind (regression or classifier) and architecture must match, and a classifier's
    number of classes; a regression PFN's number of buckets may differ: then the source is
    re-binned (:meth:`PFN.rebinned`) onto the buckets of ``state``'s model. Either kind may
    take fewer input features than the prior has (:meth:`AbstractPFN.with_num_features`:
    the new ones start with zero weights), not more. The static settings (``scale_free``,
    ``min_train``) are the config's: a model trained on raw data can be fine-tuned into a
    scale-free one (re-binned onto standardised buckets).
    """
    from probinfer.amortize._predict import load

    model = load(folder)
    if type(model) is not type(state.model):
        raise ValueError(
            f"the model in {folder} is a {type(model).__name__} but this run's prior trains a "
            f"{type(state.model).__name__}; start from a model of the same kind."
        )
    if isinstance(model, PFNClassifier) and isinstance(state.model, PFNClassifier):
        if model.num_classes != state.model.num_classes:
            raise ValueError(
                f"the model in {folder} has {model.num_classes} classes but this run's prior "
                f"has {state.model.num_classes}; start from a model with as many classes."
            )
    if (
        isinstance(model, PFN)
        and isinstance(state.model, PFN)
        and (
            model.bar.num_buckets != state.model.bar.num_buckets
            or model.scale_free != state.model.scale_free
        )
    ):
        model = model.rebinned(state.model.bar)
    if model.num_features > state.model.num_features:
        raise ValueError(
            f"the model in {folder} takes {model.num_features} input features but this run's "
            f"prior has {state.model.num_features}; a model can gain input features, not lose "
            f"them: use a prior of at least {model.num_features} features."
        )
    # A prior of more input features: the new ones start ignored (`with_num_features`).
    model = model.with_num_features(state.model.num_features)
    leaves = jax.tree.leaves(model)
    target_leaves, target_structure = jax.tree.flatten(state.model)
    # Leaf shapes alone miss the number of heads (every head count has width-sized
    # projections): compare the saved architecture too.
    saved = json.loads((folder / CONFIG_FILE).read_text())
    architecture = ("width", "num_layers", "num_heads", "mlp_width")
    shapes_differ = [np.shape(leaf) for leaf in leaves] != [np.shape(x) for x in target_leaves]
    if shapes_differ or any(
        saved["training"].get(name) != getattr(config, name) for name in architecture
    ):
        raise ValueError(
            f"the model in {folder} has another architecture than this config describes "
            "(width, layers, heads, MLP width); use the config it was trained with (only "
            "`num_buckets` may differ, and the prior may have more input features)."
        )
    # A regression PFN: the source's borders (or this run's, re-binned) with the default
    # tails; `train` fits the tails for this run's prior.
    model = jax.tree.unflatten(target_structure, leaves)
    opt_state = make_optimizer(config).init(eqx.filter(model, trainable(model)))
    source_step = int(saved.get("step", 0))
    # Fold in the source's step count: continuing a run with its own seed must not replay
    # the datasets it was trained on.
    key = jax.random.fold_in(jax.random.wrap_key_data(state.key), source_step)
    return TrainState(model, opt_state, jax.random.key_data(key), state.step)


class TrainStep(NamedTuple):
    """One optimiser step on ``(trainable params, optimiser state)``; records the loss.

    Hashable (the settings, the loss function and the non-array parts of the prior and of
    the frozen model), so that the driver compiles it once per architecture and prior
    structure: the arrays (prior parameters, bucket borders) arrive in ``shared``.
    ``loss_fn(model, key, prior, config)`` is the batch loss (a module-level function).
    """

    config: Any
    loss_fn: Callable[[Any, PRNGKeyArray, Any, Any], Array]
    prior_structure: Any
    frozen_structure: Any

    def __call__(
        self, key: PRNGKeyArray, state: tuple, step_index: Array, shared: tuple
    ) -> tuple[tuple, Array]:
        params, opt_state = state
        prior_arrays, frozen_arrays = shared
        prior = eqx.combine(prior_arrays, self.prior_structure)
        frozen = eqx.combine(frozen_arrays, self.frozen_structure)
        loss, grads = jax.value_and_grad(
            lambda p: self.loss_fn(eqx.combine(p, frozen), key, prior, self.config)
        )(params)
        updates, opt_state = make_optimizer(self.config).update(grads, opt_state, params)
        return (optax.apply_updates(params, updates), opt_state), loss


class TrainingCurve(NamedTuple):
    """A run's training loss per step, saved beside its checkpoint (``training_curve.json``,
    ``{"first_step": ..., "loss": [...]}``).

    Attributes:
        first_step: the step of ``loss[0]`` (0 unless the run's folder predates curves).
        loss: mean loss of each step's batch (the training objective's units).
    """

    first_step: int
    loss: list[float]

    def extended(self, records: np.ndarray) -> TrainingCurve:
        """The curve with a chunk's per-step losses (the driver's records) appended."""
        return TrainingCurve(self.first_step, [*self.loss, *np.asarray(records).tolist()])


def read_training_curve(folder: str | Path, step: int) -> TrainingCurve:
    """The training curve in a checkpoint folder, up to its checkpoint's step.

    The curve is written before the state, so a run killed between the two has more
    losses than steps: those are dropped.

    Args:
        folder: the checkpoint folder.
        step: the checkpoint's step.

    Returns:
        The curve's steps before ``step``; an empty curve from ``step`` when the folder has
        none (it predates curves) or one that does not reach ``step``.

    Raises:
        ValueError: if the curve file is not one that training wrote.
    """
    path = Path(folder) / CURVE_FILE
    if not path.exists():
        return TrainingCurve(step, [])
    try:
        saved = json.loads(path.read_text())
        first, loss = int(saved["first_step"]), list(saved["loss"])
    except (ValueError, KeyError, TypeError) as error:
        raise ValueError(
            f"{path} is not a training curve ({error!r}); delete it to start the curve afresh."
        ) from None
    if not first <= step <= first + len(loss):
        return TrainingCurve(step, [])
    return TrainingCurve(first, loss[: step - first])


def starting_curve(folder: Path | None, step: int) -> TrainingCurve:
    """The curve a training call continues: its checkpoint's (:func:`read_training_curve`)
    when it resumes one, else an empty curve from ``step``."""
    if folder is not None and (folder / STATE_FILE).exists():
        return read_training_curve(folder, step)
    return TrainingCurve(step, [])


def write_training_files(
    folder: Path, state: Any, settings: dict[str, Any], curve: TrainingCurve | None = None
) -> None:
    """Write a training checkpoint, each file atomically: the training curve, the state and
    the model alone (checksummed), then ``config.json`` with ``settings``, the step and the
    probinfer version (what a resume must match: :func:`refuse_other_run`).

    Args:
        folder: the checkpoint folder (created if needed).
        state: a training state with ``model`` and ``step``.
        settings: the run's JSON-serialisable settings (``training``, ``prior`` or
            ``task``, ...).
        curve: the losses of the steps so far (:func:`read_training_curve` on resume).
    """
    folder.mkdir(parents=True, exist_ok=True)
    if curve is not None:
        # Rewritten whole: a few hundred kB for 10^4 steps, small beside the state.
        curve_text = json.dumps({"first_step": curve.first_step, "loss": curve.loss})

        def write_curve(file: BinaryIO) -> None:
            file.write(curve_text.encode())

        atomic_write(folder / CURVE_FILE, write_curve)
    save_leaves(folder / STATE_FILE, state)
    save_leaves(folder / MODEL_FILE, state.model)
    payload = {**settings, "step": int(state.step), "library": probinfer.__version__}

    def write_config(file: BinaryIO) -> None:
        file.write(json.dumps(payload, indent=2).encode())

    atomic_write(folder / CONFIG_FILE, write_config)


def save_checkpoint(
    folder: Path,
    state: TrainState,
    config: TrainingConfig,
    prior_spec: dict,
    init_from: str | None = None,
    curve: TrainingCurve | None = None,
) -> None:
    """Write the training curve, the training state, the model alone, and the config, each
    atomically."""
    model = state.model
    settings = {"training": dataclasses.asdict(config), "prior": prior_spec,
                "num_features": model.num_features}  # fmt: skip
    if isinstance(model, PFNClassifier):
        settings["num_classes"] = model.num_classes
    else:
        assert isinstance(model, PFN)
        settings["tails"] = saved_tails(model.bar)
    if init_from is not None:
        settings["init_from"] = init_from
    write_training_files(folder, state, settings, curve)


def train(
    prior: AbstractDatasetPrior,
    config: TrainingConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    prior_spec: dict | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    init_from: str | Path | None = None,
) -> tuple[AbstractPFN, np.ndarray]:
    """Train (or resume training) a PFN on ``prior``: a :class:`PFNClassifier` for a
    :class:`GPClassificationPrior`, else a regression :class:`PFN`.

    A regression run fits its bar distribution's tails to the prior first (:func:`fit_tails`, key
    ``fold_in(key(seed), TAIL_KEY)``; a resumed run reads them from its checkpoint's
    ``config.json``): they do not enter the training steps, and every checkpoint and the
    returned model carry them.

    Args:
        prior: the dataset prior.
        config: the run's settings.
        checkpoint_dir: folder for checkpoints after every chunk, with the training
            curve (``training_curve.json``: the loss of every step, continued on resume);
            an existing checkpoint there with the same config is resumed.
        prior_spec: a JSON description of the prior, saved with the checkpoint (the CLI
            passes its config); checked on resume.
        progress: show a progress bar.
        stop_after: stop after this many total steps (for tests of interruption).
        init_from: a saved model folder to start from instead of a fresh initialisation
            (fine-tuning, or continuing a finished run with a new schedule); it must have
            the architecture ``config`` describes, except perhaps the number of buckets
            and fewer input features (the prior's extra ones start with zero weights:
            :meth:`AbstractPFN.with_num_features`).
            The optimiser state starts fresh; the model keeps the source's bucket borders
            if ``config.num_buckets`` is the source's, else it is re-binned onto new
            borders at prior quantiles (:meth:`PFN.rebinned`); the data stream is the seed's
            folded with the source's step count (a continued run sees new datasets).
            Recorded (as an absolute path) in the checkpoint; a resumed run does not read
            it again.

    Returns:
        The model and the per-step losses of this call.

    Raises:
        ValueError: if the checkpoint folder holds a run with a different config, or
            ``init_from`` holds a model of another kind (regression or classifier),
            architecture or number of classes.
    """
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    prior_spec = prior_spec or {"repr": repr(prior)}
    state = initial_state(prior, config)
    origin = None if init_from is None else str(Path(init_from).resolve())
    resuming = folder is not None and (folder / STATE_FILE).exists()
    if init_from is not None and not resuming:
        state = _warm_start(state, config, Path(init_from))
    tails = None
    if folder is not None and resuming:
        expected = {"training": dataclasses.asdict(config), "prior": prior_spec,
                    "init_from": origin, "library": probinfer.__version__}  # fmt: skip
        refuse_other_run(folder, expected)
        state = load_leaves(folder / STATE_FILE, state)
        tails = tails_from_config(json.loads((folder / CONFIG_FILE).read_text()).get("tails"))
    curve = starting_curve(folder, int(state.step))
    # The tails, fitted once per run for its borders (a resumed run keeps its own), travel
    # outside the training state: a compiled step never depends on them.
    if tails is None and isinstance(state.model, PFN):
        tails_key = jax.random.fold_in(jax.random.key(config.seed), TAIL_KEY)
        tails = fit_tails(state.model, prior, key=tails_key).bar.fitted_tails
    end = config.num_steps if stop_after is None else min(stop_after, config.num_steps)
    params, static = eqx.partition(state.model, trainable(state.model))
    base_key = jax.random.wrap_key_data(state.key)

    def with_tails(model: AbstractPFN) -> AbstractPFN:
        if not isinstance(model, PFN):
            return model
        return eqx.tree_at(lambda m: m.bar, model, model.bar.with_tails(tails))

    def record(losses: np.ndarray) -> None:
        nonlocal curve
        curve = curve.extended(losses)

    def save(loop_state: tuple, step: int) -> None:
        if folder is not None:
            model = with_tails(eqx.combine(loop_state[0], static))
            saved = TrainState(model, loop_state[1], state.key, jnp.asarray(step, jnp.int32))
            save_checkpoint(folder, saved, config, prior_spec, origin, curve)

    # The driver's step t uses fold_in(base_key, t): the stream this module always used.
    with progress_bar(progress, config.num_steps, "PFN training") as bar:
        prior_arrays, prior_structure = eqx.partition(prior, eqx.is_array)
        frozen_arrays, frozen_structure = eqx.partition(static, eqx.is_array)
        result = drive(
            # The seed and chunk size do not enter a step: one program for every seed.
            TrainStep(
                dataclasses.replace(config, seed=0, steps_per_chunk=1),
                batch_loss,
                prior_structure,
                frozen_structure,
            ),
            (params, state.opt_state),
            base_key,
            shared=(prior_arrays, frozen_arrays),
            num_steps=max(end, int(state.step)),
            first_step=int(state.step),
            chunk_size=config.steps_per_chunk,
            progress=bar,
            progress_fn=lambda losses: {"loss": float(losses.mean())},
            after_chunk_fn=save,
            chunk_records_fn=record,
            description="PFN training",
        )
    return with_tails(eqx.combine(result.state[0], static)), result.records
