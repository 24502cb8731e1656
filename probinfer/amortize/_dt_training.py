"""Training a distribution transformer on examples drawn fresh from a task, resumably.

Each step draws ``batch_size`` examples (meta-prior -> prior -> latent -> data) and
minimises the mean ``-log q(theta | prior, data)``. Optimiser, chunked driver loop,
progress bar and atomic checkpoints are the PFN's (:mod:`probinfer.amortize._training`):
step ``t`` uses ``fold_in(key, t)``, so a resumed run continues exactly as the
uninterrupted run would have.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, PRNGKeyArray

import probinfer
from probinfer.amortize._training import (
    MODEL_FILE,
    STATE_FILE,
    TrainingCurve,
    TrainStep,
    check_training_settings,
    deserialise_model,
    load_leaves,
    make_optimizer,
    read_saved_config,
    refuse_other_run,
    starting_curve,
    write_training_files,
)
from probinfer.amortize.distribution_transformer import DistributionTransformer, data_sharpness
from probinfer.amortize.dt_tasks import AbstractPosteriorTask, sample_examples, task_from_spec
from probinfer.driver import drive, progress_bar


@dataclasses.dataclass(frozen=True)
class DTTrainingConfig:
    """Everything that defines a distribution-transformer training run.

    Attributes:
        num_steps: optimiser steps.
        batch_size: examples per step.
        width: token width.
        num_layers: decoder layers (cross-attention, self-attention, MLP each).
        num_heads: attention heads.
        mlp_width: MLP hidden width.
        learning_rate: peak learning rate.
        warmup_steps: linear warm-up steps.
        weight_decay: AdamW weight decay.
        clip_norm: global gradient-norm clip.
        steps_per_chunk: steps per jitted chunk (progress and checkpoints between chunks).
        seed: PRNG seed.
        component_copies: posterior components per prior component (more lets a posterior
            have more modes than its prior: a GP's hyperparameter posterior is skewed).
        num_observation_layers: self-attention layers over the observations before the
            components attend to them (needed where observations are not independent
            given the latent, as a GP's points).
    """

    num_steps: int = 20_000
    batch_size: int = 128
    width: int = 64
    num_layers: int = 3
    num_heads: int = 4
    mlp_width: int = 128
    learning_rate: float = 1e-3
    warmup_steps: int = 500
    weight_decay: float = 0.0
    clip_norm: float = 1.0
    steps_per_chunk: int = 100
    seed: int = 0
    component_copies: int = 1
    num_observation_layers: int = 0

    def __post_init__(self) -> None:
        counts = ("num_steps", "batch_size", "width", "num_layers", "num_heads", "mlp_width",
                  "steps_per_chunk", "component_copies")  # fmt: skip
        check_training_settings(self, {**dict.fromkeys(counts, 1), "num_observation_layers": 0})


class DTTrainState(eqx.Module):
    """Everything a resumed run needs.

    Attributes:
        model: the distribution transformer.
        opt_state: the optax state.
        key: the run's base key data (``uint32``; step ``t`` uses ``fold_in(key, t)``).
        step: steps taken.
    """

    model: DistributionTransformer
    opt_state: Any
    key: Array
    step: Array


# The trained range of `data_sharpness`: its 99.9th percentile over this many of the
# task's examples, drawn with a fixed key. Computed when training starts (about 2.5 s, mostly
# compiling the task's sampler) and saved in `config.json`, which `load_dt` reads.
SHARPNESS_EXAMPLES = 2**14
SHARPNESS_QUANTILE = 0.999


def trained_sharpness(task: AbstractPosteriorTask) -> float | None:
    """The edge of the range of :func:`~probinfer.amortize.data_sharpness` over a task.

    Args:
        task: the training task (meta-prior and data model).

    Returns:
        The 99.9th percentile of the sharpness over :data:`SHARPNESS_EXAMPLES` of its
        examples (one in 1,000 training examples lies beyond), drawn with a fixed key; or
        the task's own bound where its meta-prior has one
        (:meth:`~probinfer.amortize.AbstractPosteriorTask.sharpness_bound`); ``None`` for
        GP data, which the sharpness does not describe.

    Raises:
        ValueError: if the value is not finite (a task whose examples overflow).
    """
    if task.prior_family == "gp_hyperparameters":
        return None  # no sharpness for GP data; the prior's ranges are checked instead
    bound = task.sharpness_bound()
    if bound is not None:
        return bound
    value = float(np.quantile(np.asarray(_sharpness_values(task)), SHARPNESS_QUANTILE))
    if not np.isfinite(value):
        raise ValueError(
            f"the task's data sharpness is not finite ({value}): its examples overflow; "
            "narrow the task's noise or component scales."
        )
    return value


@eqx.filter_jit
def _sharpness_values(task: AbstractPosteriorTask) -> Array:
    examples = sample_examples(jax.random.key(0), task, SHARPNESS_EXAMPLES)
    return jax.vmap(
        lambda e: data_sharpness(
            e.prior, e.data, component_mask=e.component_mask, observation_mask=e.observation_mask
        )
    )(examples)


def build_dt(
    task: AbstractPosteriorTask,
    config: DTTrainingConfig,
    *,
    key: PRNGKeyArray,
    max_sharpness: float | None = None,
) -> DistributionTransformer:
    """A freshly initialised transformer for ``task``'s dimension and sizes, with
    ``max_sharpness`` (:func:`trained_sharpness`; ``None``: unchecked)."""
    return DistributionTransformer(
        task.dim,
        max_components=task.max_components,
        max_observations=task.max_observations,
        width=config.width,
        num_layers=config.num_layers,
        num_heads=config.num_heads,
        mlp_width=config.mlp_width,
        max_sharpness=max_sharpness,
        prior_family=task.prior_family,
        prior_ranges=task.prior_ranges(),
        component_copies=config.component_copies,
        num_observation_layers=config.num_observation_layers,
        num_features=getattr(task, "num_features", 1),
        key=key,
    )


def dt_batch_loss(
    model: DistributionTransformer,
    key: PRNGKeyArray,
    task: AbstractPosteriorTask,
    config: DTTrainingConfig,
) -> Array:
    """Mean ``-log q(theta | prior, data)`` (nats) over one batch of fresh examples."""
    examples = sample_examples(key, task, config.batch_size)

    def log_q(example: Any) -> Array:
        posterior = model(
            example.prior,
            example.data,
            component_mask=example.component_mask,
            observation_mask=example.observation_mask,
        )
        return posterior.log_prob(example.theta)

    return -jnp.mean(jax.vmap(log_q)(examples))


def _initial_state(task: AbstractPosteriorTask, config: DTTrainingConfig) -> DTTrainState:
    key_model, key_run = jax.random.split(jax.random.key(config.seed))
    model = build_dt(task, config, key=key_model, max_sharpness=trained_sharpness(task))
    opt_state = make_optimizer(config).init(eqx.filter(model, eqx.is_inexact_array))
    return DTTrainState(model, opt_state, jax.random.key_data(key_run), jnp.asarray(0, jnp.int32))


def _save(
    folder: Path,
    state: DTTrainState,
    config: DTTrainingConfig,
    task_spec: dict,
    curve: TrainingCurve,
) -> None:
    """Write the training curve, the training state, the model alone and the config, each
    atomically."""
    settings = {"training": dataclasses.asdict(config), "task": task_spec,
                "max_sharpness": state.model.max_sharpness}  # fmt: skip
    write_training_files(folder, state, settings, curve)


def train_dt(
    task: AbstractPosteriorTask,
    config: DTTrainingConfig,
    *,
    checkpoint_dir: str | Path | None = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[DistributionTransformer, np.ndarray]:
    """Train (or resume training) a distribution transformer on ``task``.

    Args:
        task: the meta-prior and data model (e.g. :class:`LinearGaussianTask`).
        config: the run's settings.
        checkpoint_dir: folder for checkpoints after every chunk, with the training
            curve (``training_curve.json``: the loss of every step, continued on resume);
            an existing checkpoint there with the same config and task is resumed.
        progress: show a progress bar.
        stop_after: stop after this many total steps (for tests of interruption).

    Returns:
        The model and the per-step losses (nats per example) of this call.

    Raises:
        ValueError: if the checkpoint folder holds a run with another config or task.
        FloatingPointError: if the weights become non-finite (checked after every chunk,
            before it is saved).
    """
    folder = None if checkpoint_dir is None else Path(checkpoint_dir)
    task_spec = task.spec()
    state = _initial_state(task, config)
    if folder is not None and (folder / STATE_FILE).exists():
        expected = {"training": dataclasses.asdict(config), "task": task_spec,
                    "library": probinfer.__version__}  # fmt: skip
        refuse_other_run(folder, expected)
        state = load_leaves(folder / STATE_FILE, state)
    curve = starting_curve(folder, int(state.step))
    end = config.num_steps if stop_after is None else min(stop_after, config.num_steps)
    params, static = eqx.partition(state.model, eqx.is_inexact_array)

    def record(losses: np.ndarray) -> None:
        nonlocal curve
        curve = curve.extended(losses)

    def save(loop_state: tuple, step: int) -> None:
        finite = jax.tree.leaves(jax.tree.map(lambda x: jnp.all(jnp.isfinite(x)), loop_state[0]))
        if not all(bool(leaf) for leaf in finite):
            kept = "" if folder is None else f"; the checkpoint in {folder} is the last good one"
            raise FloatingPointError(
                f"training diverged before step {step}: the weights hold NaN or infinite "
                f"values{kept}. Lower `learning_rate` or `clip_norm`."
            )
        if folder is not None:
            model = eqx.combine(loop_state[0], static)
            saved = DTTrainState(model, loop_state[1], state.key, jnp.asarray(step, jnp.int32))
            _save(folder, saved, config, task_spec, curve)

    with progress_bar(progress, config.num_steps, "DT training") as bar:
        task_arrays, task_structure = eqx.partition(task, eqx.is_array)
        frozen_arrays, frozen_structure = eqx.partition(static, eqx.is_array)
        result = drive(
            # The seed and chunk size do not enter a step: one program for every seed.
            TrainStep(
                dataclasses.replace(config, seed=0, steps_per_chunk=1),
                dt_batch_loss,
                task_structure,
                frozen_structure,
            ),
            (params, state.opt_state),
            jax.random.wrap_key_data(state.key),
            shared=(task_arrays, frozen_arrays),
            num_steps=max(end, int(state.step)),
            first_step=int(state.step),
            chunk_size=config.steps_per_chunk,
            progress=bar,
            progress_fn=lambda losses: {"loss": float(losses.mean())},
            after_chunk_fn=save,
            chunk_records_fn=record,
            description="DT training",
        )
    return eqx.combine(result.state[0], static), result.records


def load_dt(folder: str | Path) -> DistributionTransformer:
    """Load a distribution transformer saved by :func:`train_dt`.

    Works with or without ``jax_enable_x64`` (the weights keep the dtype they were saved in).
    A folder saved before models carried ``max_sharpness`` gets it computed from its task
    on every load (about 2.5 s; float rounding follows the x64 setting).

    Args:
        folder: the checkpoint folder (``config.json`` and ``model.eqx``).

    Returns:
        The model.

    Raises:
        FileNotFoundError: if the folder lacks the files.
    """
    folder = Path(folder)
    saved = read_saved_config(folder, "`train_dt` (or `probinfer dt train`)")
    config = DTTrainingConfig(**saved["training"])
    task = task_from_spec(saved["task"])
    # Folders saved before the sharpness check lack the value: computed here instead.
    max_sharpness = saved.get("max_sharpness")
    if max_sharpness is None:
        max_sharpness = trained_sharpness(task)
    skeleton = build_dt(task, config, key=jax.random.key(0), max_sharpness=max_sharpness)
    return deserialise_model(folder / MODEL_FILE, skeleton)
