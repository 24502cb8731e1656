"""Finite-width random networks that match a layer stack, for checking the kernels.

:func:`random_network` draws one network of the architecture a layer stack describes, in
the NTK parameterisation: every weight and bias is a standard normal parameter, and a dense
layer computes ``sqrt(weight_variance / fan_in) W x + sqrt(bias_variance) b``. Its output has
the distribution of the standard parameterisation, so as ``width -> infinity`` the output
covariance over random networks tends to the NNGP kernel, and the empirical NTK
``J(x) J(x')^T`` (``J`` the Jacobian in the parameters) tends to the NTK.

The scale-mixture prior multiplies the variance of the **last** dense layer's weights and
bias by ``output_scale``; drawing ``output_scale`` from a scale prior once per network gives
draws of the scale-mixture process ``f | s ~ GP(0, s K)``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

import equinox as eqx
import jax
import jax.numpy as jnp
from jaxtyping import Array, ArrayLike, Float, PRNGKeyArray

from probinfer.nngp._checks import check_positive
from probinfer.nngp._layers import (
    AbstractLayer,
    Dense,
    Elementwise,
    Erf,
    ReLU,
    Residual,
    Serial,
)


class DenseNetwork(eqx.Module):
    """One dense layer in the NTK parameterisation.

    Attributes:
        weight: ``(fan_out, fan_in)`` standard normal weights.
        bias: ``(fan_out,)`` standard normal biases.
        weight_std: ``sqrt(weight_variance * output_scale / fan_in)``.
        bias_std: ``sqrt(bias_variance * output_scale)``.
    """

    weight: Array
    bias: Array
    weight_std: Array
    bias_std: Array

    def __call__(self, x: Float[Array, " fan_in"]) -> Float[Array, " fan_out"]:
        """Apply the layer to one input vector."""
        return self.weight_std * (self.weight @ x) + self.bias_std * self.bias


class ActivationNetwork(eqx.Module):
    """An elementwise activation.

    Attributes:
        fn: the activation (static).
    """

    fn: Callable[[Array], Array] = eqx.field(static=True)

    def __call__(self, x: Array) -> Array:
        """Apply the activation."""
        return self.fn(x)


class SerialNetwork(eqx.Module):
    """Modules applied in order.

    Attributes:
        modules: the modules, input side first.
    """

    modules: tuple[_Network, ...]

    def __call__(self, x: Array) -> Array:
        """Apply every module."""
        for module in self.modules:
            x = module(x)
        return x


class ResidualNetwork(eqx.Module):
    """``x + branch(x)``.

    Attributes:
        branch: the residual branch.
    """

    branch: SerialNetwork

    def __call__(self, x: Array) -> Array:
        """Add the branch to the input."""
        return x + self.branch(x)


_Network: TypeAlias = DenseNetwork | ActivationNetwork | SerialNetwork | ResidualNetwork


def _build(
    layer: AbstractLayer, key: PRNGKeyArray, fan_in: int, width: int, output_scale: Array | None
) -> tuple[_Network, int]:
    """Build ``layer``; ``output_scale`` is set only for the network's final dense layer."""
    if isinstance(layer, Dense):
        fan_out = 1 if output_scale is not None else width
        scale = 1.0 if output_scale is None else output_scale
        key_w, key_b = jax.random.split(key)
        module = DenseNetwork(
            weight=jax.random.normal(key_w, (fan_out, fan_in)),
            bias=jax.random.normal(key_b, (fan_out,)),
            weight_std=jnp.sqrt(layer.weight_variance * scale / fan_in),
            bias_std=jnp.sqrt(layer.bias_variance * scale),
        )
        return module, fan_out
    if isinstance(layer, ReLU):
        return ActivationNetwork(jax.nn.relu), fan_in
    if isinstance(layer, Erf):
        return ActivationNetwork(jax.scipy.special.erf), fan_in
    if isinstance(layer, Elementwise):
        return ActivationNetwork(layer.fn), fan_in
    if isinstance(layer, Residual):
        branch, fan_out = _build_serial(layer.branch, key, fan_in, fan_in, None)
        return ResidualNetwork(branch), fan_out
    if isinstance(layer, Serial):
        return _build_serial(layer, key, fan_in, width, output_scale)
    raise TypeError(f"no finite-width network for layer type {type(layer).__name__}.")


def _build_serial(
    layer: Serial, key: PRNGKeyArray, fan_in: int, width: int, output_scale: Array | None
) -> tuple[SerialNetwork, int]:
    """Build a :class:`Serial` stack; ``output_scale`` goes to its last layer."""
    modules = []
    keys = jax.random.split(key, max(1, len(layer.layers)))
    for index, (sub_layer, sub_key) in enumerate(zip(layer.layers, keys, strict=False)):
        is_last = index == len(layer.layers) - 1
        module, fan_in = _build(
            sub_layer, sub_key, fan_in, width, output_scale if is_last else None
        )
        modules.append(module)
    return SerialNetwork(tuple(modules)), fan_in


def random_network(
    key: PRNGKeyArray,
    layer: AbstractLayer,
    num_features: int,
    *,
    width: int,
    output_scale: ArrayLike = 1.0,
) -> eqx.Module:
    """Draw one finite-width network of the architecture ``layer`` describes.

    Args:
        key: PRNG key for the weights and biases.
        layer: the layer stack; it must end in a dense layer (the scalar output).
        num_features: input dimension ``d``.
        width: width of every hidden layer.
        output_scale: ``s``, multiplying the variance of the last dense layer's weights and
            bias (the scale-mixture prior's draw for this network).

    Returns:
        An equinox module mapping one input ``(d,)`` to a ``(1,)`` output; ``vmap`` it over
        inputs.

    Raises:
        ValueError: if the stack does not end in a dense layer, or on a bad width or scale.
    """
    last = layer
    while isinstance(last, Serial) and last.layers:
        last = last.layers[-1]
    if not isinstance(last, Dense):
        raise ValueError(
            "`random_network` needs a stack that ends in a dense layer (the output layer); "
            "append `nngp.dense(...)`."
        )
    if int(width) < 1 or int(num_features) < 1:
        raise ValueError(f"`width` and `num_features` must be >= 1, got {width}, {num_features}.")
    check_positive(output_scale, "output_scale")
    module, _ = _build(layer, key, int(num_features), int(width), jnp.asarray(output_scale))
    return module
