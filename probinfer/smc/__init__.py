"""Sequential Monte Carlo building blocks.

- Resampling schemes, all ``(key, weights, num_samples) -> indices``, in
  :mod:`probinfer.smc.resampling` (also here): :func:`multinomial`, :func:`systematic`,
  :func:`stratified`, :func:`residual`.
- Weights: :func:`ess`, :func:`conditional_ess`, :func:`normalize`, :func:`log_mean_exp`.
- Tempering schedules ``state -> next beta``: :func:`adaptive_tempering`,
  :func:`fixed_schedule`.
- :func:`tempered_smc`: reweight -> resample -> move from prior to posterior, with any
  :mod:`probinfer.mcmc` algorithm as the move (or waste-free chains), and the log-evidence
  estimate.
- :func:`particle_filter`: bootstrap and guided filters for a :class:`StateSpaceModel`,
  with the marginal likelihood and :func:`trace_paths` for the genealogy; :func:`pmmh`
  samples static parameters with a filter's likelihood estimate.
"""

from probinfer.smc import resampling
from probinfer.smc._particle_filter import (
    FilterResult,
    Proposal,
    StateSpaceModel,
    particle_filter,
    trace_paths,
)
from probinfer.smc._pmmh import PMMH, PMMHInfo, PMMHState, pmmh
from probinfer.smc._tempered import (
    TemperedSMC,
    TemperedSMCInfo,
    TemperedSMCState,
    TemperedSMCTuning,
    initial_step_size,
    tempered_smc,
)
from probinfer.smc._tempering import adaptive_tempering, fixed_schedule
from probinfer.smc._weights import conditional_ess, ess, log_mean_exp, normalize
from probinfer.smc.resampling import multinomial, residual, stratified, systematic

RESAMPLING = {
    "multinomial": multinomial,
    "systematic": systematic,
    "stratified": stratified,
    "residual": residual,
}

__all__ = [
    "PMMH",
    "RESAMPLING",
    "FilterResult",
    "PMMHInfo",
    "PMMHState",
    "Proposal",
    "StateSpaceModel",
    "TemperedSMC",
    "TemperedSMCInfo",
    "TemperedSMCState",
    "TemperedSMCTuning",
    "adaptive_tempering",
    "conditional_ess",
    "ess",
    "fixed_schedule",
    "initial_step_size",
    "log_mean_exp",
    "multinomial",
    "normalize",
    "particle_filter",
    "resampling",
    "pmmh",
    "residual",
    "stratified",
    "systematic",
    "tempered_smc",
    "trace_paths",
]
