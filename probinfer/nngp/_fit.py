"""Hyperparameters by maximising the marginal likelihood (type-II maximum likelihood).

The weight and bias variances of every dense layer, the relative noise and the scale
prior's parameters are optimised on the log scale with optax (Adam with gradient clipping);
the depth is discrete, so each candidate depth is fitted and the best marginal likelihood
wins. The objective is exact for the plain GP and the inverse-gamma prior and uses the
differentiable fixed-node quadrature of :func:`probinfer.nngp.quadrature` otherwise.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike

from probinfer.nngp._checks import check_inputs
from probinfer.nngp._layers import mlp
from probinfer.nngp._process import ScaleMixtureProcess
from probinfer.nngp._scale_priors import (
    burr_xii,
    gamma,
    half_cauchy_std,
    inverse_gamma,
    log_normal,
)

# Scale-prior families: constructor and (parameter name, initial value, is_positive).
SCALE_PRIOR_FAMILIES: dict[str, tuple[Callable, tuple[tuple[str, float, bool], ...]]] = {
    "inverse_gamma": (inverse_gamma, (("concentration", 2.0, True), ("rate", 2.0, True))),
    "gamma": (gamma, (("concentration", 2.0, True), ("rate", 2.0, True))),
    "half_cauchy_std": (half_cauchy_std, (("scale", 1.0, True),)),
    "log_normal": (log_normal, (("loc", 0.0, False), ("scale", 1.0, True))),
    "burr_xii": (burr_xii, (("c", 2.0, True), ("k", 1.0, True), ("scale", 1.0, True))),
}


class FitResult(NamedTuple):
    """The outcome of :func:`fit_hyperparameters`.

    Attributes:
        process: the best process, ready for ``process.condition(x, y)``.
        depth: the chosen depth.
        log_marginal_likelihood: its log marginal likelihood (nats).
        parameters: the fitted values by name.
        losses: ``{depth: (num_steps,) negative log marginal likelihood per point}``.
    """

    process: ScaleMixtureProcess
    depth: int
    log_marginal_likelihood: float
    parameters: dict[str, float]
    losses: dict[int, np.ndarray]


def _unconstrained(values: dict[str, float], positive: dict[str, bool]) -> dict[str, Array]:
    return {k: jnp.log(v) if positive[k] else jnp.asarray(v, float) for k, v in values.items()}


def _constrained(params: dict[str, Array], positive: dict[str, bool]) -> dict[str, Array]:
    return {k: jnp.exp(v) if positive[k] else v for k, v in params.items()}


def fit_hyperparameters(
    x: ArrayLike,
    y: ArrayLike,
    *,
    depths: Sequence[int] = (1, 2, 3),
    activation: str = "relu",
    scale_prior: str | None = "inverse_gamma",
    init: dict[str, float] | None = None,
    num_steps: int = 300,
    learning_rate: float = 0.05,
    jitter: float = 1e-6,
) -> FitResult:
    """Fit an MLP kernel's variances, the noise and the scale prior by marginal likelihood.

    Args:
        x: inputs, ``(n, d)``.
        y: targets, ``(n,)``.
        depths: candidate numbers of hidden layers.
        activation: ``"relu"`` or ``"erf"``.
        scale_prior: a family in ``SCALE_PRIOR_FAMILIES`` or ``None`` for the plain GP.
        init: initial values by name (``weight_variance``, ``bias_variance``, ``noise``
            and the prior's parameters); defaults 2.0, 0.1, 0.1 and the family's defaults.
        num_steps: Adam steps per depth.
        learning_rate: Adam learning rate (on log parameters).
        jitter: diagonal jitter of the Cholesky factorisation.

    Returns:
        The :class:`FitResult`.

    Raises:
        ValueError: on an unknown family, empty depths or bad inputs.
    """
    check_inputs(x, "x")
    if scale_prior is not None and scale_prior not in SCALE_PRIOR_FAMILIES:
        raise ValueError(
            f"unknown scale-prior family {scale_prior!r}; use one of "
            f"{sorted(SCALE_PRIOR_FAMILIES)} or None."
        )
    if not depths:
        raise ValueError("`depths` must name at least one depth, e.g. (1, 2, 3).")
    values = {"weight_variance": 2.0, "bias_variance": 0.1, "noise": 0.1}
    positive = dict.fromkeys(values, True)
    if scale_prior is not None:
        _, spec = SCALE_PRIOR_FAMILIES[scale_prior]
        for name, value, is_positive in spec:
            values[f"prior_{name}"] = value
            positive[f"prior_{name}"] = is_positive
    unknown = set(init or {}) - set(values)
    if unknown:
        raise ValueError(f"unknown `init` names {sorted(unknown)}; valid: {sorted(values)}.")
    values.update(init or {})
    x = jnp.asarray(x, jnp.result_type(float))
    y = jnp.asarray(y, x.dtype)
    n = x.shape[0]
    positive_items = tuple(sorted(positive.items()))
    config = dict(
        activation=activation,
        scale_prior=scale_prior,
        positive_items=positive_items,
        num_steps=int(num_steps),
        learning_rate=float(learning_rate),
        jitter=float(jitter),
    )
    best: tuple[float, int, dict[str, Array]] | None = None
    losses: dict[int, np.ndarray] = {}
    for depth in depths:
        params, history, final = _train(
            _unconstrained(values, positive), x, y, depth=int(depth), **config
        )
        final = float(final)
        losses[int(depth)] = np.append(np.asarray(history), final)
        if np.isfinite(final) and (best is None or final < best[0]):
            best = (final, int(depth), params)
    if best is None:
        raise RuntimeError(
            "every depth gave a non-finite marginal likelihood; increase `jitter`, "
            "standardise `x` and `y`, or enable float64."
        )
    loss, depth, params = best
    fitted = {k: float(v) for k, v in _constrained(params, positive).items()}
    process = _build(params, depth, activation, scale_prior, positive_items, jitter)
    return FitResult(process, depth, -loss * n, fitted, losses)


def _build(
    params: dict[str, Array],
    depth: int,
    activation: str,
    scale_prior: str | None,
    positive_items: tuple[tuple[str, bool], ...],
    jitter: float,
) -> ScaleMixtureProcess:
    p = _constrained(params, dict(positive_items))
    kernel = mlp(
        depth,
        activation=activation,
        weight_variance=p["weight_variance"],
        bias_variance=p["bias_variance"],
    )
    prior = None
    if scale_prior is not None:
        constructor, spec = SCALE_PRIOR_FAMILIES[scale_prior]
        prior = constructor(*(p[f"prior_{name}"] for name, _, _ in spec))
    return ScaleMixtureProcess(kernel, prior, p["noise"], jitter=jitter)


@functools.partial(
    jax.jit,
    static_argnames=(
        "depth", "activation", "scale_prior", "positive_items", "num_steps", "learning_rate",
        "jitter",
    ),
)  # fmt: skip
def _train(
    params: dict[str, Array],
    x: Array,
    y: Array,
    *,
    depth: int,
    activation: str,
    scale_prior: str | None,
    positive_items: tuple[tuple[str, bool], ...],
    num_steps: int,
    learning_rate: float,
    jitter: float,
) -> tuple[dict[str, Array], Array, Array]:
    """Adam on the negative log marginal likelihood per point; compiled once per config."""
    optimizer = optax.chain(optax.clip_by_global_norm(10.0), optax.adam(learning_rate))

    def loss_fn(params: dict[str, Array]) -> Array:
        process = _build(params, depth, activation, scale_prior, positive_items, jitter)
        return -process.condition(x, y).log_marginal_likelihood() / x.shape[0]

    def step(
        carry: tuple[dict[str, Array], optax.OptState], _: None
    ) -> tuple[tuple[dict[str, Array], optax.OptState], Array]:
        params, opt_state = carry
        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = optimizer.update(grads, opt_state, params)
        # apply_updates returns a tree of the same structure as `params`.
        new_params = cast(dict[str, Array], optax.apply_updates(params, updates))
        return (new_params, opt_state), loss

    (params, _), history = jax.lax.scan(
        step, (params, optimizer.init(params)), None, length=num_steps
    )
    return params, history, loss_fn(params)
