"""probinfer NUTS against BlackJAX and NumPyro NUTS, side by side in one process.

Run::

    .venv/bin/python benchmarks/mcmc_peers.py \
        [--models M1,M2] [--samplers S1,S2] [--chains 4] [--warmup 1000] [--draws 1000] \
        [--repeats 1] [--out benchmarks/results]

Writes ``mcmc_peers.md``, ``mcmc_peers.json`` and ``mcmc_peers.png`` to ``--out`` and prints
one progress line per run.

Samplers (all NUTS, max tree depth 10, target acceptance 0.8, Stan-style window
adaptation; only the settings named below differ from each library's defaults):

- ``probinfer``: ``pi.sample(model, ..., method="nuts")`` with its defaults: dense inverse
  mass matrix when the flat dimension is <= 200 (so dense on every model here) and, on CPU,
  ``chain_method="sequential"``: the chains split into equal groups, one ``lax.map``
  program per group, the groups run at once from one host thread per usable core (2 here).
- ``probinfer_1core``: the same on one thread (``PROBINFER_CPU_THREADS=1``): one program
  maps all chains on one core, as the peers' programs run here. BlackJAX's and NumPyro's
  defaults use one core on a one-device CPU; NumPyro's ``chain_method="parallel"`` needs
  one device per chain (``numpyro.set_host_device_count`` before JAX starts), which a
  process with one CPU device does not have.
- ``probinfer_diag``: the same with ``metric="diag"``.
- ``probinfer_vmap``: the same as ``probinfer`` with ``chain_method="vectorized"``: the
  chains interleaved (no lock step) and, on a multi-core CPU, split into equal groups of
  at least two, one vmapped program per group, run at once from a host thread per core.
- ``probinfer_vmap_1core``: the same on one thread: one vmapped program for all chains on
  one core, as BlackJAX's and NumPyro's vectorized chains run here.
- ``blackjax``: ``blackjax.window_adaptation(blackjax.nuts, logdensity_fn)`` with its
  default diagonal mass matrix, vmapped over chains (per-chain adaptation, the pattern of
  BlackJAX's multiple-chains how-to), then ``blackjax.nuts(logdensity_fn, **params).step``
  vmapped over chains inside one ``lax.scan``, all under ``jax.jit``. The log density is
  ``-potential_fn`` from ``numpyro.infer.util.initialize_model`` (called once, off the
  clock) and chains start from uniform(-2, 2) points in unconstrained space drawn by a
  jitted function (NumPyro's ``init_to_uniform`` rule, which NumPyro and probinfer also
  use; its retries for invalid points are not needed by these models). Calling
  ``initialize_model`` per run instead would re-compile its search on every call. The
  only non-default argument, ``adaptation_info_fn`` filtered to ``num_integration_steps``
  and ``is_divergent``, changes what warm-up diagnostics are returned, not the algorithm
  (the default stores every warm-up state, including one mass matrix per step).
- ``blackjax_dense``: the same with ``is_mass_matrix_diagonal=False``.
- ``numpyro``: ``MCMC(NUTS(model), chain_method="vectorized")`` with its default diagonal
  mass matrix. NumPyro's ``"parallel"`` needs one device per chain and falls back to
  sequential on a one-device CPU, so ``"vectorized"`` is used. Warm-up and sampling are
  timed separately by calling ``mcmc.warmup(...)`` then ``mcmc.run(...)`` (NumPyro's
  documented way to split the phases); ``mcmc.post_warmup_state`` is reset before each run.
- ``numpyro_dense``: the same with ``NUTS(model, dense_mass=True)``.

Progress bars are off for all three: they are UI, and NumPyro documents that
``progress_bar=False`` is faster (with the bar on, it steps a jitted body from Python).
NumPyro 0.22 with ``progress_bar=False`` recompiles its sampling loop on every
``MCMC.run``/``warmup`` call (with the bar on it does not); this shows up in the "compile
per warm call" column and in ESS/s (end-to-end), not in the phase timings.

The default sampler set includes the variants because the libraries' defaults differ in
two ways that move the numbers a lot: probinfer adapts a dense mass matrix where the peers
adapt a diagonal one, and probinfer runs CPU chains sequentially where the peers vmap them
(vmapped NUTS chains move in lock step, each step costing the longest trajectory). The
ratios table therefore has rows for the libraries' defaults and rows with the metric (and
chain mapping) matched. ``--samplers probinfer,blackjax,numpyro`` runs the defaults only.

Methodology (identical for every sampler):

- Budgets: ``--chains`` chains, ``--warmup`` adaptation steps and ``--draws`` kept draws
  per chain, for every sampler. Repeat ``r`` (0-based) uses seed ``r`` for every sampler;
  ratios are taken per repeat (same seed) and averaged geometrically over repeats.
- Runs: for each (model, sampler), one *cold* run (seed ``PROBE_SEED``, the same for
  every sampler) in a process where that sampler's programs for that model have not been
  compiled yet, then the measured *warm* repeats: identical calls with seeds 0..R-1.
  End-to-end wall is the whole user-facing call: ``pi.sample``; BlackJAX's initial points
  + warm-up + sampling; NumPyro's ``warmup`` + ``run``.
- Compile seconds are measured the same way for all three libraries, from JAX's own
  compile timers: a ``jax.monitoring`` listener records the intervals of the events
  ``/jax/core/compile/{jaxpr_trace,jaxpr_to_mlir_module,backend_compile}_duration``
  (tracing, lowering, XLA compilation), and the compile time of a call (or phase) is the
  length of the union of those intervals inside it (a union, so nested traces are not
  counted twice). The headline "compile s" is that of the cold call, which is what a user
  pays on the first run. Warm calls are reported too: NumPyro 0.22 recompiles on every
  ``MCMC.run``/``warmup`` call (its traces are cached but XLA compiles again; checked with
  these timers), so a NumPyro user pays compile time on every run, while probinfer and the
  jitted BlackJAX functions compile once. As cross-checks the report also gives the
  method "cold end-to-end wall - mean warm end-to-end wall" (meaningless for NumPyro,
  whose warm calls also compile; it also carries seed-to-seed noise), and probinfer's own
  ``idata.attrs["compile_seconds"]`` (ahead-of-time ``lower().compile()`` of its driver
  programs only). The persistent (on-disk) compilation cache is disabled, and a trivial
  program is compiled first so that backend start-up is charged to no sampler. The order
  in which samplers take their cold run is rotated from model to model, and the warm
  runs of each repeat go in a shuffled order (seeded by model and repeat; the JSON's runs
  list keeps the order): the first call after NumPyro's runs was measured slower in code
  that compiles nothing (a NumPy ranking in probinfer's run diagnostics took 0.16-0.33 s
  of its thread's CPU time, against 0.01 s otherwise; no compile event, no garbage
  collection over 0.05 s, the same page-fault count), a machine effect whose cause was not
  found, so no sampler always takes that place.
- Warm-up and sampling seconds: wall time of each phase in the warm repeats, after
  ``block_until_ready``, minus the compile time inside the phase (zero except for
  NumPyro). probinfer: ``attrs["warmup_seconds"]`` and ``attrs["sampling_seconds"]`` (its
  driver's timers, which already exclude its compilation and its initial-point search).
  BlackJAX: the jitted vmapped warm-up and the jitted sampling scan (initial points
  excluded). NumPyro: ``mcmc.warmup`` (which includes NumPyro's own initial-point search;
  it cannot be separated) and ``mcmc.run``.
- ESS: arviz bulk ESS (rank-normalized) of every scalar coordinate of every latent sample
  site (constrained space; deterministic sites excluded); the minimum is reported.
  ESS/s = min ESS / (warm-up + sampling seconds); ESS/s (sampling) = min ESS / sampling
  seconds; ESS/s (end-to-end) = min ESS / end-to-end wall of a warm call (everything a
  repeat user waits for, recompilation included).
- Gradient evaluations: leapfrog steps, one gradient each, summed over chains and draws of
  the *sampling phase* (probinfer ``sample_stats.n_steps``; BlackJAX
  ``info.num_integration_steps``; NumPyro ``extra_fields=("num_steps",)``). ESS per 1000
  gradient evaluations uses sampling-phase counts for all three; warm-up counts
  (probinfer ``attrs["warmup_grad_evals"]``) are reported separately.
- Accuracy against the zoo reference (``probinfer.zoo.<name>.reference``): max over latent
  coordinates of |mean - reference mean| / reference sd, and of |sd - reference sd| /
  reference sd. Max R-hat is arviz's rank-normalized split R-hat. Divergences are counted
  over the sampling phase (peers' warm-up divergences reported separately).
- Precision: float32 everywhere. None of the benchmarked models needs x64
  (``X64_MODELS`` is empty); if one is added there, x64 is switched on for the whole
  process before anything runs and the report says so.
"""

from __future__ import annotations

import argparse
import datetime
import json
import math
import multiprocessing
import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np

DEFAULT_MODELS = (
    "gaussian_correlated_100d",
    "neals_funnel",
    "eight_schools_noncentered",
    "logistic_regression",
)
SAMPLERS = (
    "probinfer",
    "probinfer_1core",
    "probinfer_diag",
    "probinfer_vmap",
    "probinfer_vmap_1core",
    "blackjax",
    "blackjax_dense",
    "numpyro",
    "numpyro_dense",
)
# One line per sampler: library, mass matrix, chain mapping (for the report).
SAMPLER_NOTES = {
    "probinfer": (
        "probinfer",
        "dense (default, dim <= 200)",
        "sequential, a thread per core (CPU default)",
    ),
    "probinfer_1core": ("probinfer", "dense (default, dim <= 200)", "sequential, one thread"),
    "probinfer_diag": ("probinfer", "diagonal", "sequential, a thread per core (CPU default)"),
    "probinfer_vmap": (
        "probinfer",
        "dense (default, dim <= 200)",
        "vectorized, a thread per core (groups of 2+)",
    ),
    "probinfer_vmap_1core": ("probinfer", "dense (default, dim <= 200)", "vectorized, one thread"),
    "blackjax": ("blackjax", "diagonal (default)", "vmap"),
    "blackjax_dense": ("blackjax", "dense", "vmap"),
    "numpyro": ("numpyro", "diagonal (default)", "vectorized"),
    "numpyro_dense": ("numpyro", "dense", "vectorized"),
}
# (numerator, denominator, what is matched); rows appear when both samplers ran.
RATIO_PAIRS = (
    ("probinfer", "blackjax", "library defaults"),
    ("probinfer", "numpyro", "library defaults"),
    ("probinfer_1core", "blackjax", "library defaults, one core each"),
    ("probinfer_1core", "numpyro", "library defaults, one core each"),
    ("probinfer", "blackjax_dense", "dense metric"),
    ("probinfer", "numpyro_dense", "dense metric"),
    ("probinfer_diag", "blackjax", "diagonal metric"),
    ("probinfer_diag", "numpyro", "diagonal metric"),
    ("probinfer_vmap", "blackjax_dense", "dense metric, vectorized chains"),
    ("probinfer_vmap", "numpyro_dense", "dense metric, vectorized chains"),
    ("probinfer_vmap_1core", "blackjax_dense", "dense metric, vectorized chains, one core each"),
    ("probinfer_vmap_1core", "numpyro_dense", "dense metric, vectorized chains, one core each"),
)
# A run converged when its max R-hat is below this (the threshold of pi.sample's warning);
# a model's ratio row needs every compared run converged to enter the geometric mean.
RHAT_CONVERGED = 1.01
X64_MODELS: frozenset[str] = frozenset()  # models whose sampling needs float64: none
PROBE_SEED = 1_000_003
COMPILE_EVENTS = frozenset(
    f"/jax/core/compile/{name}_duration"
    for name in ("jaxpr_trace", "jaxpr_to_mlir_module", "backend_compile")
)


class CompileClock:
    """Intervals during which JAX traced, lowered or compiled, from ``jax.monitoring``."""

    def __init__(self) -> None:
        self.intervals: list[tuple[float, float]] = []

    def listener(self, event: str, duration: float, **kwargs: Any) -> None:
        """Record one compile-stage event (registered with ``jax.monitoring``).

        Args:
            event: the event name.
            duration: its duration in seconds, ending now.
            **kwargs: event metadata (ignored).
        """
        if event in COMPILE_EVENTS:
            end = time.perf_counter()
            self.intervals.append((end - duration, end))

    def seconds(self, start: float, end: float) -> float:
        """Length of the union of compile intervals inside ``[start, end]``.

        Args:
            start: ``time.perf_counter()`` at the start of the window.
            end: ``time.perf_counter()`` at its end.

        Returns:
            Seconds spent compiling in the window.
        """
        clipped = sorted(
            (max(a, start), min(b, end)) for a, b in self.intervals if b > start and a < end
        )
        total, cursor = 0.0, start
        for a, b in clipped:
            a = max(a, cursor)
            if b > a:
                total += b - a
                cursor = b
        return total


CLOCK = CompileClock()


@dataclass(frozen=True)
class Budget:
    """Per-chain budgets shared by every sampler."""

    chains: int
    warmup: int
    draws: int


@dataclass
class RawRun:
    """What one sampler call produced, before diagnostics.

    Attributes:
        draws: latent and deterministic sites, constrained, ``(chain, draw, ...)``.
        wall_seconds: end-to-end wall time of the user-facing call(s).
        compile_seconds: JAX compile time inside those calls (:class:`CompileClock`).
        warmup_seconds: wall time of the warm-up phase, compilation excluded.
        sampling_seconds: wall time of the sampling phase, compilation excluded.
        grads_sampling: leapfrog steps over all chains in the sampling phase.
        grads_warmup: the same for warm-up (None where the library does not report it).
        divergences: divergent transitions in the sampling phase.
        warmup_divergences: divergent transitions in warm-up (None if not reported).
        reported_compile_seconds: the library's own compile timer (probinfer only).
    """

    draws: dict[str, np.ndarray]
    wall_seconds: float
    compile_seconds: float
    warmup_seconds: float
    sampling_seconds: float
    grads_sampling: int
    grads_warmup: int | None
    divergences: int
    warmup_divergences: int | None
    reported_compile_seconds: float | None = None


@dataclass
class RunRecord:
    """One run's timings and diagnostics, as written to JSON."""

    model: str
    sampler: str
    seed: int
    is_cold: bool
    wall_seconds: float
    compile_seconds: float
    warmup_seconds: float
    sampling_seconds: float
    grads_sampling: int
    grads_warmup: int | None
    mean_grads_per_draw: float
    divergences: int
    warmup_divergences: int | None
    reported_compile_seconds: float | None
    overhead_seconds: float
    min_ess_bulk: float
    max_rhat: float
    max_mean_error_sd: float
    max_sd_error_rel: float
    ess_per_second: float
    ess_per_sampling_second: float
    ess_per_wall_second: float
    ess_per_1000_grads: float


Runner = Callable[[int], RawRun]


# --------------------------------------------------------------------------- samplers


def _probinfer_runner(
    zoo_model: ModuleType,
    args: tuple,
    kwargs: dict,
    budget: Budget,
    settings: dict[str, Any],
    threads: int | None = None,
) -> Runner:
    import probinfer as pi
    from probinfer.driver import THREADS_VARIABLE

    def run(seed: int) -> RawRun:
        saved = os.environ.get(THREADS_VARIABLE)
        if threads is not None:
            os.environ[THREADS_VARIABLE] = str(threads)
        try:
            tic = time.perf_counter()
            idata = pi.sample(
                zoo_model.model,
                *args,
                method="nuts",
                chains=budget.chains,
                warmup=budget.warmup,
                draws=budget.draws,
                seed=seed,
                progress=False,
                **settings,
                **kwargs,
            )
            toc = time.perf_counter()
        finally:
            if saved is None:
                os.environ.pop(THREADS_VARIABLE, None)
            else:
                os.environ[THREADS_VARIABLE] = saved
        stats = idata.sample_stats
        return RawRun(
            draws={name: np.asarray(idata.posterior[name].values) for name in idata.posterior},
            wall_seconds=toc - tic,
            compile_seconds=CLOCK.seconds(tic, toc),
            warmup_seconds=float(idata.attrs["warmup_seconds"]),
            sampling_seconds=float(idata.attrs["sampling_seconds"]),
            grads_sampling=int(np.asarray(stats["n_steps"]).sum()),
            grads_warmup=int(idata.attrs["warmup_grad_evals"]),
            divergences=int(np.asarray(stats["diverging"]).sum()),
            warmup_divergences=None,
            reported_compile_seconds=float(idata.attrs["compile_seconds"]),
        )

    return run


def _blackjax_runner(
    zoo_model: ModuleType, args: tuple, kwargs: dict, budget: Budget, *, dense: bool
) -> Runner:
    import blackjax
    import jax
    import jax.numpy as jnp
    from blackjax.adaptation.base import get_filter_adapt_info_fn
    from numpyro.infer.util import initialize_model

    # Once, off the clock: the unconstrained log density and the map back to constrained sites.
    model_info = initialize_model(
        jax.random.key(0),
        zoo_model.model,
        model_args=args,
        model_kwargs=kwargs,
        dynamic_args=False,
    )
    potential_fn, postprocess_fn = model_info.potential_fn, model_info.postprocess_fn
    prototype = model_info.param_info.z

    def logdensity_fn(position: Any) -> Any:
        return -potential_fn(position)

    @jax.jit
    def initial_positions(key: Any) -> Any:
        # NumPyro's init_to_uniform rule: uniform(-2, 2) in unconstrained space per chain.
        leaves, treedef = jax.tree.flatten(prototype)
        keys = jax.random.split(key, len(leaves))
        return treedef.unflatten(
            [
                jax.random.uniform(k, (budget.chains, *jnp.shape(leaf)), minval=-2.0, maxval=2.0)
                for k, leaf in zip(keys, leaves, strict=True)
            ]
        )

    warmup = blackjax.window_adaptation(
        blackjax.nuts,
        logdensity_fn,
        is_mass_matrix_diagonal=not dense,
        adaptation_info_fn=get_filter_adapt_info_fn(
            info_keys={"num_integration_steps", "is_divergent"}
        ),
    )

    @jax.jit
    def run_warmup(keys: Any, positions: Any) -> Any:
        def one_chain(key: Any, position: Any) -> Any:
            (state, parameters), info = warmup.run(key, position, num_steps=budget.warmup)
            return state, parameters, info.info.num_integration_steps, info.info.is_divergent

        return jax.vmap(one_chain)(keys, positions)

    @jax.jit
    def run_sampling(key: Any, states: Any, parameters: Any) -> Any:
        def step_one_chain(key: Any, state: Any, params: Any) -> Any:
            return blackjax.nuts(logdensity_fn, **params).step(key, state)

        def one_step(states: Any, key: Any) -> Any:
            keys = jax.random.split(key, budget.chains)
            states, infos = jax.vmap(step_one_chain)(keys, states, parameters)
            return states, (states.position, infos.num_integration_steps, infos.is_divergent)

        _, record = jax.lax.scan(one_step, states, jax.random.split(key, budget.draws))
        return record

    # Off the clock: map unconstrained draws to constrained sites (vmapped over chain, draw).
    constrain = jax.jit(jax.vmap(jax.vmap(postprocess_fn)))

    def run(seed: int) -> RawRun:
        key_init, key_warmup, key_sample = jax.random.split(jax.random.key(seed), 3)
        tic = time.perf_counter()
        positions = jax.block_until_ready(initial_positions(key_init))
        tic_warmup = time.perf_counter()
        warm = run_warmup(jax.random.split(key_warmup, budget.chains), positions)
        states, parameters, warmup_steps, warmup_divergent = jax.block_until_ready(warm)
        tic_sampling = time.perf_counter()
        record = jax.block_until_ready(run_sampling(key_sample, states, parameters))
        toc = time.perf_counter()
        unconstrained, steps, divergent = record  # leading axes (draw, chain)
        unconstrained = jax.tree.map(lambda x: x.swapaxes(0, 1), unconstrained)
        draws = jax.device_get(constrain(unconstrained))
        return RawRun(
            draws={name: np.asarray(value) for name, value in draws.items()},
            wall_seconds=toc - tic,
            compile_seconds=CLOCK.seconds(tic, toc),
            warmup_seconds=tic_sampling - tic_warmup - CLOCK.seconds(tic_warmup, tic_sampling),
            sampling_seconds=toc - tic_sampling - CLOCK.seconds(tic_sampling, toc),
            grads_sampling=int(np.asarray(steps).sum()),
            grads_warmup=int(np.asarray(warmup_steps).sum()),
            divergences=int(np.asarray(divergent).sum()),
            warmup_divergences=int(np.asarray(warmup_divergent).sum()),
        )

    return run


def _numpyro_runner(
    zoo_model: ModuleType, args: tuple, kwargs: dict, budget: Budget, *, dense: bool
) -> Runner:
    import jax
    from numpyro.infer import MCMC, NUTS

    mcmc = MCMC(
        NUTS(zoo_model.model, dense_mass=dense),
        num_warmup=budget.warmup,
        num_samples=budget.draws,
        num_chains=budget.chains,
        chain_method="vectorized",
        progress_bar=False,
    )

    def run(seed: int) -> RawRun:
        key_warmup, key_sample = jax.random.split(jax.random.key(seed))
        mcmc.post_warmup_state = None
        tic = time.perf_counter()
        mcmc.warmup(key_warmup, *args, extra_fields=("num_steps",), collect_warmup=True, **kwargs)
        jax.block_until_ready(mcmc.post_warmup_state)
        warmup_fields = jax.device_get(mcmc.get_extra_fields(group_by_chain=True))
        tic_sampling = time.perf_counter()
        mcmc.run(key_sample, *args, extra_fields=("num_steps",), **kwargs)
        samples = jax.block_until_ready(mcmc.get_samples(group_by_chain=True))
        toc = time.perf_counter()
        fields = jax.device_get(mcmc.get_extra_fields(group_by_chain=True))
        mcmc.post_warmup_state = None
        return RawRun(
            draws={name: np.asarray(value) for name, value in jax.device_get(samples).items()},
            wall_seconds=toc - tic,
            compile_seconds=CLOCK.seconds(tic, toc),
            warmup_seconds=tic_sampling - tic - CLOCK.seconds(tic, tic_sampling),
            sampling_seconds=toc - tic_sampling - CLOCK.seconds(tic_sampling, toc),
            grads_sampling=int(np.asarray(fields["num_steps"]).sum()),
            grads_warmup=int(np.asarray(warmup_fields["num_steps"]).sum()),
            divergences=int(np.asarray(fields["diverging"]).sum()),
            warmup_divergences=int(np.asarray(warmup_fields["diverging"]).sum()),
        )

    return run


def make_runner(
    sampler: str, zoo_model: ModuleType, args: tuple, kwargs: dict, budget: Budget
) -> Runner:
    """Build the callable ``seed -> RawRun`` for one sampler on one model.

    Args:
        sampler: a name in :data:`SAMPLERS`.
        zoo_model: the zoo module (``model``, ``data``, ``reference``).
        args: the model's positional arguments (the same objects for every sampler).
        kwargs: the model's keyword arguments.
        budget: chains, warm-up and draws.

    Returns:
        The runner; its first call compiles, later calls reuse the compiled programs.

    Raises:
        ValueError: for an unknown sampler name.
    """
    if sampler == "probinfer":
        return _probinfer_runner(zoo_model, args, kwargs, budget, {})
    if sampler == "probinfer_1core":
        return _probinfer_runner(zoo_model, args, kwargs, budget, {}, threads=1)
    if sampler == "probinfer_diag":
        return _probinfer_runner(zoo_model, args, kwargs, budget, {"metric": "diag"})
    if sampler in ("probinfer_vmap", "probinfer_vmap_1core"):
        return _probinfer_runner(
            zoo_model, args, kwargs, budget, {"chain_method": "vectorized"},
            threads=1 if sampler.endswith("1core") else None,
        )  # fmt: skip
    if sampler in ("blackjax", "blackjax_dense"):
        return _blackjax_runner(zoo_model, args, kwargs, budget, dense=sampler.endswith("dense"))
    if sampler in ("numpyro", "numpyro_dense"):
        return _numpyro_runner(zoo_model, args, kwargs, budget, dense=sampler.endswith("dense"))
    raise ValueError(f"unknown sampler {sampler!r}; choose from {SAMPLERS}.")


# --------------------------------------------------------------------------- diagnostics


def latent_sites(zoo_model: ModuleType, args: tuple, kwargs: dict) -> list[str]:
    """Names of the unobserved sample sites of a zoo model, in trace order.

    Args:
        zoo_model: the zoo module.
        args: the model's positional arguments.
        kwargs: the model's keyword arguments.

    Returns:
        The latent site names.
    """
    from numpyro import handlers

    trace = handlers.trace(handlers.seed(zoo_model.model, 0)).get_trace(*args, **kwargs)
    return [
        name for name, site in trace.items() if site["type"] == "sample" and not site["is_observed"]
    ]


def diagnose(raw: RawRun, latent: Sequence[str], reference: Any) -> dict[str, float]:
    """ESS, R-hat and errors against the reference over every latent scalar coordinate.

    Args:
        raw: the run.
        latent: latent site names.
        reference: the zoo model's ``Reference``.

    Returns:
        ``min_ess_bulk``, ``max_rhat``, ``max_mean_error_sd``, ``max_sd_error_rel``.

    Raises:
        KeyError: if a latent site is missing from the draws or the reference.
    """
    import arviz as az

    posterior = {name: raw.draws[name] for name in latent}
    idata = az.from_dict(posterior=posterior)
    ess = az.ess(idata, method="bulk")
    rhat = az.rhat(idata)
    # NumPy's min and max, not the built-ins, which keep or drop a NaN (a stuck chain's ESS
    # or R-hat) by its place in the list.
    min_ess = float(np.min([np.min(ess[name].values) for name in latent]))
    max_rhat = float(np.max([np.max(rhat[name].values) for name in latent]))
    max_mean_error, max_sd_error = 0.0, 0.0
    for name in latent:
        draws = posterior[name]
        flat = draws.reshape(draws.shape[0] * draws.shape[1], -1).astype(np.float64)
        moments = reference.moments[name]
        ref_mean, ref_sd = np.ravel(moments.mean), np.ravel(moments.sd)
        mean_error = np.abs(flat.mean(axis=0) - ref_mean) / ref_sd
        sd_error = np.abs(flat.std(axis=0, ddof=1) - ref_sd) / ref_sd
        max_mean_error = float(np.max([max_mean_error, mean_error.max()]))
        max_sd_error = float(np.max([max_sd_error, sd_error.max()]))
    return {
        "min_ess_bulk": min_ess,
        "max_rhat": max_rhat,
        "max_mean_error_sd": max_mean_error,
        "max_sd_error_rel": max_sd_error,
    }


def _ratio(numerator: float, denominator: float) -> float:
    if denominator > 0 and math.isfinite(numerator) and math.isfinite(denominator):
        return numerator / denominator
    return float("nan")


def record_run(
    model: str, sampler: str, seed: int, is_cold: bool, raw: RawRun, metrics: dict[str, float]
) -> RunRecord:
    """Combine a run's timings and diagnostics into the efficiency figures.

    Args:
        model: zoo model name.
        sampler: sampler name.
        seed: the run's seed.
        is_cold: whether this is the compile-probe (first) run.
        raw: the run.
        metrics: output of :func:`diagnose`.

    Returns:
        The record.
    """
    ess = metrics["min_ess_bulk"]
    num_draws = raw.draws[next(iter(raw.draws))].shape[:2]
    return RunRecord(
        model=model,
        sampler=sampler,
        seed=seed,
        is_cold=is_cold,
        wall_seconds=raw.wall_seconds,
        compile_seconds=raw.compile_seconds,
        warmup_seconds=raw.warmup_seconds,
        sampling_seconds=raw.sampling_seconds,
        grads_sampling=raw.grads_sampling,
        grads_warmup=raw.grads_warmup,
        mean_grads_per_draw=raw.grads_sampling / float(np.prod(num_draws)),
        divergences=raw.divergences,
        warmup_divergences=raw.warmup_divergences,
        reported_compile_seconds=raw.reported_compile_seconds,
        # The call's time outside its phases and compilation: set-up, fetching draws and
        # (probinfer) building InferenceData with diagnostics and log likelihoods.
        overhead_seconds=raw.wall_seconds
        - raw.compile_seconds
        - raw.warmup_seconds
        - raw.sampling_seconds,
        ess_per_second=_ratio(ess, raw.warmup_seconds + raw.sampling_seconds),
        ess_per_sampling_second=_ratio(ess, raw.sampling_seconds),
        ess_per_wall_second=_ratio(ess, raw.wall_seconds),
        ess_per_1000_grads=_ratio(ess, raw.grads_sampling / 1000.0),
        **metrics,
    )


# --------------------------------------------------------------------------- aggregation

SUMMED_FIELDS = (
    "wall_seconds",
    "compile_seconds",
    "warmup_seconds",
    "sampling_seconds",
    "overhead_seconds",
    "grads_sampling",
    "grads_warmup",
    "mean_grads_per_draw",
    "divergences",
    "warmup_divergences",
    "min_ess_bulk",
    "max_rhat",
    "max_mean_error_sd",
    "max_sd_error_rel",
    "ess_per_second",
    "ess_per_sampling_second",
    "ess_per_wall_second",
    "ess_per_1000_grads",
)
RATIO_FIELDS = (
    "ess_per_1000_grads",
    "ess_per_second",
    "ess_per_sampling_second",
    "ess_per_wall_second",
)


def _geomean(values: Sequence[float]) -> float:
    values = [v for v in values if math.isfinite(v) and v > 0]
    return float(np.exp(np.mean(np.log(values)))) if values else float("nan")


def aggregate(records: Sequence[RunRecord]) -> dict[str, dict[str, Any]]:
    """Per (model, sampler): means (and min, max) over the warm repeats, and compile seconds.

    ``compile_seconds`` is the JAX compile time of the cold call; ``warm_compile_seconds``
    the mean over warm calls; ``cold_minus_warm_wall`` and ``reported_compile_seconds``
    (probinfer's attribute, cold call) are the cross-checks.

    Args:
        records: every run, cold and warm.

    Returns:
        ``"model/sampler"`` -> summary dict.
    """
    summaries: dict[str, dict[str, Any]] = {}
    models = list(dict.fromkeys(r.model for r in records))
    keys = sorted(
        {(r.model, r.sampler) for r in records},
        key=lambda key: (models.index(key[0]), SAMPLERS.index(key[1])),
    )
    for model, sampler in keys:
        runs = [r for r in records if (r.model, r.sampler) == (model, sampler)]
        warm = [r for r in runs if not r.is_cold]
        cold = [r for r in runs if r.is_cold]
        summary: dict[str, Any] = {"model": model, "sampler": sampler, "repeats": len(warm)}
        for name in SUMMED_FIELDS:
            values = [getattr(r, name) for r in warm if getattr(r, name) is not None]
            if values:
                summary[name] = float(np.mean(values))
                summary[name + "_min"] = float(np.min(values))
                summary[name + "_max"] = float(np.max(values))
            else:
                summary[name] = None
        summary["warm_compile_seconds"] = summary.pop("compile_seconds")
        for suffix in ("_min", "_max"):
            summary.pop("compile_seconds" + suffix, None)
        summary["compile_seconds"] = cold[0].compile_seconds if cold else None
        summary["cold_wall_seconds"] = cold[0].wall_seconds if cold else None
        mean_warm_wall = summary["wall_seconds"]
        summary["cold_minus_warm_wall"] = (
            cold[0].wall_seconds - mean_warm_wall if cold and mean_warm_wall is not None else None
        )
        summary["reported_compile_seconds"] = cold[0].reported_compile_seconds if cold else None
        summaries[f"{model}/{sampler}"] = summary
    return summaries


def ratios(records: Sequence[RunRecord], summaries: dict[str, dict[str, Any]]) -> list[dict]:
    """probinfer / peer ratios per model and over models (geometric means over repeats).

    Args:
        records: every run.
        summaries: output of :func:`aggregate`.

    Returns:
        One dict per (pair, model), plus a ``"converged models"`` row per pair (geometric mean
        of the per-model ratios of the models where every compared run converged: max
        R-hat < ``RHAT_CONVERGED``; the others are shown with ``converged`` False).
    """
    rows = []
    models = list(dict.fromkeys(r.model for r in records))
    for numerator, denominator, matched in RATIO_PAIRS:
        pair_rows = []
        for model in models:
            top = {
                r.seed: r
                for r in records
                if (r.model, r.sampler, r.is_cold) == (model, numerator, False)
            }
            bottom = {
                r.seed: r
                for r in records
                if (r.model, r.sampler, r.is_cold) == (model, denominator, False)
            }
            seeds = sorted(set(top) & set(bottom))
            if not seeds:
                continue
            row: dict[str, Any] = {
                "pair": f"{numerator} / {denominator}",
                "matched": matched,
                "model": model,
                "repeats": len(seeds),
                "converged": all(
                    side[s].max_rhat < RHAT_CONVERGED for side in (top, bottom) for s in seeds
                ),
            }
            for name in RATIO_FIELDS:
                row[name] = _geomean(
                    [_ratio(getattr(top[s], name), getattr(bottom[s], name)) for s in seeds]
                )
            compile_top = summaries[f"{model}/{numerator}"]["compile_seconds"]
            compile_bottom = summaries[f"{model}/{denominator}"]["compile_seconds"]
            row["compile_seconds"] = (
                _ratio(compile_top, compile_bottom)
                if compile_top is not None and compile_bottom is not None
                else float("nan")
            )
            pair_rows.append(row)
        converged = [r for r in pair_rows if r["converged"]]
        if len(converged) > 1:
            overall: dict[str, Any] = {
                "pair": f"{numerator} / {denominator}",
                "matched": matched,
                "model": f"converged models (geomean of {len(converged)})",
                "repeats": min(r["repeats"] for r in converged),
                "converged": True,
            }
            for name in (*RATIO_FIELDS, "compile_seconds"):
                overall[name] = _geomean([r[name] for r in converged])
            pair_rows.append(overall)
        rows.extend(pair_rows)
    return rows


# --------------------------------------------------------------------------- reporting


def machine_description(x64_models: Sequence[str]) -> dict[str, Any]:
    """CPU, cores, load, library versions and date.

    Args:
        x64_models: selected models that needed x64 (empty: x64 off).

    Returns:
        The description.
    """
    import arviz
    import blackjax
    import jax
    import jaxlib
    import numpyro

    import probinfer
    from probinfer.bench import machine_description as probinfer_machine
    from probinfer.driver import host_threads

    cpu = probinfer_machine()["cpu"]
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True, check=False
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "probinfer"],
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip()
    except OSError:
        commit, dirty = "unknown", ""
    return {
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "cpu": cpu,
        "logical_cores": os.cpu_count(),
        "usable_cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "probinfer_threads": host_threads(),
        "load_average_at_start": list(os.getloadavg()),
        "platform": platform.platform(),
        "python": sys.version.split()[0],
        "jax_backend": jax.default_backend(),
        "jax_devices": [str(d) for d in jax.devices()],
        "versions": {
            "jax": jax.__version__,
            "jaxlib": jaxlib.__version__,
            "blackjax": blackjax.__version__,
            "numpyro": numpyro.__version__,
            "arviz": arviz.__version__,
            "probinfer": probinfer.__version__,
        },
        "probinfer_git": f"{commit}{' (probinfer/ has uncommitted changes)' if dirty else ''}",
        "x64": bool(x64_models),
        "x64_models": list(x64_models),
    }


def _table_row(cells: list[str]) -> str:
    """One markdown table row."""
    return "| " + " | ".join(cells) + " |"


def _fmt(value: Any, digits: int = 3) -> str:
    if value is None:
        return "-"
    if isinstance(value, int | np.integer):
        return f"{value:,}"
    value = float(value)
    if not math.isfinite(value):
        return "nan"
    if value != 0 and (abs(value) >= 10 ** (digits + 2) or abs(value) < 10 ** -(digits - 1)):
        return f"{value:.{digits - 1}e}"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.{digits}g}"


def markdown_report(
    machine: dict[str, Any],
    budget: Budget,
    repeats: int,
    summaries: dict[str, dict[str, Any]],
    ratio_rows: list[dict],
    total_seconds: float,
) -> str:
    """The markdown report: machine, budgets, per-run table, ratios, sampler notes.

    Args:
        machine: output of :func:`machine_description`.
        budget: the budgets.
        repeats: number of warm repeats.
        summaries: output of :func:`aggregate`.
        ratio_rows: output of :func:`ratios`.
        total_seconds: wall time of the whole benchmark.

    Returns:
        Markdown text.
    """
    versions = ", ".join(f"{k} {v}" for k, v in machine["versions"].items())
    precision = (
        "x64 for " + ", ".join(machine["x64_models"])
        if machine["x64"]
        else "float32 (no model needs x64)"
    )
    lines = [
        "# MCMC peers: probinfer vs BlackJAX vs NumPyro (NUTS)",
        "",
        f"- Date: {machine['date']}; total benchmark wall time {total_seconds:.0f} s",
        f"- Machine: {machine['cpu']}, {machine['logical_cores']} logical cores "
        f"({machine['usable_cores']} usable; probinfer's sequential chains on "
        f"{machine.get('probinfer_threads', 1)} host thread(s)), backend {machine['jax_backend']}, "
        f"load average at start {', '.join(f'{x:.2f}' for x in machine['load_average_at_start'])}"
        + (
            f"; {machine['background_load_processes']} busy-looping background process(es) "
            "(`--background-load`) throughout"
            if machine.get("background_load_processes")
            else ""
        ),
        f"- Versions: {versions}; probinfer git {machine['probinfer_git']}; "
        f"Python {machine['python']}",
        f"- Budgets: {budget.chains} chains x ({budget.warmup} warm-up + {budget.draws} draws); "
        f"{repeats} warm repeat(s) with seeds 0..{repeats - 1} plus one cold compile-probe run "
        f"(seed {PROBE_SEED}) per sampler and model",
        "- Precision: " + precision,
        "- Method: see the docstring of `benchmarks/mcmc_peers.py`. ESS = min arviz bulk ESS over "
        "latent scalar coordinates; gradient counts are sampling-phase leapfrog steps "
        "(warm-up counts in their own column); compile = JAX trace + lower + XLA compile "
        "time measured by `jax.monitoring` events; phase seconds exclude compilation; "
        "per-call overhead = end-to-end warm call minus compile, warm-up and sampling (for "
        "probinfer it includes building `InferenceData` with the run diagnostics and "
        "pointwise log likelihoods; BlackJAX's constraining of draws is off the clock); "
        "errors are against the zoo reference.",
        "",
        "## Timing (seconds; means over warm repeats)",
        "",
        "| model | sampler | compile (cold call) | compile per warm call | cold - warm wall "
        "| probinfer attr compile | warm-up | sampling | per-call overhead "
        "| end-to-end warm call |",
        "|" + "---|" * 10,
    ]
    for summary in summaries.values():
        lines.append(
            _table_row(
                [
                    summary["model"],
                    summary["sampler"],
                    _fmt(summary["compile_seconds"]),
                    _fmt(summary["warm_compile_seconds"]),
                    _fmt(summary["cold_minus_warm_wall"]),
                    _fmt(summary["reported_compile_seconds"]),
                    _fmt(summary["warmup_seconds"]),
                    _fmt(summary["sampling_seconds"]),
                    _fmt(summary["overhead_seconds"]),
                    _fmt(summary["wall_seconds"]),
                ]
            )
        )
    lines += [
        "",
        "## Efficiency and accuracy (means over warm repeats)",
        "",
        "| model | sampler | min ESS | ESS/s | ESS/s (sampling) | ESS/s (end-to-end) "
        "| grads (sampling) | grads (warm-up) | grads/draw | ESS/1000 grads | max R-hat "
        "| max mean err (sd) | max rel sd err | div (warm-up div) |",
        "|" + "---|" * 14,
    ]
    for summary in summaries.values():
        lines.append(
            _table_row(
                [
                    summary["model"],
                    summary["sampler"],
                    _fmt(summary["min_ess_bulk"], 4),
                    _fmt(summary["ess_per_second"]),
                    _fmt(summary["ess_per_sampling_second"]),
                    _fmt(summary["ess_per_wall_second"]),
                    _fmt(summary["grads_sampling"], 4),
                    _fmt(summary["grads_warmup"], 4),
                    _fmt(summary["mean_grads_per_draw"]),
                    _fmt(summary["ess_per_1000_grads"]),
                    _fmt(summary["max_rhat"], 4),
                    _fmt(summary["max_mean_error_sd"]),
                    _fmt(summary["max_sd_error_rel"]),
                    f"{_fmt(summary['divergences'])} ({_fmt(summary['warmup_divergences'])})",
                ]
            )
        )
    lines += [
        "",
        "## Ratios (probinfer / peer; > 1 means probinfer is better for ESS, slower to compile)",
        "",
        "Per-repeat ratios at equal seeds, geometric mean over repeats; the `converged "
        "models` row is the geometric mean over the models where every compared run "
        f"converged (max R-hat < {RHAT_CONVERGED}); a model marked `(unconverged)` is shown "
        "but left out of it. Compile: cold-call JAX compile time.",
        "",
        "| pair | matched | model | ESS/1000 grads | ESS/s | ESS/s (sampling) "
        "| ESS/s (end-to-end) | compile s |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in ratio_rows:
        lines.append(
            f"| {row['pair']} | {row['matched']} | "
            f"{row['model']}{'' if row['converged'] else ' (unconverged)'} | "
            f"{_fmt(row['ess_per_1000_grads'])} | {_fmt(row['ess_per_second'])} | "
            f"{_fmt(row['ess_per_sampling_second'])} | {_fmt(row['ess_per_wall_second'])} | "
            f"{_fmt(row['compile_seconds'])} |"
        )
    lines += [
        "",
        "## Samplers",
        "",
        "| sampler | library | mass matrix | chains mapped by |",
        "|---|---|---|---|",
    ]
    ran = list(dict.fromkeys(s["sampler"] for s in summaries.values()))
    for sampler in ran:
        library, metric, chains = SAMPLER_NOTES[sampler]
        lines.append(f"| {sampler} | {library} | {metric} | {chains} |")
    return "\n".join(lines) + "\n"


def bar_chart(summaries: dict[str, dict[str, Any]], path: Path) -> None:
    """Grouped bars (one group per model, one bar per sampler) of the efficiency figures.

    Args:
        summaries: output of :func:`aggregate`.
        path: the PNG to write.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    models = list(dict.fromkeys(s["model"] for s in summaries.values()))
    samplers = list(dict.fromkeys(s["sampler"] for s in summaries.values()))
    panels = (
        ("ess_per_1000_grads", "min bulk ESS per 1000 gradients"),
        ("ess_per_second", "min bulk ESS / s (warm-up + sampling)"),
        ("compile_seconds", "compile s, first call (JAX compile events)"),
    )
    fig, axes = plt.subplots(len(panels), 1, figsize=(max(8, 2.2 * len(models)), 11))
    width = 0.8 / max(len(samplers), 1)
    positions = np.arange(len(models))
    colors = plt.get_cmap("tab10")
    for ax, (field, title) in zip(axes, panels, strict=True):
        for index, sampler in enumerate(samplers):
            values = []
            for model in models:
                value = summaries.get(f"{model}/{sampler}", {}).get(field)
                values.append(value if value is not None and math.isfinite(value) else np.nan)
            ax.bar(
                positions + (index - (len(samplers) - 1) / 2) * width,
                values,
                width,
                label=sampler,
                color=colors(index),
            )
        ax.set_title(title)
        ax.set_xticks(positions, models, fontsize=8)
        if field != "compile_seconds":
            ax.set_yscale("log")
        ax.grid(axis="y", alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="upper center", ncol=min(len(samplers), 4), fontsize=8)
    fig.tight_layout(rect=(0, 0, 1, 0.95))
    fig.savefig(path, dpi=120)
    plt.close(fig)


# --------------------------------------------------------------------------- driver


def _parse_list(text: str, allowed: Sequence[str], option: str) -> list[str]:
    items = [item.strip() for item in text.split(",") if item.strip()]
    unknown = [item for item in items if item not in allowed]
    if unknown or not items:
        raise SystemExit(f"{option}: unknown or empty {unknown or text!r}; choose from {allowed}.")
    return items


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be an int >= 1, got {text}")
    return value


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options.

    Args:
        argv: arguments (default ``sys.argv[1:]``).

    Returns:
        The parsed options.
    """
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--models", default=",".join(DEFAULT_MODELS), help="comma-separated zoo model names"
    )
    parser.add_argument(
        "--samplers",
        default=",".join(SAMPLERS),
        help=f"comma-separated, from {', '.join(SAMPLERS)}",
    )
    parser.add_argument("--chains", type=_positive, default=4)
    parser.add_argument("--warmup", type=_positive, default=1000)
    parser.add_argument("--draws", type=_positive, default=1000)
    parser.add_argument(
        "--repeats",
        type=_positive,
        default=1,
        help="warm repeats per sampler and model (seeds 0..R-1)",
    )
    parser.add_argument(
        "--background-load",
        type=int,
        default=0,
        help="busy-looping processes run beside the benchmark (a loaded machine, "
        "reproducibly; recorded in the report)",
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    return parser.parse_args(argv)


def _busy_loop() -> None:
    """Spin forever: one process of ``--background-load``."""
    count = 0
    while True:
        count += 1


def start_background_load(num_processes: int) -> list[multiprocessing.Process]:
    """Start ``num_processes`` busy-looping daemon processes (stopped with the benchmark).

    Args:
        num_processes: how many.

    Returns:
        The processes.
    """
    context = multiprocessing.get_context("spawn")  # no copy of JAX's threads
    processes = [context.Process(target=_busy_loop, daemon=True) for _ in range(num_processes)]
    for process in processes:
        process.start()
    return processes


def main(argv: Sequence[str] | None = None) -> None:
    """Run the benchmark and write the markdown, JSON and PNG reports.

    Args:
        argv: command-line arguments (default ``sys.argv[1:]``).
    """
    options = parse_args(argv)
    from probinfer import zoo

    model_names = _parse_list(options.models, zoo.names(), "--models")
    samplers = _parse_list(options.samplers, SAMPLERS, "--samplers")
    x64_models = [name for name in model_names if name in X64_MODELS]

    import jax

    jax.config.update("jax_enable_compilation_cache", False)
    jax.monitoring.register_event_duration_secs_listener(CLOCK.listener)
    if x64_models:
        jax.config.update("jax_enable_x64", True)
    jax.block_until_ready(jax.jit(lambda x: jax.lax.fori_loop(0, 3, lambda i, y: y * 2, x))(1.0))

    budget = Budget(options.chains, options.warmup, options.draws)
    load = start_background_load(options.background_load)
    machine = machine_description(x64_models)
    machine["background_load_processes"] = options.background_load
    options.out.mkdir(parents=True, exist_ok=True)
    records: list[RunRecord] = []
    num_runs = len(model_names) * len(samplers) * (options.repeats + 1)
    start = time.perf_counter()
    print(
        f"mcmc_peers: {len(model_names)} models x {len(samplers)} samplers x "
        f"(1 cold + {options.repeats} warm) runs, {budget.chains} chains x "
        f"({budget.warmup} + {budget.draws}); {machine['cpu']}, "
        f"{machine['usable_cores']} cores, load {machine['load_average_at_start'][0]:.2f}",
        flush=True,
    )
    latent_by_model: dict[str, list[str]] = {}

    def execute(model: str, sampler: str, runner: Runner, seed: int, is_cold: bool) -> None:
        zoo_model = zoo.get(model)
        raw = runner(seed)
        metrics = diagnose(raw, latent_by_model[model], zoo_model.reference)
        record = record_run(model, sampler, seed, is_cold, raw, metrics)
        records.append(record)
        reported = (
            f" (attr compile {record.reported_compile_seconds:.2f} s)"
            if record.reported_compile_seconds is not None
            else ""
        )
        print(
            f"[{len(records)}/{num_runs}] {model:<26} {sampler:<15} seed={seed:<8} "
            f"{'cold' if is_cold else 'warm'} wall {record.wall_seconds:7.2f} s "
            f"(compile {record.compile_seconds:6.2f}, warm-up {record.warmup_seconds:6.2f}, "
            f"sampling {record.sampling_seconds:6.2f})"
            f"{reported} minESS {record.min_ess_bulk:7.1f} grads {record.grads_sampling:>9,} "
            f"rhat {record.max_rhat:.3f} err {record.max_mean_error_sd:.3f} sd "
            f"div {record.divergences}",
            flush=True,
        )

    for model_index, model in enumerate(model_names):
        zoo_model = zoo.get(model)
        args, kwargs = zoo_model.data()  # one set of objects, shared by every sampler
        latent_by_model[model] = latent_sites(zoo_model, args, kwargs)
        runners = {s: make_runner(s, zoo_model, args, kwargs, budget) for s in samplers}
        shift = model_index % len(samplers)
        for sampler in samplers[shift:] + samplers[:shift]:
            execute(model, sampler, runners[sampler], PROBE_SEED, True)
        for seed in range(options.repeats):  # interleaved, so load drift hits all samplers
            # In a shuffled order per repeat: the call right after NumPyro's runs is the slow
            # one (see the module docstring), and a rotation would keep the same sampler
            # there. The runs list in the JSON keeps the order they ran in.
            order = np.random.default_rng([model_index, seed]).permutation(len(samplers))
            for sampler in [samplers[i] for i in order]:
                execute(model, sampler, runners[sampler], seed, False)
        del runners

    total_seconds = time.perf_counter() - start
    machine["load_average_at_end"] = list(os.getloadavg())
    for process in load:
        process.terminate()
    summaries = aggregate(records)
    ratio_rows = ratios(records, summaries)
    result = {
        "benchmark": "mcmc_peers",
        "machine": machine,
        "budget": asdict(budget),
        "repeats": options.repeats,
        "probe_seed": PROBE_SEED,
        "models": model_names,
        "samplers": {
            s: dict(zip(("library", "mass_matrix", "chains"), SAMPLER_NOTES[s], strict=True))
            for s in samplers
        },
        "latent_sites": latent_by_model,
        "total_seconds": total_seconds,
        "summaries": summaries,
        "ratios": ratio_rows,
        "runs": [asdict(r) for r in records],
    }
    json_path = options.out / "mcmc_peers.json"
    json_path.write_text(json.dumps(result, indent=1, default=float) + "\n")
    markdown = markdown_report(
        machine, budget, options.repeats, summaries, ratio_rows, total_seconds
    )
    (options.out / "mcmc_peers.md").write_text(markdown)
    bar_chart(summaries, options.out / "mcmc_peers.png")
    print(markdown)
    print(
        f"wrote {json_path}, {options.out / 'mcmc_peers.md'}, {options.out / 'mcmc_peers.png'}"
        f" in {total_seconds:.0f} s",
        flush=True,
    )


if __name__ == "__main__":
    main()
