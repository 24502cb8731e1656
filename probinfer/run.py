"""The driver: many chains, warm-up then sampling in compiled chunks, progress between chunks.

Each chunk is one compiled program that advances every chain by up to ``chunk_size``
steps (``lax.fori_loop`` with a dynamic step count, so a short last chunk reuses the same
program). Draws leave the device after every chunk, so device memory holds one chunk of
draws however many are asked for. Programs are compiled ahead of time once per (target
spec, sampler settings, argument shapes) and cached here, which is what lets a second run
with new data values or a new seed skip compilation, and what lets us report compile time
apart from run time.

Chains are mapped per :data:`CHAIN_METHODS`: ``vectorized`` (``vmap``: one program for all
chains; on accelerators this is the fast choice, but NUTS chains then move in lock step,
each paying for the longest trajectory), or ``sequential`` (``lax.map``: chains run one
after the other inside the program, each paying only for its own trajectories), or
``parallel-*`` (chains split evenly over all devices with ``shard_map``, then vectorized or
sequential on each device).
"""

from __future__ import annotations

import math
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax.flatten_util import ravel_pytree
from jaxtyping import Array, PRNGKeyArray
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from probinfer import mcmc
from probinfer.checkpoint import (
    RunProgress,
    fingerprint,
    load_chunks,
    load_progress,
    save_chunk,
    save_progress,
)
from probinfer.mcmc._window_adaptation import WarmupSchedule, build_schedule

PyTree = Any
CHAIN_METHODS = ("vectorized", "sequential", "parallel-vectorized", "parallel-sequential")
TRACE_COUNTS: dict[str, int] = {}


class SamplerConfig(NamedTuple):
    """Static settings of one sampling run (hashable: they key the compiled programs).

    Attributes:
        algorithm: name in :data:`probinfer.mcmc.ALGORITHMS`.
        options: sorted ``(name, value)`` pairs of the algorithm's options.
        is_mass_matrix_dense: dense or diagonal adaptation (None: by dimension).
        target_acceptance: dual-averaging target (None: the algorithm's default).
        initial_step_size: where the step-size search starts (None: the default).
        chain_method: one of :data:`CHAIN_METHODS`.
        chunk_size: steps per compiled chunk.
    """

    algorithm: str
    options: tuple[tuple[str, Any], ...]
    is_mass_matrix_dense: bool | None
    target_acceptance: float | None
    initial_step_size: float | None
    chain_method: str
    chunk_size: int


class RunResult(NamedTuple):
    """What a run produced, on the host.

    Attributes:
        draws: site name -> array ``(num_chains, num_draws, ...)`` in constrained space.
        stats: stat name -> array ``(num_chains, num_draws)``.
        parameters: tuned ``step_size`` ``(num_chains,)`` and ``inverse_mass_matrix``.
        warmup_grad_evals: gradient evaluations of the warm-up, all chains (not counted
            for the part of a resumed run done before the interruption).
        compile_seconds: time spent compiling (0 when every program was cached).
        warmup_seconds: wall time of the warm-up, compilation excluded.
        sampling_seconds: wall time of the sampling phase, compilation excluded.
    """

    draws: dict[str, np.ndarray]
    stats: dict[str, np.ndarray]
    parameters: dict[str, np.ndarray]
    warmup_grad_evals: int
    compile_seconds: float
    warmup_seconds: float
    sampling_seconds: float


def _count_trace(name: str) -> None:
    TRACE_COUNTS[name] = TRACE_COUNTS.get(name, 0) + 1


def _map_chains(fn: Callable[..., Any], chain_method: str) -> Callable[..., Any]:
    """Apply a one-chain function to arguments with a leading chain axis.

    ``parallel-vectorized`` and ``parallel-sequential`` split the chains evenly over all
    devices (``shard_map`` over a one-axis mesh) and map them on each device as named.
    """
    if chain_method == "sequential":
        return lambda *args: jax.lax.map(lambda a: fn(*a), args)
    if chain_method == "vectorized":
        return jax.vmap(fn)
    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("chains",))
    per_device = _map_chains(fn, chain_method.removeprefix("parallel-"))
    spec = jax.sharding.PartitionSpec("chains")
    # Chains are independent: no collective, so replication checking has nothing to prove.
    return jax.shard_map(per_device, mesh=mesh, in_specs=spec, out_specs=spec, check_vma=False)


def _adaptation(spec: Any, config: SamplerConfig, data: PyTree) -> mcmc.WindowAdaptation:
    density = spec.bind(data)
    return mcmc.window_adaptation(
        mcmc.ALGORITHMS[config.algorithm],
        density.logdensity_fn,
        is_mass_matrix_dense=config.is_mass_matrix_dense,
        target_acceptance=config.target_acceptance,
        initial_step_size=config.initial_step_size,
        **dict(config.options),
    )


def _warmup_init(
    spec: Any, config: SamplerConfig, data: PyTree, positions: PyTree, keys: PRNGKeyArray
) -> mcmc.WindowAdaptationState:
    _count_trace("warmup_init")
    adaptation = _adaptation(spec, config, data)
    return _map_chains(adaptation.init, config.chain_method)(positions, keys)


def _chunk(
    spec: Any,
    config: SamplerConfig,
    data: PyTree,
    states: mcmc.WindowAdaptationState,
    keys: PRNGKeyArray,
    schedule: WarmupSchedule,
    start: Array,
    num_steps: Array,
    is_sampling: Array,
) -> tuple[mcmc.WindowAdaptationState, dict[str, Array], dict[str, Array]]:
    """Advance every chain by ``num_steps`` (<= chunk size), recording draws and stats.

    Warm-up and sampling share this one program, so the kernel is compiled once. While
    sampling (``is_sampling``, the same for every chain, so ``cond`` really branches even
    under ``vmap``) the adaptation update is skipped, and ``state.step_size`` holds the final
    averaged step size set by the driver at the end of warm-up.
    """
    _count_trace("chunk")
    density = spec.bind(data)
    adaptation = _adaptation(spec, config, data)
    algorithm = mcmc.ALGORITHMS[config.algorithm]
    build_options, step_parameters = algorithm.split_options(dict(config.options))
    kernel = algorithm.build_kernel(**build_options)

    def one_chain(state: Any, key: PRNGKeyArray) -> Any:
        def step(i: Array, state: Any) -> tuple[Any, tuple[dict[str, Array], dict[str, Array]]]:
            mcmc_state, info = kernel(
                jax.random.fold_in(key, start + i),
                state.mcmc_state,
                density.logdensity_fn,
                state.step_size,
                state.inverse_mass_matrix,
                **step_parameters,
            )
            new = jax.lax.cond(
                is_sampling,
                lambda: state._replace(mcmc_state=mcmc_state),
                lambda: adaptation.update(
                    state, mcmc_state, info, jax.tree.map(lambda a: a[start + i], schedule)
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
            return new, (density.postprocess_fn(mcmc_state.position), stats)

        record_shapes = jax.eval_shape(step, start, state)[1]
        buffers = jax.tree.map(
            lambda s: jnp.zeros((config.chunk_size, *s.shape), s.dtype), record_shapes
        )

        def body(i: Array, carry: tuple[Any, Any]) -> tuple[Any, Any]:
            state, buffers = carry
            state, record = step(i, state)
            buffers = jax.tree.map(lambda b, r: b.at[i].set(r), buffers, record)
            return state, buffers

        state, (draws, stats) = jax.lax.fori_loop(0, num_steps, body, (state, buffers))
        return state, draws, stats

    return _map_chains(one_chain, config.chain_method)(states, keys)


def _finite_start(spec: Any, config: SamplerConfig, data: PyTree, positions: PyTree) -> Array:
    """Per chain: are the log density and its gradient finite at the position?"""
    _count_trace("finite_start")
    density = spec.bind(data)

    def one_chain(position: PyTree) -> Array:
        value, grad = jax.value_and_grad(density.logdensity_fn)(position)
        return jnp.isfinite(value) & jnp.all(jnp.isfinite(ravel_pytree(grad)[0]))

    return jax.vmap(one_chain)(positions)


_PROGRAMS: dict[str, Callable[..., Any]] = {
    "finite_start": _finite_start,
    "warmup_init": _warmup_init,
    "chunk": _chunk,
}
# The most recently used compiled programs, oldest first. Bounded, because each entry keeps
# its target spec (and whatever the target's functions close over) alive.
MAX_COMPILED_PROGRAMS = 64
_COMPILED: OrderedDict[Any, Any] = OrderedDict()


def _signature(tree: PyTree) -> tuple[Any, ...]:
    leaves, treedef = jax.tree.flatten(tree)
    return (treedef, tuple((x.shape, x.dtype, getattr(x, "weak_type", False)) for x in leaves))


class _Stopwatch:
    def __init__(self) -> None:
        self.compile_seconds = 0.0


def _call(name: str, spec: Any, config: SamplerConfig, watch: _Stopwatch, *args: Any) -> Any:
    """Run program ``name``, compiling it once per spec, config and argument shapes."""
    key = (name, spec, config, _signature(args))
    compiled = _COMPILED.get(key)
    if compiled is None:
        tic = time.perf_counter()
        function = jax.jit(_PROGRAMS[name], static_argnums=(0, 1))
        compiled = function.lower(spec, config, *args).compile()
        watch.compile_seconds += time.perf_counter() - tic
        _COMPILED[key] = compiled
        while len(_COMPILED) > MAX_COMPILED_PROGRAMS:
            _COMPILED.popitem(last=False)
    else:
        _COMPILED.move_to_end(key)
    return compiled(*args)


def clear_cache() -> None:
    """Forget every compiled program (the next run compiles again)."""
    _COMPILED.clear()


@contextmanager
def _progress_bar(enabled: bool, total: int, num_chains: int) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    columns = (
        TextColumn("[bold]{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.1f} steps/s x {task.fields[chains]} chains"),
        TextColumn("divergences: {task.fields[divergences]}"),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
    )
    with Progress(*columns, transient=False) as progress:
        task = progress.add_task("warmup", total=total, rate=0.0, chains=num_chains, divergences=0)
        yield lambda **fields: progress.update(task, **fields)


def _nonfinite_start_error(
    density: Any, positions: PyTree, is_finite: np.ndarray, why: str
) -> ValueError:
    chain = int(np.argmin(is_finite))
    position = jax.tree.map(lambda x: x[chain], positions)
    return ValueError(
        f"{why.format(chain=chain)} ({density.diagnose(position)}); "
        + (
            "pass finite `init_positions` or fix the model (e.g. a scale that can be zero, the "
            "log of a negative number, NaN in the data)."
        )
    )


def initial_positions(
    spec: Any,
    data: PyTree,
    config: SamplerConfig,
    key: PRNGKeyArray,
    num_chains: int,
    given: PyTree | None,
    watch: _Stopwatch,
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
        is_finite = np.asarray(_call("finite_start", spec, config, watch, data, given))
        if not is_finite.all():
            raise _nonfinite_start_error(
                spec.bind(data),
                given,
                is_finite,
                "at `init_positions` of chain {chain} the log density or its gradient is not "
                "finite",
            )
        return given
    positions = spec.initial_positions(key, num_chains)
    is_finite = np.zeros(num_chains, bool)  # rebound by every try (MAX_INIT_TRIES >= 1)
    for attempt in range(1, MAX_INIT_TRIES + 1):
        is_finite = np.asarray(_call("finite_start", spec, config, watch, data, positions))
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
        "uniform(-2, 2) in unconstrained space",
    )


def choose_chunk_size(num_warmup: int, num_draws: int) -> int:
    """About 20 progress updates per phase, between 10 and 2,000 steps per chunk.

    Args:
        num_warmup: warm-up steps.
        num_draws: draws.

    Returns:
        Steps per chunk.
    """
    return int(min(2000, max(10, math.ceil(max(num_warmup, num_draws, 1) / 20))))


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
        checkpoint: folder for atomic checkpoints after every chunk; a run started again
            with the same folder, target, data, settings and seed resumes where the last
            one stopped and gives the same draws as an uninterrupted run.

    Returns:
        The :class:`RunResult`.
    """
    key_positions, key_init, key_warmup, key_sample = jax.random.split(key, 4)
    watch = _Stopwatch()
    positions = initial_positions(
        spec, data, config, key_positions, num_chains, init_positions, watch
    )
    chunk = config.chunk_size
    schedule = WarmupSchedule(*(jnp.asarray(a) for a in build_schedule(num_warmup)))
    schedule = schedule if num_warmup > 0 else WarmupSchedule(*(jnp.zeros(1, bool),) * 2)

    with _progress_bar(progress, num_warmup + num_draws, num_chains) as update:
        states = _call(
            "warmup_init",
            spec,
            config,
            watch,
            data,
            positions,
            jax.random.split(key_init, num_chains),
        )
        seconds = {"warmup": 0.0, "sampling": 0.0}
        # Host arrays for every draw, filled chunk by chunk (no copy at the end).
        draws: dict[str, np.ndarray] = {}
        stats: dict[str, np.ndarray] = {}

        def store(start: int, chunk_draws: dict[str, Any], chunk_stats: dict[str, Any]) -> None:
            for store, values_by_name in ((draws, chunk_draws), (stats, chunk_stats)):
                for name, values in values_by_name.items():
                    if name not in store:
                        shape = (num_chains, num_draws, *values.shape[2:])
                        store[name] = np.empty(shape, values.dtype)
                    store[name][:, start : start + values.shape[1]] = values

        def collect(
            phase: str,
            phase_index: int,
            num_steps: int,
            start: int,
            steps: int,
            chunk_states: Any,
            chunk_draws: dict[str, Any],
            chunk_stats: dict[str, Any],
        ) -> tuple[int, int]:
            """Fetch a finished chunk: store its draws, checkpoint; return divergences, grads."""
            if phase == "sampling":
                chunk_draws, chunk_stats = jax.device_get((chunk_draws, chunk_stats))
                chunk_draws = {k: v[:, :steps] for k, v in chunk_draws.items()}
                chunk_stats = {k: v[:, :steps] for k, v in chunk_stats.items()}
                store(start, chunk_draws, chunk_stats)
                if checkpoint is not None:
                    save_chunk(checkpoint, start, chunk_draws, chunk_stats)
            else:
                chunk_stats = jax.device_get(
                    {k: chunk_stats[k][:, :steps] for k in ("diverging", "n_steps")}
                )
            if checkpoint is not None:
                finished = start + steps >= num_steps
                save_progress(
                    checkpoint,
                    run_fingerprint,
                    RunProgress(
                        chunk_states,
                        phase_index + 1 if finished else phase_index,
                        0 if finished else start + steps,
                        seconds,
                    ),
                )
            return int(chunk_stats["diverging"].sum()), int(chunk_stats["n_steps"].sum())

        first_phase, first_start = 0, 0
        warmup_grad_evals = 0
        if checkpoint is not None:
            run_fingerprint = fingerprint(
                spec.describe(),
                config,
                num_warmup,
                num_draws,
                jax.random.key_data(key),
                data=(data, positions),
            )
            saved = load_progress(checkpoint, run_fingerprint, states)
            if saved is not None:
                states = jax.tree.map(jnp.asarray, saved.states)
                first_phase, first_start, seconds = saved.phase, saved.start, saved.seconds
                num_sampled = (0, saved.start, num_draws)[saved.phase]
                for start, chunk_draws, chunk_stats in load_chunks(checkpoint, num_sampled):
                    store(start, chunk_draws, chunk_stats)
        done = (first_start, num_warmup + first_start, num_warmup + num_draws)[first_phase]
        phases = (("warmup", key_warmup, num_warmup), ("sampling", key_sample, num_draws))
        for phase_index, (phase, phase_key, num_steps) in enumerate(phases):
            if phase_index < first_phase:
                continue
            resume_at = first_start if phase_index == first_phase else 0
            if phase == "sampling" and resume_at == 0:
                # Sample with the averaged step size that dual averaging converged to.
                if num_warmup == 0 and config.initial_step_size is not None:
                    step_size = jnp.full_like(states.step_size, config.initial_step_size)
                else:
                    step_size = jax.vmap(_adaptation(spec, config, data).parameters)(states)[
                        "step_size"
                    ]
                states = states._replace(step_size=step_size)
            if update:
                update(description=phase, divergences=0, completed=done)
            keys = jax.random.split(phase_key, num_chains)
            divergences = 0
            compiled_before = watch.compile_seconds
            phase_tic = last_tic = time.perf_counter()
            # One chunk in flight: the next chunk is dispatched (asynchronously) before the
            # previous one's draws are fetched, so host work overlaps device work.
            pending = None
            for start in [*range(resume_at, num_steps, chunk), None]:
                dispatched = None
                if start is not None:
                    steps = min(chunk, num_steps - start)
                    states, chunk_draws, chunk_stats = _call(
                        "chunk",
                        spec,
                        config,
                        watch,
                        data,
                        states,
                        keys,
                        schedule,
                        jnp.asarray(start),
                        jnp.asarray(steps),
                        jnp.asarray(phase == "sampling"),
                    )
                    dispatched = (start, steps, states, chunk_draws, chunk_stats)
                if pending is not None:
                    num_divergent, num_grads = collect(phase, phase_index, num_steps, *pending)
                    divergences += num_divergent
                    warmup_grad_evals += num_grads if phase == "warmup" else 0
                    done += pending[1]
                    now = time.perf_counter()
                    if update:
                        rate = pending[1] / max(now - last_tic, 1e-9)
                        update(completed=done, rate=rate, divergences=divergences)
                    last_tic = now
                pending = dispatched
            compile_in_phase = watch.compile_seconds - compiled_before
            seconds[phase] += time.perf_counter() - phase_tic - compile_in_phase

    return RunResult(
        draws=draws,
        stats=stats,
        parameters=jax.device_get(
            {
                "step_size": states.step_size,
                "inverse_mass_matrix": states.inverse_mass_matrix.inverse,
            }
        ),
        warmup_grad_evals=warmup_grad_evals,
        compile_seconds=watch.compile_seconds,
        warmup_seconds=seconds["warmup"],
        sampling_seconds=seconds["sampling"],
    )
