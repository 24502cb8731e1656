"""MCMC on the driver: many chains, warm-up then sampling, each phase one :func:`drive`.

Both phases run the same step function (:class:`_MCMCStep`: one kernel transition, then
the adaptation update while warming up), so the chunk program is compiled once. Chains are
independent members of the population, mapped as ``chain_method`` says
(:data:`CHAIN_METHODS`, the driver's member maps): ``vectorized`` (``vmap``; from
:data:`INTERLEAVE_MIN_CHAINS` chains NUTS and HMC run as one flat loop of leapfrog steps in
which each chain starts its next transition as soon as its own trajectory ends, below it
the chains move in lock step, each transition paying for the longest trajectory),
``sequential`` (``lax.map``: each chain pays only for its own trajectories), or
``parallel-*`` (split evenly over all devices with ``shard_map``, then vectorized or
sequential on each device).
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray

from probinfer import mcmc
from probinfer.checkpoint import fingerprint
from probinfer.driver import (
    MEMBER_MAPS,
    CompileWatch,
    StagedStep,
    call_compiled,
    count_trace,
    drive,
    map_members,
    progress_bar,
    to_host,
)
from probinfer.mcmc._window_adaptation import ScheduleBounds, schedule_bounds, update_key

PyTree = Any
CHAIN_METHODS = MEMBER_MAPS
# Vectorized chains run NUTS/HMC as one flat loop of leapfrog steps (each chain starting
# its next transition when its own ends) from this many chains per device; below it each
# transition runs whole. benchmarks/scale.py at bf5fec3 (Intel Xeon): the flat loop beats
# lock step from 2 chains (eight schools 1.56-2.50x, the funnel 2.10-3.17x); with one
# chain there is no one to wait for, and the loop's fixed cost per iteration makes it
# 0.41-0.49x. (Before 826246d, when the loop's per-chain predicate made `vmap` select
# every chain's carry per iteration, it lost on eight schools.)
INTERLEAVE_MIN_CHAINS = 2
# Rows of a chunk's records buffer, the one shape that bounds the steps of a chunk: fixed,
# so that any warm-up and draw counts share the compiled program. Per-chunk cost is small
# (a dispatch, ~1 ms; benchmarks/chunk_size.py: eight schools and logistic regression,
# 1,000 + 1,000 steps without a progress bar, take the same time within 5% with the
# default chunks of 50 steps and with 256, in both directions over two runs), so the cap
# costs nothing measurable and runs without a progress bar keep the default chunks. The
# cap bounds the checkpoint files of a long run (20,000 steps: ~80 chunks) and the
# buffer's memory (rows x chains x record).
CHUNK_ROWS = 256


class SamplerConfig(NamedTuple):
    """Static settings of one sampling run (hashable: they key the compiled programs).

    Attributes:
        algorithm: name in :data:`probinfer.mcmc.ALGORITHMS`.
        options: sorted ``(name, value)`` pairs of the algorithm's options.
        metric: "dense" or "diag" adaptation (None: the algorithm's rule by dimension).
        target_acceptance: dual-averaging target (None: the algorithm's default).
        initial_step_size: where the step-size search starts (None: the default).
        chain_method: one of :data:`CHAIN_METHODS`.
    """

    algorithm: str
    options: tuple[tuple[str, Any], ...]
    metric: str | None
    target_acceptance: float | None
    initial_step_size: float | None
    chain_method: str


class RunResult(NamedTuple):
    """What a run produced, on the host.

    Attributes:
        draws: site name -> array ``(num_chains, num_draws, ...)`` in constrained space.
        stats: stat name -> array ``(num_chains, num_draws)``.
        parameters: tuned ``step_size`` ``(num_chains,)`` and ``inverse_mass_matrix``.
        warmup_grad_evals: gradient evaluations of the warm-up, all chains (not counted
            for the part of a resumed run done before the interruption).
        warmup_nonfinite: proposals with a NaN or infinite log density during the
            warm-up, all chains (same caveat).
        compile_seconds: time spent compiling (0 when every program was cached).
        warmup_seconds: wall time of the warm-up, compilation excluded.
        sampling_seconds: wall time of the sampling phase, compilation excluded.
    """

    draws: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    parameters: dict[str, np.ndarray]
    warmup_grad_evals: int
    warmup_nonfinite: int
    compile_seconds: float
    warmup_seconds: float
    sampling_seconds: float


def _adaptation(spec: Any, config: SamplerConfig, data: PyTree) -> mcmc.WindowAdaptation:
    density = spec.bind(data)
    return mcmc.window_adaptation(
        mcmc.ALGORITHMS[config.algorithm],
        density.logdensity_fn,
        metric=config.metric,
        target_acceptance=config.target_acceptance,
        initial_step_size=config.initial_step_size,
        **dict(config.options),
    )


def _warmup_init(
    spec: Any, config: SamplerConfig, data: PyTree, positions: PyTree, keys: PRNGKeyArray
) -> mcmc.WindowAdaptationState:
    count_trace("warmup_init")
    adaptation = _adaptation(spec, config, data)
    return map_members(adaptation.init, config.chain_method)(positions, keys)


@dataclasses.dataclass(frozen=True)
class _MCMCStep(StagedStep):
    """One chain's step: a kernel transition, then (while warming up) the adaptation update.

    Staged as the kernel's :class:`~probinfer.mcmc.KernelStages` (one leapfrog step per
    ``advance`` for NUTS and HMC), so that vectorized chains each start their next
    transition as soon as their own trajectory ends. Hashable (target spec and settings),
    so it keys the compiled chunk program. While sampling (``is_sampling``, the same for
    every chain, so ``cond`` really branches even under ``vmap``) the adaptation update is
    skipped, and ``state.step_size`` holds the final averaged step size set at the end of
    warm-up.
    """

    spec: Any
    config: SamplerConfig
    # Record what a thinned run's E-BFMI needs (`_combine_thinned`); off, the programs of
    # unthinned runs carry nothing extra.
    records_energy_changes: bool = False

    def _stages(self) -> mcmc.KernelStages:
        algorithm = mcmc.ALGORITHMS[self.config.algorithm]
        return algorithm.stages(**algorithm.split_options(dict(self.config.options))[0])

    def _kernel_inputs(self, state: mcmc.WindowAdaptationState, data: PyTree) -> tuple[Any, Any]:
        """The log density and this state's kernel parameters."""
        algorithm = mcmc.ALGORITHMS[self.config.algorithm]
        parameters = algorithm.split_options(dict(self.config.options))[1]
        params = algorithm.make_params(state.step_size, state.inverse_mass_matrix, **parameters)
        return self.spec.bind(data).logdensity_fn, params

    def begin(
        self,
        key: PRNGKeyArray,
        state: mcmc.WindowAdaptationState,
        step_index: Array,
        shared: tuple[PyTree, ScheduleBounds, Array],
    ) -> Any:
        logdensity_fn, params = self._kernel_inputs(state, shared[0])
        return self._stages().begin(key, state.mcmc_state, logdensity_fn, params)

    def advance(
        self, work: Any, state: mcmc.WindowAdaptationState, shared: tuple[PyTree, ...]
    ) -> Any:
        logdensity_fn, params = self._kernel_inputs(state, shared[0])
        return self._stages().advance(work, state.mcmc_state, logdensity_fn, params)

    def is_done(self, work: Any) -> Array:
        return self._stages().is_done(work)

    def finish(
        self,
        key: PRNGKeyArray,
        state: mcmc.WindowAdaptationState,
        work: Any,
        step_index: Array,
        shared: tuple[PyTree, ScheduleBounds, Array],
    ) -> tuple[mcmc.WindowAdaptationState, tuple[dict[str, Array], dict[str, Array]]]:
        logdensity_fn, params = self._kernel_inputs(state, shared[0])
        mcmc_state, info = self._stages().end(work, state.mcmc_state, logdensity_fn, params)
        return self._after_transition(key, state, mcmc_state, info, step_index, shared)

    def __call__(
        self,
        key: PRNGKeyArray,
        state: mcmc.WindowAdaptationState,
        step_index: Array,
        shared: tuple[PyTree, ScheduleBounds, Array],
    ) -> tuple[mcmc.WindowAdaptationState, tuple[dict[str, Array], dict[str, Array]]]:
        # A whole step calls the kernel itself: a one-step kernel (RWM, MALA) then runs
        # without a loop around its single stage.
        algorithm = mcmc.ALGORITHMS[self.config.algorithm]
        kernel = algorithm.build_kernel(**algorithm.split_options(dict(self.config.options))[0])
        logdensity_fn, params = self._kernel_inputs(state, shared[0])
        mcmc_state, info = kernel(key, state.mcmc_state, logdensity_fn, params)
        return self._after_transition(key, state, mcmc_state, info, step_index, shared)

    def _after_transition(
        self,
        key: PRNGKeyArray,
        state: mcmc.WindowAdaptationState,
        mcmc_state: Any,
        info: mcmc.TransitionInfo,
        step_index: Array,
        shared: tuple[PyTree, ScheduleBounds, Array],
    ) -> tuple[mcmc.WindowAdaptationState, tuple[dict[str, Array], dict[str, Array]]]:
        """The adaptation update (while warming up) and the record of a transition."""
        data, schedule, is_sampling = shared
        adaptation = _adaptation(self.spec, self.config, data)
        new = jax.lax.cond(
            is_sampling,
            lambda: state._replace(mcmc_state=mcmc_state),
            lambda: adaptation.update(
                update_key(key),
                state,
                mcmc_state,
                info,
                schedule.flags(step_index),
            ),
        )
        stats = {
            "lp": mcmc_state.logdensity,
            "diverging": info.is_divergent,
            "acceptance_rate": info.acceptance_rate,
            "step_size": state.step_size,
            "n_steps": info.num_grad_evals,
            "tree_depth": info.tree_depth,
            "energy": info.energy,
            "num_nonfinite": info.num_nonfinite,
        }
        if self.records_energy_changes:  # see `_combine_thinned`
            stats.update(energy_first=info.energy, energy_jumps=jnp.zeros_like(info.energy))
        return new, (self.spec.bind(data).postprocess_fn(mcmc_state.position), stats)


def _combine_thinned(
    group: tuple[PyTree, dict[str, Array]], record: tuple[PyTree, dict[str, Array]]
) -> tuple[PyTree, dict[str, Array]]:
    """The record of a thinned group of transitions: the newest draw and its statistics,
    with the group's gradient evaluations and non-finite proposals summed, a divergence
    anywhere in the group flagged, and the deepest tree kept, so that thinning hides no
    cost and no warning sign; and the group's first energy and the sum of its squared
    energy changes, from which :func:`thinned_ebfmi` gets the E-BFMI of every transition."""
    (_, group_stats), (draw, stats) = group, record
    combined = {
        **stats,
        "diverging": group_stats["diverging"] | stats["diverging"],
        "n_steps": group_stats["n_steps"] + stats["n_steps"],
        "num_nonfinite": group_stats["num_nonfinite"] + stats["num_nonfinite"],
        "tree_depth": jnp.maximum(group_stats["tree_depth"], stats["tree_depth"]),
    }
    if "energy_jumps" in stats:
        combined["energy_first"] = group_stats["energy_first"]
        combined["energy_jumps"] = (
            group_stats["energy_jumps"] + (stats["energy"] - group_stats["energy"]) ** 2
        )
    return draw, combined


INTERNAL_STATS = ("num_nonfinite", "energy_first", "energy_jumps")
"""Per-draw statistics a run keeps for its checks, left out of ``sample_stats``."""


def thinned_ebfmi(stats: dict[str, np.ndarray], thin: int) -> np.ndarray:
    """E-BFMI per chain over every transition of a run thinned by ``thin``.

    E-BFMI is the mean squared change of the energy between consecutive transitions over
    its variance; between kept draws the energy has changed ``thin`` times, so their
    differences overstate it (a true 0.2 reads 0.8 at ``thin=5``). The squared changes
    within each group are summed as the run goes (``energy_jumps``) and those between
    groups come from each group's first energy; the variance is that of the kept energies
    (draws of the same stationary distribution).

    Args:
        stats: ``energy``, ``energy_first``, ``energy_jumps``, each ``(chains, draws)``.
        thin: transitions per kept draw.

    Returns:
        ``(chains,)`` E-BFMI values.
    """
    energy = np.asarray(stats["energy"], np.float64)
    first = np.asarray(stats["energy_first"], np.float64)
    within = np.asarray(stats["energy_jumps"], np.float64).sum(axis=1)
    between = ((first[:, 1:] - energy[:, :-1]) ** 2).sum(axis=1)
    num_changes = energy.shape[1] * thin - 1
    return (within + between) / num_changes / energy.var(axis=1)


def _finite_start(spec: Any, config: SamplerConfig, data: PyTree, positions: PyTree) -> Array:
    """Per chain: are the log density and its gradient finite at the position?

    One chain after another (``lax.map``), not batched (``vmap``): a model with two
    Gaussian-process terms makes two independent batched LAPACK calls under ``vmap``, and
    on XLA:CPU with jaxlib 0.10.0-0.11.0 (excluded by the requirements) those can wait on
    each other for ever (by every sign ``pi.sample`` hung here at 100 train points: gdb
    showed both pool threads in ``lapack_dpotrf_ffi``'s ``ParallelBatchMap``, the main
    thread waiting for this check; see ``probinfer/_linalg.py``). Unbatched, a LAPACK call
    never goes to the pool. One evaluation per chain, once per run (and per retry): little
    next to sampling.
    """
    count_trace("finite_start")
    density = spec.bind(data)

    def one_chain(position: PyTree) -> Array:
        value, grad = jax.value_and_grad(density.logdensity_fn)(position)
        return jnp.isfinite(value) & jnp.all(jnp.isfinite(ravel_pytree(grad)[0]))

    return jax.lax.map(one_chain, positions)


def _nonfinite_start_error(
    density: Any, positions: PyTree, is_finite: np.ndarray, why: str, fix: str
) -> ValueError:
    chain = int(np.argmin(is_finite))
    position = jax.tree.map(lambda x: x[chain], positions)
    return ValueError(
        f"{why.format(chain=chain)} ({density.diagnose(position)}); {fix}, or fix the model "
        "(e.g. a scale that can be zero, the log of a negative number, NaN in the data)."
    )


def initial_positions(
    spec: Any,
    data: PyTree,
    config: SamplerConfig,
    key: PRNGKeyArray,
    num_chains: int,
    given: PyTree | None,
    watch: CompileWatch,
) -> PyTree:
    """Starting points: ``given`` (checked finite) or drawn, retried until finite.

    Drawn points are redrawn per chain, up to :data:`probinfer.model.MAX_INIT_TRIES` times,
    until the log density and its gradient are finite there.

    Args:
        spec: the target spec (with ``initial_positions``).
        data: the target's data.
        config: sampler settings (they key the compiled check).
        key: PRNG key for drawn points.
        num_chains: number of chains.
        given: user-given positions with a leading chain axis, or None.
        watch: accumulates compile time.

    Returns:
        Positions with a leading chain axis.

    Raises:
        ValueError: naming the chain and the sites whose terms are not finite.
    """
    from probinfer.model import MAX_INIT_TRIES

    if given is not None:
        is_finite = np.asarray(call_compiled(_finite_start, (spec, config), (data, given), watch))
        if not is_finite.all():
            raise _nonfinite_start_error(
                spec.bind(data),
                given,
                is_finite,
                "at `init_positions` of chain {chain} the log density or its gradient is not "
                "finite",
                "pass finite `init_positions`",
            )
        return given
    positions = spec.initial_positions(key, num_chains)
    is_finite = np.zeros(num_chains, bool)  # rebound by every try (MAX_INIT_TRIES >= 1)
    for attempt in range(1, MAX_INIT_TRIES + 1):
        is_finite = np.asarray(
            call_compiled(_finite_start, (spec, config), (data, positions), watch)
        )
        if is_finite.all():
            return positions
        fresh = spec.initial_positions(jax.random.fold_in(key, attempt), num_chains)
        keep = jnp.asarray(is_finite)
        positions = jax.tree.map(
            lambda old, new, keep=keep: jnp.where(
                keep.reshape((-1,) + (1,) * (old.ndim - 1)), old, new
            ),
            positions,
            fresh,
        )
    raise _nonfinite_start_error(
        spec.bind(data),
        positions,
        is_finite,
        f"no finite initial point for chain {{chain}} after {MAX_INIT_TRIES} tries of "
        f"{spec.initial_draws}",
        spec.initial_fix,
    )


def choose_chunk_size(num_warmup: int, num_draws: int) -> int:
    """16 to :data:`CHUNK_ROWS` steps per chunk: about 20 progress updates per phase of up
    to 5,120 steps, more for longer phases.

    The chunk size is a runtime value of the compiled program (its records buffer has
    :data:`CHUNK_ROWS` rows), so every budget shares one program.

    Args:
        num_warmup: warm-up steps.
        num_draws: sampling steps (draws times thinning).

    Returns:
        Steps per chunk.
    """
    return min(CHUNK_ROWS, max(16, math.ceil(max(num_warmup, num_draws, 1) / 20)))


def run_chains(
    spec: Any,
    data: PyTree,
    config: SamplerConfig,
    key: PRNGKeyArray,
    num_chains: int,
    *,
    init_positions: PyTree | None = None,
    num_warmup: int,
    num_draws: int,
    progress: bool,
    thin: int = 1,
    chunk_size: int | None = None,
    checkpoint: Path | None = None,
) -> RunResult:
    """Warm up then sample every chain.

    Args:
        spec: hashable target spec (see :mod:`probinfer.model`).
        data: the target's array data.
        config: static sampler settings.
        key: PRNG key of the run.
        num_chains: number of chains.
        init_positions: exact starting points with a leading chain axis (structure already
            checked), or None to draw them as the spec says.
        num_warmup: warm-up (adaptation) steps per chain.
        num_draws: kept draws per chain.
        progress: show a progress bar.
        thin: sampling transitions per kept draw (``num_draws * thin`` in all); the
            statistics of a kept draw cover its group (see :func:`_combine_thinned`).
        chunk_size: steps per chunk (between progress updates and checkpoints); default
            :func:`choose_chunk_size`. Up to :data:`CHUNK_ROWS` steps share one program.
            Sampling chunks are rounded up to whole groups of ``thin`` transitions.
        checkpoint: folder for atomic checkpoints after every chunk; a run started again
            with the same folder, target, data, settings and seed resumes where the last
            one stopped and gives the same draws as an uninterrupted run.

    Returns:
        The :class:`RunResult`.
    """
    key_positions, key_init, key_warmup, key_sample = jax.random.split(key, 4)
    watch = CompileWatch()
    positions = initial_positions(
        spec, data, config, key_positions, num_chains, init_positions, watch
    )
    schedule = schedule_bounds(num_warmup)  # a runtime value: any warm-up length, one program
    states = call_compiled(
        _warmup_init,
        (spec, config),
        (data, positions, jax.random.split(key_init, num_chains)),
        watch,
    )
    run_fingerprint = ""
    if checkpoint is not None:
        run_fingerprint = fingerprint(
            model=spec.describe(),
            settings=(config, num_warmup, num_draws, thin),
            seed=jax.random.key_data(key),
            data=data,
            initial_points=positions,
        )
    step = _MCMCStep(spec, config, records_energy_changes=thin > 1)
    divergences = [0]

    def count_divergences(
        stats: dict[str, np.ndarray], label: str = "divergences"
    ) -> dict[str, Any]:
        divergences[0] += int(stats["diverging"].sum())
        return {label: divergences[0]}

    # A thinned run's kept draw flags a divergence anywhere in its group: groups are counted.
    sampling_label = "divergences" if thin == 1 else f"divergent groups of {thin}"

    chains_per_device = num_chains // (
        jax.device_count() if config.chain_method.startswith("parallel") else 1
    )
    num_transitions = num_draws * thin
    if chunk_size is None:
        chunk_size = choose_chunk_size(num_warmup, num_transitions)
    common = {
        "chunk_rows": max(chunk_size, CHUNK_ROWS),
        # Unthinned runs keep each record as it is (no combining in their program).
        "combine_fn": _combine_thinned if thin > 1 else None,
        "member_map": config.chain_method,
        # Only kernels whose transitions differ in length (NUTS, jittered HMC) gain from it.
        "interleave": config.chain_method.endswith("vectorized")
        and chains_per_device >= INTERLEAVE_MIN_CHAINS
        and step._stages().varies_in_length,
        # Trajectory kernels (NUTS, HMC) cost enough per step for vectorized chains to
        # gain from host-thread groups on a multi-core CPU; MALA's one-gradient step does
        # not (0.4-1.1x). Staged kernels stand for "costly": slice sampling (unmeasured)
        # stays one program, HMC with one leapfrog step is grouped. The groups hold two
        # chains or more, at or above INTERLEAVE_MIN_CHAINS (2): still interleaved.
        "split_vectorized": mcmc.ALGORITHMS[config.algorithm].build_stages is not None,
        "run_fingerprint": run_fingerprint,
        "watch": watch,
    }
    unit = f"steps/s x {num_chains} chains"
    with progress_bar(progress, num_warmup + num_transitions, "warmup", rate_unit=unit) as bar:
        warmup = drive(
            step,
            states,
            key_warmup,
            shared=(data, schedule, jnp.asarray(False)),
            num_steps=num_warmup,
            chunk_size=chunk_size,
            record_fn=lambda records: {
                k: records[1][k] for k in ("diverging", "n_steps", "num_nonfinite")
            },
            progress=bar,
            progress_fn=count_divergences,
            description="warmup",
            checkpoint=None if checkpoint is None else checkpoint / "warmup",
            **common,
        )
        states = warmup.state
        # Sample with the averaged step size that dual averaging converged to.
        if num_warmup == 0 and config.initial_step_size is not None:
            step_size = jnp.full_like(states.step_size, config.initial_step_size)
        else:
            step_size = jax.vmap(_adaptation(spec, config, data).parameters)(states)["step_size"]
        divergences[0] = 0
        sampling = drive(
            step,
            states._replace(step_size=step_size),
            key_sample,
            shared=(data, schedule, jnp.asarray(True)),
            num_steps=num_transitions,
            # Whole groups of `thin` transitions, the records of each chunk within the rows.
            chunk_size=thin * min(-(-chunk_size // thin), common["chunk_rows"]),
            thin=thin,
            progress=bar,
            progress_fn=lambda records: count_divergences(records[1], sampling_label),
            description="sampling",
            checkpoint=None if checkpoint is None else checkpoint / "sampling",
            # A run resumed during warm-up samples in warm-up's groups, as it would have.
            continued_groups=warmup.num_groups,
            **common,
        )
    states = sampling.state
    draws, stats = sampling.records
    return RunResult(
        draws=draws,
        stats=stats,
        parameters=to_host(
            {
                "step_size": states.step_size,
                "inverse_mass_matrix": states.inverse_mass_matrix.inverse,
            }
        ),
        warmup_grad_evals=int(warmup.records["n_steps"].sum()),
        warmup_nonfinite=int(warmup.records["num_nonfinite"].sum()),
        compile_seconds=watch.compile_seconds,
        warmup_seconds=warmup.run_seconds,
        sampling_seconds=sampling.run_seconds,
    )
