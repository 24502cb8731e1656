"""Hyperparameters by maximising the marginal likelihood (type-II maximum likelihood).

The weight and bias variances of every dense layer, the relative noise and the scale
prior's parameters are optimised on the log scale with optax (Adam with gradient clipping);
the depth is discrete, so each candidate depth is fitted and the best marginal likelihood
wins. The objective is exact for the plain GP and the inverse-gamma prior and uses the
differentiable fixed-node quadrature of :func:`probinfer.nngp.quadrature` otherwise.

One program fits every candidate depth: the depth is a runtime index that picks the
kernel's layer stack (``lax.switch``, which runs and differentiates only the chosen
branch), so the Cholesky, the marginal likelihood, its gradient and Adam compile once, not
once per depth (the README's three-depth fit and prediction, first call in a fresh process:
11.5-12.7 -> 8.7-9.7 s, three runs each, interleaved; nearly all of it is compiling).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple, cast

import jax
import jax.numpy as jnp
import numpy as np
import optax
from jaxtyping import Array, ArrayLike, PRNGKeyArray

from probinfer._validation import check_count
from probinfer.driver import drive, progress_bar
from probinfer.nngp._checks import check_inputs
from probinfer.nngp._kernel import KernelState
from probinfer.nngp._layers import AbstractLayer, mlp
from probinfer.nngp._process import ScaleMixtureProcess, _check_targets
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
# Adam steps per compiled chunk: the progress bar moves between chunks.
STEPS_PER_CHUNK = 25
# Above this many points without `max_points`, a warning: each step factorises an n x n
# matrix (O(n^3) time, O(n^2) memory; a 2,000-point fit took 830 s, docs/nngp.md).
LARGE_FIT = 10_000


class FitResult(NamedTuple):
    """The outcome of :func:`fit_hyperparameters`.

    Attributes:
        process: the best process, ready for ``process.condition(x, y)``.
        depth: the chosen depth.
        log_marginal_likelihood: its log marginal likelihood (nats) on the points fitted.
        parameters: the fitted values by name.
        losses: ``{depth: (num_steps + 1,) negative log marginal likelihood per point}``,
            before each step and after the last.
        num_points: the points fitted (``max_points`` of them when there were more).
    """

    process: ScaleMixtureProcess
    depth: int
    log_marginal_likelihood: float
    parameters: dict[str, float]
    losses: dict[int, np.ndarray]
    num_points: int


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
    max_points: int | None = None,
    seed: int = 0,
    progress: bool = True,
) -> FitResult:
    """Fit an MLP kernel's variances, the noise and the scale prior by marginal likelihood.

    Each step factorises the ``n x n`` covariance (``O(n^3)``): beyond a few thousand points
    pass ``max_points`` to fit on a random subset of that many points, then condition the
    fitted process on all the data yourself (``fit.process.condition(x, y)``, or
    ``condition_inducing`` for large ``n``).

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
        max_points: fit on a random subset of this many points when there are more
            (``FitResult.num_points`` says how many were used); ``None``: all of them (a
            warning above 10,000 points).
        seed: integer seed of the subset's choice.
        progress: show a progress bar per depth.

    Returns:
        The :class:`FitResult`.

    Raises:
        ValueError: on an unknown family, empty depths, bad inputs, ``y`` not one finite
            target per row of ``x``, ``num_steps`` below 1, a negative ``seed`` or a
            ``max_points`` below 2.
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
    num_steps = check_count("num_steps", num_steps, 1)
    seed = check_count("seed", seed, 0)
    _check_targets(np.asarray(x), y)
    x = jnp.asarray(x, jnp.result_type(float))
    y = jnp.asarray(y, x.dtype)
    if max_points is not None:
        max_points = check_count("max_points", max_points, 2)
        if x.shape[0] > max_points:
            rows = jax.random.choice(jax.random.key(seed), x.shape[0], (max_points,), replace=False)
            x, y = x[rows], y[rows]
    elif x.shape[0] > LARGE_FIT:
        warnings.warn(
            f"fitting on all {x.shape[0]:,} points factorises a {x.shape[0]:,} x "
            f"{x.shape[0]:,} matrix at every step; pass `max_points` (e.g. 2000) to fit on "
            "a random subset, then condition the fitted process on all points.",
            UserWarning,
            stacklevel=2,
        )
    n = x.shape[0]
    positive_items = tuple(sorted(positive.items()))
    best: tuple[float, int, dict[str, Array]] | None = None
    losses: dict[int, np.ndarray] = {}
    candidates = tuple(int(depth) for depth in depths)
    step = _AdamStep(
        candidates, activation, scale_prior, positive_items, float(jitter), float(learning_rate)
    )
    for index, depth in enumerate(candidates):
        params = _unconstrained(values, positive)
        # The depth is an argument of the one compiled program, not part of its key.
        shared = (x, y, jnp.asarray(index, jnp.int32))
        with progress_bar(progress, num_steps, f"ML-II, depth {depth}") as bar:
            fit = drive(
                step,
                (params, step.optimizer().init(params)),
                jax.random.key(0),  # the steps are deterministic
                shared=shared,
                num_steps=num_steps,
                chunk_size=STEPS_PER_CHUNK,
                progress=bar,
                progress_fn=lambda history: {"-log ML per point": float(history[-1])},
                description=f"ML-II, depth {depth}",
            )
        params, history = fit.state[0], fit.records
        # Compiled, as the steps: a diverged depth gives a NaN here (skipped below), where an
        # eager evaluation would fail the value checks of the process's constructors.
        final = float(_final_loss(step, params, shared))
        losses[depth] = np.append(np.asarray(history), final)
        if np.isfinite(final) and (best is None or final < best[0]):
            best = (final, depth, params)
    if best is None:
        raise RuntimeError(
            "every depth gave a non-finite marginal likelihood; increase `jitter`, "
            "standardise `x` and `y`, or enable float64."
        )
    loss, depth, params = best
    fitted = {k: float(v) for k, v in _constrained(params, positive).items()}
    process = _build(params, (depth,), 0, activation, scale_prior, positive_items, jitter)
    return FitResult(process, depth, -loss * n, fitted, losses, n)


def _build(
    params: dict[str, Array],
    depths: tuple[int, ...],
    index: int | Array,
    activation: str,
    scale_prior: str | None,
    positive_items: tuple[tuple[str, bool], ...],
    jitter: float,
) -> ScaleMixtureProcess:
    """The process of ``params`` at depth ``depths[index]``: a plain stack for a Python
    ``index``, the switch among all the candidates' stacks for a runtime (array) one."""
    p = _constrained(params, dict(positive_items))
    variances = {"weight_variance": p["weight_variance"], "bias_variance": p["bias_variance"]}
    if isinstance(index, int):
        kernel: AbstractLayer = mlp(depths[index], activation=activation, **variances)
    else:
        stacks = tuple(mlp(d, activation=activation, **variances) for d in depths)
        kernel = _DepthSwitch(stacks, index)
    prior = None
    if scale_prior is not None:
        constructor, spec = SCALE_PRIOR_FAMILIES[scale_prior]
        prior = constructor(*(p[f"prior_{name}"] for name, _, _ in spec))
    return ScaleMixtureProcess(kernel, prior, p["noise"], jitter=jitter)


class _DepthSwitch(AbstractLayer):
    """The layer stack that a runtime index picks among candidate depths' stacks.

    ``lax.switch`` runs (and differentiates) the chosen stack only: a deeper, unused stack
    cannot overflow into the chosen one's gradient, as a select over all of them could.
    """

    stacks: tuple[AbstractLayer, ...]
    index: Array

    @property
    def memory_factor(self) -> int:
        return max(stack.memory_factor for stack in self.stacks)

    @property
    def needs_resolution(self) -> bool:
        # Traced (as in the fit), quadrature layers keep their traced node count anyway.
        return any(stack.needs_resolution for stack in self.stacks)

    def apply(self, state: KernelState) -> KernelState:
        # The stacks go in as operands: they hold traced variances, and switch's branches
        # must be plain functions.
        branches = [functools.partial(_apply_stack, i) for i in range(len(self.stacks))]
        return jax.lax.switch(self.index, branches, self.stacks, state)


def _apply_stack(which: int, stacks: tuple[AbstractLayer, ...], state: KernelState) -> KernelState:
    return stacks[which].apply(state)


@functools.partial(jax.jit, static_argnums=0)
def _final_loss(
    step: _AdamStep, params: dict[str, Array], shared: tuple[Array, Array, Array]
) -> Array:
    return step.loss(params, *shared)


class _AdamStep(NamedTuple):
    """One Adam step on the negative log marginal likelihood per point, at the candidate
    depth that ``shared``'s index picks (hashable: it keys the compiled chunk of
    :func:`probinfer.driver.drive`: one program for all the candidates)."""

    depths: tuple[int, ...]
    activation: str
    scale_prior: str | None
    positive_items: tuple[tuple[str, bool], ...]
    jitter: float
    learning_rate: float

    def optimizer(self) -> optax.GradientTransformation:
        return optax.chain(optax.clip_by_global_norm(10.0), optax.adam(self.learning_rate))

    def loss(self, params: dict[str, Array], x: Array, y: Array, depth_index: Array) -> Array:
        process = _build(
            params, self.depths, depth_index, self.activation, self.scale_prior,
            self.positive_items, self.jitter,
        )  # fmt: skip
        return -process.condition(x, y).log_marginal_likelihood() / x.shape[0]

    def __call__(
        self, key: PRNGKeyArray, state: tuple[dict[str, Array], Any], index: Array,
        shared: tuple[Array, Array, Array],
    ) -> tuple[tuple[dict[str, Array], Any], Array]:  # fmt: skip
        params, opt_state = state
        loss, grads = jax.value_and_grad(self.loss)(params, *shared)
        updates, opt_state = self.optimizer().update(grads, opt_state, params)
        # apply_updates returns a tree of the same structure as `params`.
        new_params = cast(dict[str, Array], optax.apply_updates(params, updates))
        return (new_params, opt_state), loss
