"""The driver: any step function run in compiled chunks, with progress bars, atomic
checkpoints, a status, a compiled-program cache, and population sharding.

Every inference loop runs on :func:`drive`: MCMC warm-up and sampling
(:mod:`probinfer.run`), tempered SMC (:mod:`probinfer.run_smc`), the NNGP fits and PFN
training. It knows nothing of any family: a loop is a step function and a state.
"""

from probinfer._members import MEMBER_MAPS, any_member, map_members, member_cond
from probinfer.driver._compile import (
    MAX_COMPILED_PROGRAMS,
    TRACE_COUNTS,
    CompileWatch,
    call_compiled,
    clear_cache,
    count_trace,
)
from probinfer.driver._drive import (
    MAX_STEPS,
    POPULATION_AXIS,
    DriveResult,
    DriveStatus,
    StagedStep,
    drive,
    population_sharding,
    to_host,
)
from probinfer.driver._progress import ProgressReporter, progress_bar
from probinfer.driver._threads import THREADS_VARIABLE, host_threads

__all__ = [
    "MAX_COMPILED_PROGRAMS",
    "MAX_STEPS",
    "MEMBER_MAPS",
    "POPULATION_AXIS",
    "TRACE_COUNTS",
    "CompileWatch",
    "DriveResult",
    "DriveStatus",
    "ProgressReporter",
    "THREADS_VARIABLE",
    "StagedStep",
    "any_member",
    "call_compiled",
    "clear_cache",
    "count_trace",
    "drive",
    "host_threads",
    "map_members",
    "member_cond",
    "population_sharding",
    "progress_bar",
    "to_host",
]
