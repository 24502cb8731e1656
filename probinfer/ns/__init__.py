"""Nested sampling building blocks.

- :func:`nested_sampling`: ``k``-deletion nested sampling with any
  :mod:`probinfer.mcmc` algorithm as the likelihood-constrained move (slice sampling along
  directions whitened by the live points by default), as an ``(init, step)`` pair over the
  live points; :func:`remaining_log_fraction` is its stopping quantity.
- Evidence accounting in log space (:mod:`probinfer.ns._evidence`): :func:`removal_counts`,
  :func:`shrink`, :func:`log_weights`, :func:`simulate_log_z` and :func:`summarize`
  (``log Z``, its error from simulated shrinkages, the information ``H``, posterior
  weights); :func:`check_live_points` refuses counts a run cannot work with.

- An ellipsoidal bound (:func:`bounding_ellipsoid`, :func:`draw_above_contour`): exact
  draws above a contour by rejection, for the unit cube's uniform prior; the sampler uses it
  while it accepts at least :func:`min_bound_efficiency`.
- A neural likelihood emulator (:class:`Emulator`, :func:`train_emulator`,
  :func:`emulate`) that the constrained moves use once it is accurate.

``pi.evidence(model, method="ns")`` runs them on the driver (:mod:`probinfer.run_ns`).
"""

from probinfer.ns._ellipsoid import (
    BoundDraws,
    Ellipsoid,
    bounding_ellipsoid,
    draw_above_contour,
    sample_ellipsoid,
)
from probinfer.ns._emulator import (
    Emulator,
    EmulatorState,
    LikelihoodNetwork,
    add_dead_points,
    emulate,
    init_emulator,
    train_emulator,
)
from probinfer.ns._evidence import (
    NUM_SIMULATIONS,
    EvidenceSummary,
    log_weights,
    removal_counts,
    shrink,
    simulate_log_z,
    summarize,
)
from probinfer.ns._nested import (
    DEFAULT_ENLARGE,
    NestedInfo,
    NestedSampler,
    NestedState,
    check_live_points,
    default_num_steps,
    default_step_size,
    min_bound_efficiency,
    nested_sampling,
    remaining_log_fraction,
)

__all__ = [
    "Emulator",
    "EmulatorState",
    "LikelihoodNetwork",
    "add_dead_points",
    "emulate",
    "init_emulator",
    "train_emulator",
    "BoundDraws",
    "DEFAULT_ENLARGE",
    "Ellipsoid",
    "bounding_ellipsoid",
    "draw_above_contour",
    "min_bound_efficiency",
    "sample_ellipsoid",
    "NUM_SIMULATIONS",
    "EvidenceSummary",
    "NestedInfo",
    "NestedSampler",
    "NestedState",
    "check_live_points",
    "default_num_steps",
    "default_step_size",
    "log_weights",
    "nested_sampling",
    "remaining_log_fraction",
    "removal_counts",
    "shrink",
    "simulate_log_z",
    "summarize",
]
