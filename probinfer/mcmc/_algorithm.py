"""`Algorithm`: one factory per MCMC algorithm that also exposes its raw pieces.

``probinfer.mcmc.nuts`` is an :class:`Algorithm`. Calling it closes the raw kernel over a
target and parameters and returns a :class:`~probinfer.mcmc.Kernel`; its ``init`` and
``build_kernel`` attributes are the raw pieces that adaptation, SMC and nested sampling use,
because they need to change the step size and mass matrix between steps.
"""

import inspect
from collections.abc import Callable
from typing import Any

import jax
import jax.core
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray

from probinfer.mcmc._base import Kernel, LogDensityFn, PyTree

RawKernel = Callable[..., tuple[Any, Any]]


class Algorithm:
    """An MCMC algorithm: ``init``, ``build_kernel`` and the factory ``__call__``.

    Attributes:
        name: short name ("rwm", "mala", "hmc", "nuts", "slice").
        init: ``init(position, logdensity_fn) -> State``.
        build_kernel: ``build_kernel(**build_options) -> kernel`` with
            ``kernel(key, state, logdensity_fn, step_size, inverse_mass_matrix, **params)``.
        target_acceptance: default acceptance rate that step-size adaptation aims for, or
            None for an algorithm without one (slice sampling always moves).
        uses_gradient: whether the kernel evaluates gradients of the log density.
    """

    def __init__(
        self,
        name: str,
        init: Callable[[PyTree, LogDensityFn], Any],
        build_kernel: Callable[..., RawKernel],
        *,
        target_acceptance: float | None,
        uses_gradient: bool,
    ) -> None:
        self.name = name
        self.init = init
        self.build_kernel = build_kernel
        self.target_acceptance = target_acceptance
        self.uses_gradient = uses_gradient
        self.build_options = tuple(inspect.signature(build_kernel).parameters)

    def __repr__(self) -> str:
        return f"probinfer.mcmc.{self.name}"

    def split_options(self, options: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
        """Split keyword options into ``build_kernel`` options and step-time parameters.

        Args:
            options: keyword options given by the user.

        Returns:
            ``(build_options, step_parameters)``.
        """
        build = {k: v for k, v in options.items() if k in self.build_options}
        step = {k: v for k, v in options.items() if k not in self.build_options}
        return build, step

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
            step_size: integrator step size (HMC, NUTS, MALA) or proposal scale (RWM), > 0.
            inverse_mass_matrix: ``(dim,)`` diagonal or ``(dim, dim)`` dense inverse mass
                matrix (the proposal covariance for RWM); identity when omitted.
            **options: build options (e.g. ``max_num_doublings`` for NUTS) and step-time
                parameters (e.g. ``num_integration_steps`` for HMC).

        Returns:
            A :class:`~probinfer.mcmc.Kernel` ``(init, step)``.

        Raises:
            ValueError: for a non-positive step size or an unknown option.
        """
        check_step_size(step_size)
        build, params = self.split_options(options)
        kernel = self.build_kernel(**build)
        unknown = set(params) - set(inspect.signature(kernel).parameters)
        if unknown:
            step_names = list(inspect.signature(kernel).parameters)[5:]
            valid = sorted(set(self.build_options) | set(step_names))
            raise ValueError(
                f"`{self.name}` got unknown option(s) {sorted(unknown)}; valid options: {valid}."
            )

        def init(position: PyTree) -> Any:
            return self.init(position, logdensity_fn)

        def step(key: PRNGKeyArray, state: Any) -> tuple[Any, Any]:
            matrix = inverse_mass_matrix
            if matrix is None:
                flat, _ = ravel_pytree(state.position)
                matrix = jnp.ones_like(flat)
            return kernel(key, state, logdensity_fn, step_size, matrix, **params)

        return Kernel(init, step)


def check_step_size(step_size: float | Array) -> None:
    """Raise a readable error for a concrete non-positive step size.

    Args:
        step_size: the step size given by the user (a number or a concrete array); traced
            values are not checked.

    Raises:
        ValueError: when ``step_size`` is concrete and not > 0 everywhere.
    """
    if isinstance(step_size, jax.core.Tracer):
        return
    values = np.asarray(step_size)
    if values.size and not np.all(values > 0):
        raise ValueError(
            f"`step_size` must be > 0, got {values}; pass a positive float or run "
            "`probinfer.mcmc.window_adaptation` to tune it."
        )
