"""`Algorithm`: one factory per MCMC algorithm that also exposes its raw pieces.

``probinfer.mcmc.nuts`` is an :class:`Algorithm`. Calling it closes the raw kernel over a
target and parameters and returns a :class:`~probinfer.mcmc.Kernel`; its ``init``,
``build_kernel`` and ``params_type`` are the raw pieces that adaptation, SMC and nested
sampling use, because they change the parameters between steps.

Each algorithm's tunable parameters are one ``NamedTuple`` (``NUTSParams``, ``HMCParams``,
...): the raw kernel is ``kernel(key, state, logdensity_fn, params)``. Options are declared,
not read from signatures: *build options* (fixed when the kernel is built, e.g.
``max_num_doublings``) and the parameter fields (e.g. ``num_integration_steps``). An
unknown or misspelled option is an error that lists the valid ones.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray

from probinfer._validation import is_real_dtype
from probinfer.mcmc._base import (
    Kernel,
    KernelStages,
    LogDensityFn,
    PyTree,
    RawKernel,
    kernel_from_stages,
    one_shot_stages,
)

# The parameters every gradient and random-walk algorithm shares; adaptation tunes them.
TUNED_PARAMETERS = ("step_size", "inverse_mass_matrix")


METRICS = ("diag", "dense")
# NUTS and HMC adapt a dense metric up to this flat dimension by default (see docs/mcmc.md).
DENSE_MASS_MATRIX_MAX_DIM = 200


def check_metric(metric: str | None) -> None:
    """Reject a metric setting other than ``"diag"``, ``"dense"`` or None (the default rule).

    Raises:
        ValueError: naming the valid values.
    """
    if metric is not None and metric not in METRICS:
        raise ValueError(
            f"`metric` must be 'diag' (a diagonal inverse mass matrix), 'dense' (the full "
            f"covariance) or None (the algorithm's default by dimension), got {metric!r}."
        )


class Algorithm:
    """An MCMC algorithm: ``init``, ``build_kernel``, ``params_type`` and the factory.

    Attributes:
        name: short name ("rwm", "mala", "hmc", "nuts", "slice").
        init: ``init(position, logdensity_fn) -> State``.
        build_kernel: ``build_kernel(**build_options) -> kernel`` with
            ``kernel(key, state, logdensity_fn, params)``.
        build_stages: ``build_stages(**build_options) -> KernelStages`` for an algorithm
            whose transitions differ in cost (HMC with a jittered length, NUTS), or None;
            see :meth:`stages`.
        params_type: the ``NamedTuple`` of the kernel's parameters (``step_size``,
            ``inverse_mass_matrix`` and the algorithm's own, with defaults).
        build_options: the names ``build_kernel`` accepts.
        target_acceptance: default acceptance rate that step-size adaptation aims for, or
            None for an algorithm without one (slice sampling always moves).
        uses_gradient: whether the kernel evaluates gradients of the log density.
        dense_metric_max_dim: window adaptation's default metric is dense up to this flat
            dimension and diagonal above it (0: always diagonal).
        has_cumulative_warmup: window adaptation estimates a diagonal metric from every
            slow draw after the first window (not from the last window alone), shrinks a
            dense one toward its diagonal, and adapts the step size continuously (no
            restart after a new metric): for random-walk-like kernels, whose windows hold
            few effective draws.
    """

    def __init__(
        self,
        name: str,
        init: Callable[[PyTree, LogDensityFn], Any],
        build_kernel: Callable[..., RawKernel] | None,
        params_type: type,
        *,
        build_stages: Callable[..., KernelStages] | None = None,
        build_options: tuple[str, ...] = (),
        target_acceptance: float | None,
        uses_gradient: bool,
        dense_metric_max_dim: int = 0,
        has_cumulative_warmup: bool = False,
    ) -> None:
        if (build_kernel is None) == (build_stages is None):
            raise ValueError("give an algorithm either `build_kernel` or `build_stages`.")
        self.name = name
        self.init = init
        self.build_stages = build_stages
        staged = build_stages

        def kernel_of_stages(**options: Any) -> RawKernel:
            assert staged is not None
            return kernel_from_stages(staged(**options))

        self.build_kernel: Callable[..., RawKernel] = (
            kernel_of_stages if build_kernel is None else build_kernel
        )
        self.params_type = params_type
        self.build_options = build_options
        self.target_acceptance = target_acceptance
        self.uses_gradient = uses_gradient
        self.dense_metric_max_dim = dense_metric_max_dim
        self.has_cumulative_warmup = has_cumulative_warmup

    def stages(self, **build_options: Any) -> KernelStages:
        """The kernel's transition as :class:`~probinfer.mcmc.KernelStages`.

        Args:
            **build_options: as for ``build_kernel``.

        Returns:
            The algorithm's own stages (one ``advance`` per leapfrog step) or, for an
            algorithm whose transitions all cost the same, one ``advance`` per transition.
        """
        if self.build_stages is not None:
            return self.build_stages(**build_options)
        return one_shot_stages(self.build_kernel(**build_options))

    def __repr__(self) -> str:
        return f"probinfer.mcmc.{self.name}"

    @property
    def is_metric_tuned(self) -> bool:
        """Whether its parameters are a step size and a metric over a density's support
        (what adaptation, SMC moves and constrained moves set); elliptical slice's are a
        Gaussian factor instead."""
        return all(name in self.params_type._fields for name in TUNED_PARAMETERS)

    @property
    def parameter_options(self) -> tuple[str, ...]:
        """Parameter fields a user may set as options (all but the tuned ones)."""
        return tuple(f for f in self.params_type._fields if f not in TUNED_PARAMETERS)

    @property
    def options(self) -> tuple[str, ...]:
        """Every option name: build options and parameter fields."""
        return (*self.build_options, *self.parameter_options)

    def split_options(self, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split keyword options into ``build_kernel`` options and parameter values.

        Args:
            options: keyword options given by the user.

        Returns:
            ``(build_options, parameter_values)``.

        Raises:
            ValueError: for an option that is neither, naming the valid ones.
        """
        unknown = sorted(set(options) - set(self.options))
        if unknown:
            raise ValueError(
                f"`{self.name}` got unknown option(s) {unknown}; valid options: "
                f"{sorted(self.options)}."
            )
        build = {k: v for k, v in options.items() if k in self.build_options}
        parameters = {k: v for k, v in options.items() if k not in self.build_options}
        return build, parameters

    def make_params(
        self, step_size: float | Array, inverse_mass_matrix: Any, **parameters: Any
    ) -> Any:
        """The kernel's parameters: the tuned two and the algorithm's own (or defaults).

        Args:
            step_size: step size (proposal scale for RWM, width for slice), > 0.
            inverse_mass_matrix: ``(dim,)`` or ``(dim, dim)`` (or a ``MassMatrix``).
            **parameters: values of the other fields.

        Returns:
            A ``params_type`` instance.
        """
        return self.params_type(
            step_size=step_size, inverse_mass_matrix=inverse_mass_matrix, **parameters
        )

    def default_params(self, position: PyTree, **parameters: Any) -> Any:
        """Parameters for a first try at ``position``: step size 1, identity metric.

        Args:
            position: an example position (its flat size sets the metric's).
            **parameters: values of the other fields.

        Returns:
            A ``params_type`` instance.
        """
        flat, _ = ravel_pytree(position)
        return self.make_params(jnp.ones((), flat.dtype), jnp.ones_like(flat), **parameters)

    def __call__(
        self,
        logdensity_fn: LogDensityFn,
        step_size: float | Array,
        inverse_mass_matrix: Array | None = None,
        **options: Any,
    ) -> Kernel:
        """Close the kernel over a target and its parameters.

        Args:
            logdensity_fn: log density of a position pytree (unnormalized is fine).
            step_size: integrator step size (HMC, NUTS, MALA), proposal scale (RWM) or
                width (slice), > 0.
            inverse_mass_matrix: ``(dim,)`` diagonal or ``(dim, dim)`` dense inverse mass
                matrix (the proposal or direction covariance for RWM and slice); identity
                when omitted.
            **options: build options (e.g. ``max_num_doublings`` for NUTS) and parameter
                fields (e.g. ``num_integration_steps`` for HMC).

        Returns:
            A :class:`~probinfer.mcmc.Kernel` ``(init, step)``.

        Raises:
            TypeError: for a step size that is not a real number.
            ValueError: for a non-positive or non-finite step size or an unknown option.
        """
        check_step_size(step_size)
        build, parameters = self.split_options(options)
        kernel = self.build_kernel(**build)

        def init(position: PyTree) -> Any:
            return self.init(position, logdensity_fn)

        def step(key: PRNGKeyArray, state: Any) -> tuple[Any, Any]:
            matrix = inverse_mass_matrix
            if matrix is None:
                flat, _ = ravel_pytree(state.position)
                matrix = jnp.ones_like(flat)
            params = self.make_params(step_size, matrix, **parameters)
            return kernel(key, state, logdensity_fn, params)

        return Kernel(init, step)


def check_step_size(step_size: float | Array) -> None:
    """Raise a readable error for a concrete step size that is not a finite positive number.

    Args:
        step_size: the step size given by the user (a number or a concrete array); traced
            values are not checked.

    Raises:
        TypeError: when ``step_size`` is not a real number (a string, a complex number).
        ValueError: when ``step_size`` is concrete and not finite and > 0 everywhere.
    """
    if isinstance(step_size, jax.core.Tracer):
        return
    values = np.asarray(step_size)
    fix = "pass a positive float or run `probinfer.mcmc.window_adaptation` to tune it."
    if not is_real_dtype(values.dtype):
        raise TypeError(f"`step_size` must be a positive float, got {step_size!r}; {fix}")
    if values.size and not np.all(values > 0):
        raise ValueError(f"`step_size` must be > 0, got {values}; {fix}")
    if not np.all(np.isfinite(values)):
        raise ValueError(f"`step_size` must be finite, got {values}; {fix}")


# Step-size adaptation between population steps (SMC moves, nested-sampling moves):
# log eps += RATE * (acceptance - target), clipped to [MIN, MAX].
STEP_SIZE_ADAPTATION_RATE = 1.0
MIN_STEP_SIZE, MAX_STEP_SIZE = 1e-4, 10.0


def adapt_step_size(step_size: Array, acceptance_rate: Array, target_acceptance: float) -> Array:
    """The next step size of a move whose mean acceptance over a population was measured.

    ``log eps += (acceptance - target)``, clipped to ``[1e-4, 10]``: a step of one
    population update, not dual averaging (the population changes between steps).

    Args:
        step_size: the current step size, a scalar.
        acceptance_rate: the mean acceptance of the last moves.
        target_acceptance: the algorithm's target.

    Returns:
        The new step size, in ``step_size``'s dtype.
    """
    change = STEP_SIZE_ADAPTATION_RATE * (acceptance_rate - target_acceptance)
    new = jnp.clip(step_size * jnp.exp(change), MIN_STEP_SIZE, MAX_STEP_SIZE)
    return new.astype(jnp.result_type(step_size))
