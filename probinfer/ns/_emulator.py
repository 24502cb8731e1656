"""A neural emulator of the log likelihood, trained on the points nested sampling has seen.

After the seed paper (Chua et al., "Deep learning and genetic algorithms for cosmological
Bayesian inference speed-up"): a multilayer perceptron learns ``x -> log L(x)`` from the live
points and a buffer of recent dead points, as the run goes. Every ``train_every`` iterations
it is trained for ``num_train_steps`` Adam steps (continuing from its weights) on all of them
but a random fifth of the live points, which it is then scored on: the root mean squared
error in nats on those held-out live points, the region the next moves explore. Once that
error is below ``tolerance`` the emulator is *ready*, and nested sampling runs its
constrained moves on the emulator instead of the likelihood (see
:func:`probinfer.ns.nested_sampling`); it stays ready only while each new training keeps the
error below the tolerance.

Inputs are standardised by the live points' mean and spread, and outputs by the training
targets' mean and spread, both recomputed at each training (the contour shrinks, so the
scales drift slowly; the weights continue from the last training).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import equinox as eqx
import jax
import jax.numpy as jnp
import optax
from jaxtyping import Array, Float, PRNGKeyArray

PyTree = Any
HELD_OUT_FRACTION = 0.2


class Emulator(NamedTuple):
    """Settings of the likelihood emulator (hashable).

    Attributes:
        tolerance: held-out root mean squared error (nats) below which the emulator is used.
        width: hidden units per layer.
        depth: hidden layers.
        train_every: iterations between trainings.
        num_train_steps: full-batch Adam steps per training.
        learning_rate: Adam's learning rate.
        buffer_factor: the dead-point buffer holds this many times the live points.
    """

    tolerance: float = 0.1
    width: int = 64
    depth: int = 2
    train_every: int = 10
    num_train_steps: int = 200
    learning_rate: float = 3e-3
    buffer_factor: int = 2


class LikelihoodNetwork(NamedTuple):
    """The emulator's weights and standardisation (arrays only, so it can live in a loop
    state; the network's structure comes from the settings, see :func:`emulate`).

    Attributes:
        mlp_weights: the MLP's arrays (``eqx.partition`` of it; ``None`` elsewhere).
        input_mean: ``(dim,)``.
        input_scale: ``(dim,)``.
        output_mean: a scalar.
        output_scale: a scalar.
    """

    mlp_weights: PyTree
    input_mean: Array
    input_scale: Array
    output_mean: Array
    output_scale: Array


class EmulatorState(NamedTuple):
    """The emulator, its optimizer and its training data.

    Attributes:
        network: the :class:`LikelihoodNetwork`.
        opt_state: Adam's state.
        buffer_positions: ``(B, dim)`` recent dead points (a ring buffer).
        buffer_loglikelihood: ``(B,)`` their log likelihoods (``-inf`` where empty).
        num_buffered: dead points written so far (the ring's write position).
        held_out_error: root mean squared error (nats) at the last training (``inf``
            before the first).
        is_ready: whether the held-out error is below the tolerance.
        num_iterations: nested-sampling iterations seen (trainings are every
            ``train_every``).
    """

    network: LikelihoodNetwork
    opt_state: optax.OptState
    buffer_positions: Array
    buffer_loglikelihood: Array
    num_buffered: Array
    held_out_error: Array
    is_ready: Array
    num_iterations: Array


def _optimizer(settings: Emulator) -> optax.GradientTransformation:
    return optax.adam(settings.learning_rate)


def _mlp(key: PRNGKeyArray, settings: Emulator, dim: int, dtype: jnp.dtype) -> eqx.nn.MLP:
    mlp = eqx.nn.MLP(dim, "scalar", settings.width, settings.depth, activation=jax.nn.gelu, key=key)
    return jax.tree.map(lambda x: x.astype(dtype) if eqx.is_inexact_array(x) else x, mlp)


def _mlp_structure(settings: Emulator, dim: int, dtype: jnp.dtype) -> eqx.nn.MLP:
    """The MLP's non-array parts (activations, sizes), to combine with stored weights."""
    return eqx.partition(_mlp(jax.random.key(0), settings, dim, dtype), eqx.is_inexact_array)[1]


def emulate(
    network: LikelihoodNetwork, settings: Emulator
) -> Callable[[Float[Array, " dim"]], Array]:
    """The emulated log likelihood of a flat position.

    Args:
        network: the trained weights and standardisation.
        settings: the :class:`Emulator` settings (the network's structure).

    Returns:
        ``flat -> log L`` (a scalar).
    """
    dim = network.input_mean.shape[0]
    mlp = eqx.combine(network.mlp_weights, _mlp_structure(settings, dim, network.input_mean.dtype))

    def loglikelihood(flat: Float[Array, " dim"]) -> Array:
        standardized = (flat - network.input_mean) / network.input_scale
        return mlp(standardized) * network.output_scale + network.output_mean

    return loglikelihood


def init_emulator(
    key: PRNGKeyArray, settings: Emulator, dim: int, num_live: int, dtype: jnp.dtype
) -> EmulatorState:
    """An untrained emulator with an empty dead-point buffer.

    Args:
        key: PRNG key for the network's weights.
        settings: the :class:`Emulator` settings.
        dim: the flat dimension.
        num_live: live points (the buffer holds ``buffer_factor`` times as many).
        dtype: the positions' dtype.

    Returns:
        The :class:`EmulatorState`.
    """
    weights = eqx.partition(_mlp(key, settings, dim, dtype), eqx.is_inexact_array)[0]
    network = LikelihoodNetwork(
        weights,
        jnp.zeros(dim, dtype),
        jnp.ones(dim, dtype),
        jnp.zeros((), dtype),
        jnp.ones((), dtype),
    )
    size = settings.buffer_factor * num_live
    return EmulatorState(
        network=network,
        opt_state=_optimizer(settings).init(weights),
        buffer_positions=jnp.zeros((size, dim), dtype),
        buffer_loglikelihood=jnp.full(size, -jnp.inf, dtype),
        num_buffered=jnp.zeros((), jnp.int32),
        held_out_error=jnp.full((), jnp.inf, dtype),
        is_ready=jnp.asarray(False),
        num_iterations=jnp.zeros((), jnp.int32),
    )


def add_dead_points(
    state: EmulatorState, positions: Float[Array, "k dim"], loglikelihood: Float[Array, " k"]
) -> EmulatorState:
    """Write dead points into the ring buffer (overwriting the oldest).

    Args:
        state: the emulator state.
        positions: ``(k, dim)`` flat dead points.
        loglikelihood: ``(k,)`` their log likelihoods.

    Returns:
        The state with the buffer updated.
    """
    size = state.buffer_loglikelihood.shape[0]
    slots = (state.num_buffered + jnp.arange(positions.shape[0])) % size
    return state._replace(
        buffer_positions=state.buffer_positions.at[slots].set(positions),
        buffer_loglikelihood=state.buffer_loglikelihood.at[slots].set(loglikelihood),
        num_buffered=state.num_buffered + positions.shape[0],
    )


def train_emulator(
    key: PRNGKeyArray,
    state: EmulatorState,
    settings: Emulator,
    live_positions: Float[Array, "n dim"],
    live_loglikelihood: Float[Array, " n"],
) -> EmulatorState:
    """Train on the buffer and most live points; score on the held-out live points.

    Args:
        key: PRNG key (the held-out split).
        state: the emulator state.
        settings: the :class:`Emulator` settings.
        live_positions: ``(n, dim)`` flat live points.
        live_loglikelihood: ``(n,)`` their log likelihoods.

    Returns:
        The state with new weights, held-out error and readiness.
    """
    num_live = live_loglikelihood.shape[0]
    num_held_out = max(1, int(HELD_OUT_FRACTION * num_live))
    is_held_out = (
        jnp.zeros(num_live, bool).at[jax.random.permutation(key, num_live)[:num_held_out]].set(True)
    )
    positions = jnp.concatenate([state.buffer_positions, live_positions])
    targets = jnp.concatenate([state.buffer_loglikelihood, live_loglikelihood])
    is_finite = jnp.isfinite(targets)
    is_training = is_finite & jnp.concatenate(
        [jnp.ones_like(state.buffer_loglikelihood, bool), ~is_held_out]
    )
    weights_of_points = is_training.astype(targets.dtype) / jnp.maximum(jnp.sum(is_training), 1)
    clean_targets = jnp.where(is_finite, targets, 0.0)

    # Standardisation: inputs by the live cloud, outputs by the training targets.
    input_mean = jnp.mean(live_positions, axis=0)
    input_scale = jnp.std(live_positions, axis=0) + jnp.finfo(targets.dtype).eps ** 0.5
    output_mean = jnp.sum(weights_of_points * clean_targets)
    spread = jnp.sum(weights_of_points * (clean_targets - output_mean) ** 2)
    output_scale = jnp.sqrt(spread) + 1e-6
    structure = _mlp_structure(settings, positions.shape[1], positions.dtype)
    standardized_inputs = (positions - input_mean[None, :]) / input_scale[None, :]
    standardized_targets = (clean_targets - output_mean) / output_scale
    optimizer = _optimizer(settings)

    def loss_fn(weights: PyTree) -> Array:
        predictions = jax.vmap(eqx.combine(weights, structure))(standardized_inputs)
        return jnp.sum(weights_of_points * (predictions - standardized_targets) ** 2)

    def train_step(
        carry: tuple[PyTree, optax.OptState], _: None
    ) -> tuple[tuple[PyTree, optax.OptState], None]:
        weights, opt_state = carry
        grads = jax.grad(loss_fn)(weights)
        updates, opt_state = optimizer.update(grads, opt_state)
        return (optax.apply_updates(weights, updates), opt_state), None

    (weights, opt_state), _ = jax.lax.scan(
        train_step,
        (state.network.mlp_weights, state.opt_state),
        None,
        length=settings.num_train_steps,
    )
    network = LikelihoodNetwork(weights, input_mean, input_scale, output_mean, output_scale)
    held_out = is_held_out & jnp.isfinite(live_loglikelihood)
    predictions = jax.vmap(emulate(network, settings))(live_positions)
    squared = jnp.where(held_out, (predictions - live_loglikelihood) ** 2, 0.0)
    error = jnp.sqrt(jnp.sum(squared) / jnp.maximum(jnp.sum(held_out), 1))
    return state._replace(
        network=network,
        opt_state=opt_state,
        held_out_error=error.astype(state.held_out_error.dtype),
        is_ready=error < settings.tolerance,
    )
