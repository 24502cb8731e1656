"""MCMC building blocks: kernels, integrators and warm-up adaptation.

Each gradient or random-walk algorithm (:data:`rwm`, :data:`mala`, :data:`hmc`, :data:`nuts`,
:data:`slice_sampler`) is an :class:`Algorithm`: call it to get a :class:`Kernel`
``(init, step)`` closed over a target, or use its ``init`` and ``build_kernel`` to change
parameters between steps. :func:`constrained` runs any of them on the prior restricted to a
likelihood contour (the move nested sampling needs). :data:`elliptical_slice` samples
Gaussian-prior-times-likelihood targets (GP latents). :func:`gibbs` and :func:`compose`
combine kernels into blocked sweeps and sequences.
"""

from probinfer.mcmc._algorithm import DENSE_MASS_MATRIX_MAX_DIM, METRICS, Algorithm
from probinfer.mcmc._base import (
    GradientState,
    Kernel,
    KernelStages,
    MetricParams,
    TransitionInfo,
)
from probinfer.mcmc._combinators import compose, gibbs
from probinfer.mcmc._constrained import (
    ConstrainedInfo,
    ConstrainedMove,
    ConstrainedState,
    constrained,
)
from probinfer.mcmc._elliptical_slice import (
    EllipticalSlice,
    EllipticalSliceInfo,
    EllipticalSliceParams,
    EllipticalSliceState,
    elliptical_slice,
)
from probinfer.mcmc._hmc import HMCParams, hmc
from probinfer.mcmc._mala import mala
from probinfer.mcmc._metric import MassMatrix, factor_mass_matrix
from probinfer.mcmc._nuts import nuts
from probinfer.mcmc._rwm import RWMState, rwm
from probinfer.mcmc._slice import slice_sampler
from probinfer.mcmc._window_adaptation import (
    WarmupSchedule,
    WindowAdaptation,
    WindowAdaptationState,
    build_schedule,
    find_reasonable_step_size,
    window_adaptation,
)

ALGORITHMS: dict[str, Algorithm] = {a.name: a for a in (rwm, mala, hmc, nuts)}
"""The algorithms ``window_adaptation`` and ``pi.sample(method=...)`` tune, by name."""

__all__ = [
    "ALGORITHMS",
    "DENSE_MASS_MATRIX_MAX_DIM",
    "METRICS",
    "Algorithm",
    "ConstrainedInfo",
    "ConstrainedMove",
    "ConstrainedState",
    "EllipticalSlice",
    "EllipticalSliceInfo",
    "EllipticalSliceParams",
    "EllipticalSliceState",
    "GradientState",
    "HMCParams",
    "Kernel",
    "KernelStages",
    "MassMatrix",
    "MetricParams",
    "RWMState",
    "TransitionInfo",
    "WarmupSchedule",
    "WindowAdaptation",
    "WindowAdaptationState",
    "build_schedule",
    "compose",
    "constrained",
    "elliptical_slice",
    "factor_mass_matrix",
    "find_reasonable_step_size",
    "gibbs",
    "hmc",
    "mala",
    "nuts",
    "rwm",
    "slice_sampler",
    "window_adaptation",
]
