"""Infinite-width covariance recursions, one layer at a time.

A fully connected network maps its input ``x`` (``d`` features) through layers. In the
limit of infinite width every pre-activation is a Gaussian process, and the covariance of
two inputs' pre-activations, ``k(x, x')``, follows a recursion that only needs the pair's
covariance and the two variances (Neal, 1996; Lee et al., 2018; Matthews et al., 2018):

    input:       k0(x, x') = x . x' / d
    dense:       k'(x, x') = weight_variance * k(x, x') + bias_variance
    activation:  k'(x, x') = E[phi(u) phi(v)],  (u, v) ~ N(0, [[k(x,x), k(x,x')], [., k(x',x')]])

The neural tangent kernel (Jacot et al., 2018) of the same network under the NTK
parameterisation follows alongside it:

    dense:       ntk' = weight_variance * ntk + k'
    activation:  ntk' = ntk * E[phi'(u) phi'(v)]

Each layer here acts **elementwise** on a :class:`KernelState` (the pair covariance, the two
variances and the NTK), so the same code computes a full matrix, a block of it, or the
diagonal, and a whole network's kernel can be evaluated block by block.
"""

from __future__ import annotations

import abc
from collections.abc import Callable

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, ArrayLike, Float

from probinfer.nngp._checks import check_positive
from probinfer.nngp._kernel import (
    AbstractKernel,
    KernelKind,
    KernelState,
    kernel_diagonal,
    kernel_matrix,
)


class AbstractLayer(AbstractKernel):
    """A layer of an infinitely wide network, and the kernel of the network it ends.

    ``apply`` maps a :class:`KernelState` through the layer. Calling a layer (usually a
    :func:`serial` stack) on inputs evaluates the kernel of the network it describes:
    ``kernel(x1, x2)`` is the NNGP covariance matrix, ``kernel.ntk(x1, x2)`` the NTK and
    ``kernel.diagonal(x)`` the variances. Layers are pytrees, so their variances can be
    differentiated (for marginal-likelihood fits) and the whole kernel can be jitted.
    """

    @abc.abstractmethod
    def apply(self, state: KernelState) -> KernelState:
        """Return the state after this layer."""

    @property
    def memory_factor(self) -> int:
        """Temporaries per pair of inputs, relative to one matrix (sizes the row blocks)."""
        return 1

    def __call__(
        self,
        x1: Float[ArrayLike, "n1 d"],
        x2: Float[ArrayLike, "n2 d"] | None = None,
        *,
        block_size: int | None = None,
    ) -> Float[Array, "n1 n2"]:
        """The NNGP kernel matrix between the rows of ``x1`` and ``x2`` (default ``x1``).

        Args:
            x1: inputs, ``(n1, d)``.
            x2: inputs, ``(n2, d)``; ``None`` means ``x1``.
            block_size: rows per block (memory control); see :func:`kernel_matrix`.

        Returns:
            The ``(n1, n2)`` covariance of the infinitely wide network's outputs.
        """
        return kernel_matrix(self, x1, x2, kind="nngp", block_size=block_size)

    def ntk(
        self,
        x1: Float[ArrayLike, "n1 d"],
        x2: Float[ArrayLike, "n2 d"] | None = None,
        *,
        block_size: int | None = None,
    ) -> Float[Array, "n1 n2"]:
        """The neural tangent kernel matrix (NTK parameterisation).

        Args:
            x1: inputs, ``(n1, d)``.
            x2: inputs, ``(n2, d)``; ``None`` means ``x1``.
            block_size: rows per block (memory control).

        Returns:
            The ``(n1, n2)`` NTK.
        """
        return kernel_matrix(self, x1, x2, kind="ntk", block_size=block_size)

    def diagonal(
        self, x: Float[ArrayLike, "n d"], *, kind: KernelKind = "nngp"
    ) -> Float[Array, " n"]:
        """``k(x_i, x_i)`` for every row, without forming the matrix.

        Args:
            x: inputs, ``(n, d)``.
            kind: ``"nngp"`` or ``"ntk"``.

        Returns:
            The ``(n,)`` diagonal.
        """
        return kernel_diagonal(self, x, kind=kind)


def _as_parameter(value: ArrayLike, name: str) -> Array:
    check_positive(value, name, allow_zero=name == "bias_variance")
    return jnp.asarray(value, dtype=jnp.result_type(float))


class Dense(AbstractLayer):
    """A fully connected layer with weights ``N(0, weight_variance / fan_in)``.

    Attributes:
        weight_variance: ``sigma_w^2`` (> 0), the weight variance times the fan-in.
        bias_variance: ``sigma_b^2`` (>= 0), the bias variance.
    """

    weight_variance: Array
    bias_variance: Array

    def __init__(self, weight_variance: ArrayLike = 1.0, bias_variance: ArrayLike = 0.0) -> None:
        self.weight_variance = _as_parameter(weight_variance, "weight_variance")
        self.bias_variance = _as_parameter(bias_variance, "bias_variance")

    def apply(self, state: KernelState) -> KernelState:
        """Apply ``k' = weight_variance * k + bias_variance`` and the NTK update."""
        w, b = self.weight_variance, self.bias_variance
        cov = w * state.cov + b
        return KernelState(cov, w * state.var1 + b, w * state.var2 + b, w * state.ntk + cov)


def _safe_sqrt(value: Array) -> Array:
    """``sqrt(max(value, 0))`` with a zero (not NaN) gradient at zero."""
    is_positive = value > 0
    return jnp.where(is_positive, jnp.sqrt(jnp.where(is_positive, value, 1.0)), 0.0)


def _correlation(state: KernelState) -> tuple[Array, Array]:
    """Return ``sqrt(var1 var2)`` and the correlation, clipped inside (-1, 1).

    The clip keeps ``arccos`` differentiable on the diagonal (correlation exactly 1), where
    its derivative is infinite; the value changes by far less than the dtype's resolution.
    """
    # where-safe sqrt and division: a zero variance (zero input, no bias) must not make the
    # gradient NaN through sqrt'(0) times a zero cotangent.
    product = state.var1 * state.var2
    is_positive = product > 0
    safe_product = jnp.where(is_positive, product, 1.0)
    norm = jnp.where(is_positive, jnp.sqrt(safe_product), 0.0)
    bound = 1.0 - jnp.finfo(state.cov.dtype).eps
    correlation = jnp.where(is_positive, state.cov / jnp.sqrt(safe_product), 0.0)
    return norm, jnp.clip(correlation, -bound, bound)


# Abramowitz & Stegun 4.4.46: arccos(x) = sqrt(1 - x) * sum_k a_k x^k + e, |e| <= 2e-8 on
# [0, 1]. XLA's CPU arccos is scalar code (~20x slower than a fused polynomial on 16M
# elements), and 2e-8 is below float32's resolution near pi, so float32 uses this form;
# float64 keeps the exact function.
_ARCCOS_COEFFICIENTS = (
    1.5707963050, -0.2145988016, 0.0889789874, -0.0501743046,
    0.0308918810, -0.0170881256, 0.0066700901, -0.0012624911,
)  # fmt: skip


def arccos(x: Array) -> Array:
    """``arccos(x)`` on ``[-1, 1]``: a fused polynomial in float32, exact in float64."""
    if x.dtype == jnp.float64:
        return jnp.arccos(x)
    magnitude = jnp.abs(x)
    polynomial = jnp.zeros_like(x)
    for coefficient in reversed(_ARCCOS_COEFFICIENTS):
        polynomial = polynomial * magnitude + coefficient
    positive = jnp.sqrt(1.0 - magnitude) * polynomial
    return jnp.where(x >= 0, positive, jnp.pi - positive)


class ReLU(AbstractLayer):
    """``phi(u) = max(u, 0)``, in closed form (the arc-cosine kernel, Cho & Saul, 2009).

    ``E[phi(u) phi(v)] = sqrt(k11 k22) (sin t + (pi - t) cos t) / (2 pi)`` with
    ``cos t = k12 / sqrt(k11 k22)``, and ``E[phi'(u) phi'(v)] = (pi - t) / (2 pi)``.
    """

    def apply(self, state: KernelState) -> KernelState:
        """Apply the arc-cosine recursion."""
        norm, correlation = _correlation(state)
        theta = arccos(correlation)
        sin_theta = jnp.sqrt(1.0 - correlation**2)
        cov = norm * (sin_theta + (jnp.pi - theta) * correlation) / (2 * jnp.pi)
        derivative = (jnp.pi - theta) / (2 * jnp.pi)
        return KernelState(cov, state.var1 / 2, state.var2 / 2, state.ntk * derivative)


class Erf(AbstractLayer):
    """``phi(u) = erf(u)``, in closed form (Williams, 1997).

    ``E[phi(u) phi(v)] = (2/pi) arcsin(2 k12 / sqrt((1 + 2 k11)(1 + 2 k22)))`` and
    ``E[phi'(u) phi'(v)] = (4/pi) / sqrt((1 + 2 k11)(1 + 2 k22) - 4 k12^2)``.
    """

    def apply(self, state: KernelState) -> KernelState:
        """Apply the erf recursion."""
        a1, a2 = 1 + 2 * state.var1, 1 + 2 * state.var2

        def second_moment(cov: Array, denominator: Array) -> Array:
            # arcsin(u) = pi/2 - arccos(u)
            return (2 / jnp.pi) * (jnp.pi / 2 - arccos(2 * cov / jnp.sqrt(denominator)))

        cov = second_moment(state.cov, a1 * a2)
        derivative = (4 / jnp.pi) / jnp.sqrt(a1 * a2 - 4 * state.cov**2)
        return KernelState(
            cov,
            second_moment(state.var1, a1 * a1),
            second_moment(state.var2, a2 * a2),
            state.ntk * derivative,
        )


class Elementwise(AbstractLayer):
    """Any elementwise activation, by Gauss-Hermite quadrature over the bivariate Gaussian.

    With ``u = sqrt(k11) z1`` and ``v = sqrt(k22) (rho z1 + sqrt(1 - rho^2) z2)``,
    ``E[phi(u) phi(v)] ~ sum_ab w_a w_b phi(u_a) phi(v_ab)`` over ``num_points^2`` nodes;
    the derivative expectation uses ``jax.grad(phi)``. Exact for polynomials of degree
    < ``2 num_points``; for a kink (ReLU) the error falls only like ``1 / num_points``, so
    prefer the closed-form layers where they exist.

    Attributes:
        fn: the activation, a scalar function applied elementwise (static).
        num_points: Gauss-Hermite nodes per dimension (static).
    """

    fn: Callable[[Array], Array] = eqx.field(static=True)
    num_points: int = eqx.field(static=True)

    def __init__(self, fn: Callable[[Array], Array], num_points: int = 32) -> None:
        if not callable(fn):
            raise TypeError(f"`fn` must be a callable activation, got {type(fn).__name__}.")
        if int(num_points) < 2:
            raise ValueError(f"`num_points` must be >= 2, got {num_points}; 32 is a good default.")
        self.fn = fn
        self.num_points = int(num_points)

    @property
    def memory_factor(self) -> int:
        """One temporary per quadrature node of the inner sum."""
        return self.num_points

    def apply(self, state: KernelState) -> KernelState:
        """Apply the quadrature recursion."""
        dtype = state.cov.dtype
        nodes_np, weights_np = np.polynomial.hermite_e.hermegauss(self.num_points)
        nodes = jnp.asarray(nodes_np, dtype)
        weights = jnp.asarray(weights_np / np.sqrt(2 * np.pi), dtype)
        scalar_derivative = jax.grad(self.fn)

        def derivative(u: Array) -> Array:
            return jax.vmap(scalar_derivative)(u.reshape(-1)).reshape(u.shape)

        def expectation(fn: Callable[[Array], Array], cov: Array, v1: Array, v2: Array) -> Array:
            """``E[fn(u) fn(v)]``: a scan over the outer node keeps memory at one node axis."""
            s1, s2 = _safe_sqrt(v1), _safe_sqrt(v2)
            norm = s1 * s2
            # Strictly inside (-1, 1): sqrt(1 - rho^2) has an infinite derivative at 1.
            bound = 1.0 - jnp.finfo(cov.dtype).eps
            rho = jnp.clip(cov / jnp.where(norm > 0, norm, 1.0), -bound, bound)
            rho_c = jnp.sqrt(1 - rho**2)

            def outer(total: Array, node_weight: tuple[Array, Array]) -> tuple[Array, None]:
                z1, w1 = node_weight
                inner_nodes = nodes.reshape((1,) * rho.ndim + (-1,))
                v = s2[..., None] * (rho[..., None] * z1 + rho_c[..., None] * inner_nodes)
                inner = fn(v) @ weights
                return total + w1 * fn(s1 * z1) * inner, None

            total, _ = jax.lax.scan(outer, jnp.zeros_like(rho), (nodes, weights))
            return total

        shape = jnp.broadcast_shapes(state.cov.shape, state.var1.shape, state.var2.shape)
        v1 = jnp.broadcast_to(state.var1, shape)
        v2 = jnp.broadcast_to(state.var2, shape)
        cov = expectation(self.fn, state.cov, v1, v2)
        ntk_factor = expectation(derivative, state.cov, v1, v2)
        var1 = expectation(self.fn, state.var1, state.var1, state.var1)
        var2 = expectation(self.fn, state.var2, state.var2, state.var2)
        return KernelState(cov, var1, var2, state.ntk * ntk_factor)


class Serial(AbstractLayer):
    """Layers applied one after another.

    Attributes:
        layers: the layers, first to last.
    """

    layers: tuple[AbstractLayer, ...]

    def __init__(self, *layers: AbstractLayer) -> None:
        for index, layer in enumerate(layers):
            if not isinstance(layer, AbstractLayer):
                raise TypeError(
                    f"layer {index} of `serial` is a {type(layer).__name__}, not a layer; "
                    "build layers with `nngp.dense`, `nngp.relu`, `nngp.erf`, "
                    "`nngp.elementwise`, `nngp.residual` or `nngp.serial`."
                )
        self.layers = tuple(layers)

    @property
    def memory_factor(self) -> int:
        """The largest factor of the layers."""
        return max((layer.memory_factor for layer in self.layers), default=1)

    def apply(self, state: KernelState) -> KernelState:
        """Apply every layer in order."""
        for layer in self.layers:
            state = layer.apply(state)
        return state


class Residual(AbstractLayer):
    """A residual block ``x + f(x)`` whose branch ``f`` ends in a dense layer.

    The branch's last weights are zero-mean and independent of ``x``, so the cross terms
    vanish and the covariances add: ``k' = k + k_f`` (and likewise the NTK).

    Attributes:
        branch: the residual branch.
    """

    branch: Serial

    def __init__(self, *layers: AbstractLayer) -> None:
        branch = Serial(*layers)
        if not branch.layers or not isinstance(_last_leaf(branch), Dense):
            raise ValueError(
                "the branch of `residual` must end in a dense layer (its zero-mean weights "
                "make the skip and the branch uncorrelated); append `nngp.dense(...)`."
            )
        self.branch = branch

    @property
    def memory_factor(self) -> int:
        """The branch's factor."""
        return self.branch.memory_factor

    def apply(self, state: KernelState) -> KernelState:
        """Add the branch's covariances to the skip connection's."""
        out = self.branch.apply(state)
        return KernelState(*(a + b for a, b in zip(state, out, strict=True)))


def _last_leaf(layer: AbstractLayer) -> AbstractLayer | None:
    while isinstance(layer, Serial):
        if not layer.layers:
            return None
        layer = layer.layers[-1]
    return layer


def dense(weight_variance: ArrayLike = 1.0, bias_variance: ArrayLike = 0.0) -> Dense:
    """A fully connected layer; see :class:`Dense`.

    Args:
        weight_variance: ``sigma_w^2 > 0``; weights are ``N(0, sigma_w^2 / fan_in)``.
        bias_variance: ``sigma_b^2 >= 0``; biases are ``N(0, sigma_b^2)``.

    Returns:
        The layer.

    Raises:
        ValueError: if a variance is negative (or the weight variance zero) or not finite.
    """
    return Dense(weight_variance, bias_variance)


def relu() -> ReLU:
    """The ReLU activation (closed-form arc-cosine recursion)."""
    return ReLU()


def erf() -> Erf:
    """The erf activation (closed form)."""
    return Erf()


def elementwise(fn: Callable[[Array], Array], *, num_points: int = 32) -> Elementwise:
    """Any elementwise activation, by Gauss-Hermite quadrature; see :class:`Elementwise`.

    Args:
        fn: the activation; must work elementwise on arrays and on scalars (for its
            derivative), for example ``jnp.tanh``.
        num_points: quadrature nodes per dimension.

    Returns:
        The layer.
    """
    return Elementwise(fn, num_points)


def serial(*layers: AbstractLayer) -> Serial:
    """Compose layers in order; the result is a layer and a kernel function.

    Args:
        *layers: the layers, input side first.

    Returns:
        The stack; call it on inputs for the NNGP matrix.

    Example:
        >>> import jax.numpy as jnp
        >>> from probinfer import nngp
        >>> kernel = nngp.serial(nngp.dense(2.0, 0.1), nngp.relu(), nngp.dense(2.0, 0.1))
        >>> kernel(jnp.ones((3, 2))).shape
        (3, 3)
    """
    return Serial(*layers)


def residual(*layers: AbstractLayer) -> Residual:
    """A residual block ``x + f(x)``; see :class:`Residual`.

    Args:
        *layers: the branch ``f``; it must end in a dense layer.

    Returns:
        The block.
    """
    return Residual(*layers)


_ACTIVATIONS: dict[str, Callable[[], AbstractLayer]] = {"relu": ReLU, "erf": Erf}


def mlp(
    depth: int,
    *,
    activation: str | Callable[[Array], Array] = "relu",
    weight_variance: ArrayLike = 2.0,
    bias_variance: ArrayLike = 0.05,
) -> Serial:
    """The kernel of a fully connected network with ``depth`` hidden layers.

    ``serial(dense, act, dense, act, ..., dense)`` with ``depth`` activations and the same
    variances in every dense layer.

    Args:
        depth: number of hidden layers (>= 0; 0 gives the linear kernel).
        activation: ``"relu"``, ``"erf"`` or an elementwise callable (by quadrature).
        weight_variance: ``sigma_w^2`` of every dense layer.
        bias_variance: ``sigma_b^2`` of every dense layer.

    Returns:
        The kernel (a :class:`Serial` stack).

    Raises:
        ValueError: on a negative depth or an unknown activation name.
    """
    if int(depth) != depth or depth < 0:
        raise ValueError(f"`depth` must be a non-negative integer, got {depth!r}.")
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"unknown activation {activation!r}; use one of {sorted(_ACTIVATIONS)} or pass "
                "an elementwise callable such as `jnp.tanh`."
            )
        make_activation = _ACTIVATIONS[activation]
    else:
        fn = activation

        def make_activation() -> AbstractLayer:
            return Elementwise(fn)

    layers: list[AbstractLayer] = [Dense(weight_variance, bias_variance)]
    for _ in range(int(depth)):
        layers += [make_activation(), Dense(weight_variance, bias_variance)]
    return Serial(*layers)
