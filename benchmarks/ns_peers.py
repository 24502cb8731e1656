"""probinfer nested sampling against BlackJAX, jaxns and dynesty, side by side in one process.

Run::

    .venv/bin/python benchmarks/ns_peers.py \
        [--targets box_2,box_10,box_30,shells_2,two_modes_2] \
        [--libraries probinfer,probinfer_slice,blackjax,jaxns,dynesty] [--seeds 5] \
        [--live-points 500] \
        [--out benchmarks/results/ns_peers] [--quick]

Writes ``ns_peers.md`` and ``ns_peers.json`` to ``--out``. ``--quick`` (a smoke test): targets
up to 10 dimensions, 1 seed, 100 live points (jaxns: 100 roots).

Targets, each a log likelihood on the unit cube's image under a prior transform (the same
functions in JAX and, for dynesty, in NumPy), with an exact or reference log Z:

- ``box_d`` (d = 2, 10, 30): a normalised N(0.5, 0.1^2 I) likelihood on the prior U(0, 1)^d;
  log Z = d log(Phi(5) - Phi(-5)) (about -1e-6 d).
- ``shells_2``: two Gaussian shells (radius 2, width 0.1, centres (+-3.5, 0)) on U(-6, 6)^2
  (Feroz & Hobson 2008); log Z by float64 grid integration (3001^2 points), ~ -1.746.
- ``two_modes_2``: 0.3 N((-2, -2), 0.3^2 I) + 0.7 N((2, 2), 0.3^2 I) on U(-5, 5)^2;
  log Z = log(0.01).

Libraries (``N`` = ``--live-points``, 500):

- ``probinfer``: ``pi.evidence(loglik, prior_transform=..., dim=d, method="ns",
  live_points=N)`` with its other defaults: N / 10 deleted per iteration, replacements drawn
  exactly by rejection from an ellipsoid around the live points (bootstrap-expanded, volume
  x 1.25) or from the whole cube, on every iteration where that is expected to accept at
  least 1 / (10 d) of its proposals, and otherwise by slice moves along directions whitened
  by the live points (5 d transitions per replacement); stopping when the live points could
  add at most 1% to Z; error bar = the spread of log Z over simulated prior-volume
  shrinkages.
- ``probinfer_slice``: the same with ``bound="none"``: slice moves only (like for like with
  BlackJAX's nested slice sampler).
- ``blackjax``: ``blackjax.nss`` (nested slice sampling, hit-and-run slices along directions
  shaped by the live points' covariance) on the unit cube (log prior 0 inside, -inf outside;
  the transform is applied inside the likelihood), N live points. It has no default for the
  inner steps nor a run loop: ``num_inner_steps = max(5, 2 d)`` (its docstring's recommended
  minimum), ``num_delete = N / 10`` (as probinfer, and as the NSS authors' experiments use;
  the library's default is 1), and the loop of its authors' reference implementation
  (yallup/nss): step until ``integrator.logZ_live - integrator.logZ < -3``, run here inside
  one jitted ``while_loop``. log Z and its error bar are the mean and standard deviation of
  ``logsumexp`` over the 100 simulated volume sequences of ``blackjax.ns.utils.log_weights``
  on the dead points plus the final live ones (``finalise``), as the authors do. Likelihood
  evaluations: N at the start, then per slice step 2 (the first bracket's ends) + the
  stepping-out expansions + the shrinkage proposals, summed from the kernel's ``SliceInfo``.
- ``jaxns``: ``jaxns.core.NestedSampler(model)`` with its defaults (30 d root live points,
  5 d slices per replacement, stopping at a remaining-evidence fraction of 1e-3), prior
  ``Uniform(0, 1)^d`` with the transform applied inside the likelihood; log Z and its error
  are ``to_result()``'s ``log_Z_mean`` and ``log_Z_uncert``; evaluations its
  ``total_num_likelihood_evaluations``. A run with a non-zero ``termination_reason`` (a hard
  stop, e.g. its sample buffer full) is counted as failed.
- ``dynesty``: ``dynesty.NestedSampler(loglik, prior_transform, d, nlive=N, bound="multi",
  sample="rslice")`` (NumPy likelihood, one point per call), ``run_nested(
  print_progress=False)`` (stopping at dlogz = 1e-3 (N - 1) + 0.01); log Z =
  ``results.logz[-1]``, error = ``results.logzerr[-1]``, evaluations =
  ``results.ncall.sum()``.

Precision: jaxns switches JAX to float64 when imported (its dtypes are fixed then); this
script restores JAX's setting after the import and runs jaxns alone under
``jax.enable_x64(True)``, so probinfer and BlackJAX run in JAX's default float32 unless
``--x64`` is given (then every JAX library runs in float64).

Methodology: for each target, every library is first set up and, for the JAX libraries, run
once with an unused seed so that compilation is not timed; then seeds are the outer loop and
libraries the inner one, so that machine load hits every library alike. Per run: log Z error
against the truth, the reported sigma, error / sigma, likelihood evaluations, warm wall
seconds (the sampler's run: the whole ``pi.evidence`` call minus any compile time it reports
for that call, BlackJAX's jitted loop, jaxns's ``run``, dynesty's construction and
``run_nested``), and apart from them the seconds of evidence post-processing after the run
(BlackJAX's ``log_weights``, which uses boolean indexing and so runs eagerly, op by op:
about 3 s on a 2-core CPU for each new number of dead points, almost all of it compiling the
ops for the new shapes, ~0.03 s when a shape repeats; jaxns's ``to_result``). Compile
seconds: probinfer reports its own; BlackJAX's is the ahead-of-time compile of the jitted
loop; jaxns cannot separate it, so it is estimated as its first (untimed) run's seconds
minus the median run's (warm + post; marked ``~``); dynesty compiles nothing. A run that
raises, does not converge or gives a non-finite log Z is a failed row, left out of the
means. Summary per target and library: RMSE and bias of log Z, mean |error| / sigma and rms
of error / sigma (1 for a calibrated error bar), the share of runs within 2 sigma, median
evaluations, median warm seconds and compile seconds.
"""

from __future__ import annotations

import argparse
import importlib.metadata
import json
import math
import os
import time
import warnings
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.ns.base import NSInfo, StateWithLogLikelihood
from blackjax.ns.utils import log_weights
from jax.scipy.special import logsumexp as jax_logsumexp
from scipy.special import logsumexp, ndtr

import probinfer as pi
from probinfer.bench import machine_description

LIBRARIES = ("probinfer", "probinfer_slice", "blackjax", "jaxns", "dynesty")
TARGETS = ("box_2", "box_10", "box_30", "shells_2", "two_modes_2")
QUICK_MAX_DIM = 10
QUICK_LIVE_POINTS = 100
WARMUP_SEED = 10_000
BOX_SIGMA = 0.1
SHELL_CENTRES = np.array([[-3.5, 0.0], [3.5, 0.0]])
SHELL_RADIUS, SHELL_WIDTH = 2.0, 0.1
MODE_SCALE, MODE_WEIGHTS = 0.3, (0.3, 0.7)
BLACKJAX_TERMINATION = -3.0  # stop when log Z_live - log Z < -3 (yallup/nss)
BLACKJAX_MAX_NATS = 200  # iteration cap: 200 N dead points (~200 nats of compression)


# ---------------------------------------------------------------------------------------
# Targets


def dim_of(target: str) -> int:
    """The dimension of a target, the number after its last underscore."""
    return int(target.rsplit("_", 1)[1])


class Problem:
    """One target: log likelihood and prior transform in JAX and NumPy, and its log Z."""

    def __init__(self, name: str) -> None:
        family = name.rsplit("_", 1)[0]
        self.name, self.dim = name, dim_of(name)
        if family == "box":
            self.log_z = self.dim * float(np.log(ndtr(0.5 / BOX_SIGMA) - ndtr(-0.5 / BOX_SIGMA)))
            self.loglik_jax, self.loglik_np = _box_jax, _box_np
            self.low, self.high = 0.0, 1.0
        elif family == "shells":
            self.loglik_jax, self.loglik_np = _shells_jax, _shells_np
            self.low, self.high = -6.0, 6.0
            self.log_z = _shells_log_z(self.low, self.high)
        elif family == "two_modes":
            self.loglik_jax, self.loglik_np = _two_modes_jax, _two_modes_np
            self.low, self.high = -5.0, 5.0
            self.log_z = float(np.log(0.01))
        else:
            raise ValueError(f"unknown target {name!r}; choose from {TARGETS}.")

    def transform_jax(self, u: jax.Array) -> jax.Array:
        """The prior transform ``u -> low + (high - low) u`` in JAX."""
        return self.low + (self.high - self.low) * u

    def transform_np(self, u: np.ndarray) -> np.ndarray:
        """The prior transform in NumPy (for dynesty)."""
        return self.low + (self.high - self.low) * u


def _box_jax(x: jax.Array) -> jax.Array:
    z = (x - 0.5) / BOX_SIGMA
    return jnp.sum(-0.5 * z**2 - jnp.log(BOX_SIGMA) - 0.5 * jnp.log(2 * jnp.pi))


def _box_np(x: np.ndarray) -> float:
    z = (x - 0.5) / BOX_SIGMA
    return float(np.sum(-0.5 * z**2 - np.log(BOX_SIGMA) - 0.5 * np.log(2 * np.pi)))


def _shell_terms(distance: Any, log: Callable) -> Any:
    width = SHELL_WIDTH
    return -0.5 * ((distance - SHELL_RADIUS) / width) ** 2 - 0.5 * log(2 * np.pi * width**2)


def _shells_jax(x: jax.Array) -> jax.Array:
    distance = jnp.linalg.norm(x[None, :] - jnp.asarray(SHELL_CENTRES, x.dtype), axis=1)
    return jax_logsumexp(_shell_terms(distance, jnp.log))


def _shells_np(x: np.ndarray) -> float:
    distance = np.linalg.norm(x[None, :] - SHELL_CENTRES, axis=1)
    return float(logsumexp(_shell_terms(distance, np.log)))


def _shells_log_z(low: float, high: float, num: int = 3001) -> float:
    """log Z of the shells by float64 grid integration over the prior box (row by row)."""
    grid = np.linspace(low, high, num)
    row_log_sums = np.empty(num)
    for i, y in enumerate(grid):
        points = np.stack([grid, np.full(num, y)], axis=-1)  # (num, 2)
        distance = np.linalg.norm(points[:, None, :] - SHELL_CENTRES[None], axis=2)
        row_log_sums[i] = logsumexp(logsumexp(_shell_terms(distance, np.log), axis=1))
    spacing = grid[1] - grid[0]
    return float(logsumexp(row_log_sums) + np.log(spacing**2 / (high - low) ** 2))


def _mode_terms(x: Any, xp: Any) -> tuple[Any, Any]:
    log_norm = -xp.log(2 * np.pi * MODE_SCALE**2)
    first = np.log(MODE_WEIGHTS[0]) + xp.sum(-0.5 * ((x + 2) / MODE_SCALE) ** 2) + log_norm
    second = np.log(MODE_WEIGHTS[1]) + xp.sum(-0.5 * ((x - 2) / MODE_SCALE) ** 2) + log_norm
    return first, second


def _two_modes_jax(x: jax.Array) -> jax.Array:
    return jnp.logaddexp(*_mode_terms(x, jnp))


def _two_modes_np(x: np.ndarray) -> float:
    return float(np.logaddexp(*_mode_terms(x, np)))


# ---------------------------------------------------------------------------------------
# One runner per library: ``measure(seed)`` returns a run record


class Runner:
    """A library set up (and compiled) on one target.

    Attributes:
        measure: ``seed -> {"log_z", "log_z_err", "num_evals", "seconds", "post_seconds",
            "converged", ...}``.
        compile_seconds: compile time, or None when it is estimated from ``first_seconds``.
        first_seconds: the untimed first run's wall seconds (JAX libraries), else None.
    """

    def __init__(
        self,
        measure: Callable[[int], dict[str, Any]],
        compile_seconds: float | None,
        first_seconds: float | None = None,
    ) -> None:
        self.measure = measure
        self.compile_seconds = compile_seconds
        self.first_seconds = first_seconds


def probinfer_runner(problem: Problem, live_points: int, **options: Any) -> Runner:
    """``pi.evidence(method="ns")`` with its defaults but ``live_points`` and ``options``."""
    settings: dict[str, Any] = {
        "prior_transform": problem.transform_jax,
        "dim": problem.dim,
        "method": "ns",
        "progress": False,
        "live_points": live_points,
        **options,
    }

    def once(seed: int) -> tuple[pi.EvidenceResult, float]:
        start = time.perf_counter()
        result = pi.evidence(problem.loglik_jax, seed=seed, **settings)
        return result, time.perf_counter() - start

    first, first_seconds = once(WARMUP_SEED)

    def measure(seed: int) -> dict[str, Any]:
        result, wall = once(seed)
        attrs = result.idata.attrs
        return {
            "log_z": float(result.log_z),
            "log_z_err": float(result.log_z_err),
            "num_evals": int(result.num_likelihood_evals),
            "seconds": wall - float(attrs["compile_seconds"]),
            "sampling_seconds": float(attrs["sampling_seconds"]),
            "compile_seconds": float(attrs["compile_seconds"]),
            "post_seconds": 0.0,
            "num_iterations": int(attrs["num_iterations"]),
            "num_bounded_iterations": int(attrs["num_bounded_iterations"]),
            "converged": True,  # pi.evidence raises when it does not converge
        }

    return Runner(measure, float(first.idata.attrs["compile_seconds"]), first_seconds)


def blackjax_runner(problem: Problem, live_points: int) -> Runner:
    """``blackjax.nss`` on the unit cube, its loop jitted, its evidence utilities after."""
    dim = problem.dim
    num_delete = max(1, live_points // 10)
    num_inner_steps = max(5, 2 * dim)
    max_iterations = BLACKJAX_MAX_NATS * live_points // num_delete

    def logprior(u: jax.Array) -> jax.Array:
        inside = jnp.all((u >= 0.0) & (u <= 1.0))
        return jnp.where(inside, 0.0, -jnp.inf).astype(u.dtype)

    def loglikelihood(u: jax.Array) -> jax.Array:
        return problem.loglik_jax(problem.transform_jax(u))

    algorithm = blackjax.nss(
        logprior_fn=logprior,
        loglikelihood_fn=loglikelihood,
        num_inner_steps=num_inner_steps,
        num_delete=num_delete,
    )

    def run(key: jax.Array) -> dict[str, jax.Array]:
        key_init, key_loop = jax.random.split(key)
        state = algorithm.init(jax.random.uniform(key_init, (live_points, dim)))
        dtype = state.particles.loglikelihood.dtype
        dead = jnp.full((max_iterations, num_delete), jnp.nan, dtype)

        def cond(carry: tuple) -> jax.Array:
            state, index = carry[0], carry[1]
            integrator = state.integrator
            remaining = integrator.logZ_live - integrator.logZ
            return (remaining >= BLACKJAX_TERMINATION) & (index < max_iterations)

        def body(carry: tuple) -> tuple:
            state, index, dead_ll, dead_birth, evals = carry
            state, info = algorithm.step(jax.random.fold_in(key_loop, index), state)
            slices = info.update_info  # SliceInfo, leaves (num_delete, num_inner_steps)
            evals = evals + jnp.sum(2 + slices.num_expansions + slices.num_shrink)
            dead_ll = dead_ll.at[index].set(info.particles.loglikelihood)
            dead_birth = dead_birth.at[index].set(info.particles.loglikelihood_birth)
            return state, index + 1, dead_ll, dead_birth, evals

        init = (state, jnp.zeros((), jnp.int32), dead, dead, jnp.zeros((), jnp.int32))
        state, index, dead_ll, dead_birth, evals = jax.lax.while_loop(cond, body, init)
        integrator = state.integrator
        return {
            "iterations": index,
            "dead_ll": dead_ll,
            "dead_birth": dead_birth,
            "live_ll": state.particles.loglikelihood,
            "live_birth": state.particles.loglikelihood_birth,
            "evals": evals,
            "integrator_log_z": jnp.logaddexp(integrator.logZ, integrator.logZ_live),
        }

    start = time.perf_counter()
    compiled = jax.jit(run).lower(jax.random.key(WARMUP_SEED)).compile()
    compile_seconds = time.perf_counter() - start

    def once(seed: int) -> dict[str, Any]:
        start = time.perf_counter()
        out = jax.block_until_ready(compiled(jax.random.key(seed)))
        sampled = time.perf_counter()
        iterations = int(out["iterations"])
        loglikelihood_ = jnp.concatenate([out["dead_ll"][:iterations].reshape(-1), out["live_ll"]])
        birth = jnp.concatenate([out["dead_birth"][:iterations].reshape(-1), out["live_birth"]])
        dummy = jnp.zeros(loglikelihood_.shape[0])
        finalised = NSInfo(StateWithLogLikelihood(dummy, dummy, loglikelihood_, birth), None)
        logw = log_weights(jax.random.key(seed + 1), finalised)  # (points, 100 volume draws)
        logw = jnp.nan_to_num(logw, nan=jnp.nan_to_num(logw).min())  # as yallup/nss
        log_zs = np.asarray(jax_logsumexp(logw, axis=0), np.float64)
        end = time.perf_counter()
        return {
            "log_z": float(np.mean(log_zs)),
            "log_z_err": float(np.std(log_zs)),
            "integrator_log_z": float(out["integrator_log_z"]),
            "num_evals": live_points + int(out["evals"]),
            "seconds": sampled - start,
            "post_seconds": end - sampled,
            "num_iterations": iterations,
            "converged": iterations < max_iterations,
        }

    start = time.perf_counter()
    once(WARMUP_SEED)  # the eager post-processing's first shapes
    first_seconds = compile_seconds + time.perf_counter() - start
    return Runner(once, compile_seconds, first_seconds)


def import_jaxns() -> dict[str, Any]:
    """jaxns's model, prior and sampler classes, leaving JAX's x64 setting as it was.

    Importing jaxns turns on ``jax_enable_x64`` for the whole process (and fixes its own
    dtypes to float64); the setting is restored after the import and jaxns is run under
    ``jax.enable_x64(True)`` only.
    """
    x64 = jax.config.jax_enable_x64
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message="JAX x64 is not enabled")
        from jaxns.core import NestedSampler
        from jaxns.model import Model
        from jaxns.priors import Prior
        from tensorflow_probability.substrates import jax as tfp

    jax.config.update("jax_enable_x64", x64)
    return {
        "NestedSampler": NestedSampler,
        "Model": Model,
        "Prior": Prior,
        "Uniform": tfp.distributions.Uniform,
    }


def jaxns_runner(problem: Problem, roots: int | None) -> Runner:
    """jaxns 3 ``NestedSampler`` with its defaults (``roots`` live points if given)."""
    jaxns = import_jaxns()
    dim = problem.dim

    def prior_model() -> jax.Array:
        uniform = jaxns["Uniform"](low=jnp.zeros(dim), high=jnp.ones(dim))
        u = jaxns["Prior"](uniform, name="u").realise()
        return problem.loglik_jax(problem.transform_jax(u))

    with jax.enable_x64(True):
        model = jaxns["Model"](prior_model=prior_model)
        sampler = jaxns["NestedSampler"](model=model, root_allocation_degree=roots)

    def once(seed: int) -> dict[str, Any]:
        with jax.enable_x64(True):
            start = time.perf_counter()
            state = sampler.run(key=jax.random.PRNGKey(seed))
            jax.block_until_ready(state)
            sampled = time.perf_counter()
            result = state.to_result()
            log_z, log_z_err = float(result.log_Z_mean), float(result.log_Z_uncert)
            end = time.perf_counter()
        reason = int(result.termination_reason)
        return {
            "log_z": log_z,
            "log_z_err": log_z_err,
            "num_evals": int(result.total_num_likelihood_evaluations),
            "seconds": sampled - start,
            "post_seconds": end - sampled,
            "num_samples": int(result.total_num_samples),
            "termination_reason": reason,
            "converged": reason == 0,
        }

    first = once(WARMUP_SEED)
    return Runner(once, None, first["seconds"] + first["post_seconds"])


def dynesty_runner(problem: Problem, live_points: int) -> Runner:
    """dynesty's static sampler, multi-ellipsoid bounds and random slices, NumPy likelihood."""
    import dynesty

    def once(seed: int) -> dict[str, Any]:
        start = time.perf_counter()
        sampler = dynesty.NestedSampler(
            problem.loglik_np,
            problem.transform_np,
            problem.dim,
            nlive=live_points,
            bound="multi",
            sample="rslice",
            rstate=np.random.default_rng(seed),
        )
        sampler.run_nested(print_progress=False)
        results = sampler.results
        seconds = time.perf_counter() - start
        return {
            "log_z": float(results.logz[-1]),
            "log_z_err": float(results.logzerr[-1]),
            "num_evals": int(np.sum(results.ncall)),
            "seconds": seconds,
            "post_seconds": 0.0,
            "num_iterations": int(results.niter),
            "converged": True,
        }

    return Runner(once, 0.0)


def make_runner(
    library: str, problem: Problem, live_points: int, jaxns_roots: int | None
) -> Runner:
    """The runner of one library on one target (set up and compiled)."""
    if library == "probinfer":
        return probinfer_runner(problem, live_points)
    if library == "probinfer_slice":
        return probinfer_runner(problem, live_points, bound="none")
    if library == "blackjax":
        return blackjax_runner(problem, live_points)
    if library == "jaxns":
        return jaxns_runner(problem, jaxns_roots)
    if library == "dynesty":
        return dynesty_runner(problem, live_points)
    raise ValueError(f"unknown library {library!r}; choose from {LIBRARIES}.")


def _failure(error: BaseException) -> dict[str, Any]:
    return {"failed": True, "error": f"{type(error).__name__}: {error}"[:500]}


def checked_run(runner: Runner, seed: int, truth: float) -> dict[str, Any]:
    """One run as a record; exceptions, non-convergence and non-finite log Z fail it."""
    try:
        run = runner.measure(seed)
    except Exception as error:  # any library failure is a failed row
        return {"seed": seed, **_failure(error)}
    run["seed"] = seed
    run["error"] = None
    finite = math.isfinite(run["log_z"]) and math.isfinite(run["log_z_err"])
    run["failed"] = not (run["converged"] and finite)
    if not run["converged"]:
        run["error"] = "did not converge"
    elif not finite:
        run["error"] = "non-finite log Z or error"
    run["log_z_error"] = run["log_z"] - truth
    if run["log_z_err"] > 0:
        run["z_score"] = run["log_z_error"] / run["log_z_err"]
    else:
        run["z_score"] = math.nan
    return run


# ---------------------------------------------------------------------------------------
# Summary and report


def summarize(runs: list[dict[str, Any]], runner: Runner | None) -> dict[str, Any]:
    """Statistics of one library's runs on one target (failed runs left out)."""
    good = [run for run in runs if not run["failed"]]
    nan = math.nan
    errors = np.array([run["log_z_error"] for run in good])
    z_scores = np.array([run["z_score"] for run in good])
    z_scores = z_scores[np.isfinite(z_scores)]
    summary: dict[str, Any] = {
        "runs": len(runs),
        "failed": len(runs) - len(good),
        "errors": sorted({run["error"] for run in runs if run["failed"]}),
        "bias": float(np.mean(errors)) if good else nan,
        "rmse": float(np.sqrt(np.mean(errors**2))) if good else nan,
        "mean_sigma": float(np.mean([run["log_z_err"] for run in good])) if good else nan,
        "mean_abs_z": float(np.mean(np.abs(z_scores))) if z_scores.size else nan,
        "rms_z": float(np.sqrt(np.mean(z_scores**2))) if z_scores.size else nan,
        "within_2_sigma": float(np.mean(np.abs(z_scores) <= 2)) if z_scores.size else nan,
        "median_evals": float(np.median([run["num_evals"] for run in good])) if good else nan,
        "median_seconds": float(np.median([run["seconds"] for run in good])) if good else nan,
        "median_post_seconds": (
            float(np.median([run["post_seconds"] for run in good])) if good else nan
        ),
        "compile_seconds": nan,
        "compile_estimated": False,
    }
    if runner is not None:
        if runner.compile_seconds is not None:
            summary["compile_seconds"] = runner.compile_seconds
        elif runner.first_seconds is not None and good:
            total = np.median([run["seconds"] + run["post_seconds"] for run in good])
            summary["compile_seconds"] = max(0.0, runner.first_seconds - float(total))
            summary["compile_estimated"] = True
    return summary


def _cell(value: Any, digits: int = 3) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_report(
    results: dict[str, dict[str, dict[str, Any]]],
    truths: dict[str, float],
    machine: dict[str, Any],
    settings: dict[str, Any],
) -> str:
    """The report: commit, machine, load and settings, then one table per target."""
    versions = ", ".join(f"{name} {version}" for name, version in settings["versions"].items())
    lines = [
        "# Nested sampling: probinfer vs BlackJAX vs jaxns vs dynesty",
        "",
        f"Commit {machine['commit']}, {machine['date']}. Machine: {machine['platform']}, "
        f"{machine['cpu']}, {machine['cores']} CPUs, backend {machine['backend']}; load "
        f"average {machine['load_average']} at the start, {settings['load_average_end']} at "
        f"the end. Versions: {versions}.",
        "",
        f"Settings: {settings['live_points']} live points (jaxns: "
        f"{settings['jaxns_roots'] or 'its default 30 d'} roots), {settings['seeds']} seeds "
        f"(seeds outer, libraries inner), JAX x64 {'on' if settings['x64'] else 'off'} "
        "(jaxns always in float64)"
        f"{', quick mode' if settings['quick'] else ''}; see the docstring of "
        "`benchmarks/ns_peers.py` for each library's settings. Error = log Z - truth; "
        "sigma = the library's reported error bar; z = error / sigma (rms z ~ 1 when sigma "
        "is calibrated); warm s = median wall seconds of a run after compilation; post s = "
        "median seconds of evidence post-processing after it (BlackJAX's eager `log_weights`, "
        "mostly op compilation for each new run length; jaxns's `to_result`), not in warm s; "
        "compile s marked ~ is estimated (first run minus the median warm + post). Failed "
        "runs (exception, not converged, non-finite) are left out of every statistic.",
        "",
    ]
    header = (
        "| library | runs | failed | bias | RMSE | mean sigma | mean abs z | rms z "
        "| within 2 sigma | median evals | median warm s | post s | compile s |"
    )
    for target, by_library in results.items():
        lines += [f"## {target} (log Z = {truths[target]:.6g})", "", header, "|" + "---|" * 13]
        notes = []
        for library, summary in by_library.items():
            compile_cell = _cell(summary["compile_seconds"], 2)
            if summary["compile_estimated"] and compile_cell != "-":
                compile_cell = "~" + compile_cell
            cells = [
                library,
                str(summary["runs"]),
                str(summary["failed"]),
                _cell(summary["bias"]),
                _cell(summary["rmse"]),
                _cell(summary["mean_sigma"]),
                _cell(summary["mean_abs_z"], 2),
                _cell(summary["rms_z"], 2),
                _cell(summary["within_2_sigma"], 2),
                _cell(summary["median_evals"], 0),
                _cell(summary["median_seconds"], 2),
                _cell(summary["median_post_seconds"], 2),
                compile_cell,
            ]
            lines.append("| " + " | ".join(cells) + " |")
            notes += [f"- {library} failures: {error}" for error in summary["errors"]]
        lines += ["", *notes, ""] if notes else [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------
# Command line


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--targets", default=None, help=f"comma-separated, from {TARGETS}")
    parser.add_argument("--libraries", default=",".join(LIBRARIES))
    parser.add_argument("--seeds", type=int, default=None, help="runs per library (default 5)")
    parser.add_argument("--live-points", type=int, default=None, help="default 500")
    parser.add_argument(
        "--jaxns-roots", type=int, default=None, help="jaxns root live points (its default 30 d)"
    )
    parser.add_argument("--x64", action="store_true", help="run every JAX library in float64")
    parser.add_argument("--quick", action="store_true", help="smoke test: d <= 10, 1 seed, 100")
    parser.add_argument("--out", default="benchmarks/results/ns_peers")
    arguments = parser.parse_args(argv)
    quick = arguments.quick
    if arguments.targets is None:
        targets = [t for t in TARGETS if not quick or dim_of(t) <= QUICK_MAX_DIM]
    else:
        targets = arguments.targets.split(",")
    arguments.targets = targets
    arguments.libraries = arguments.libraries.split(",")
    for option, allowed in (("targets", TARGETS), ("libraries", LIBRARIES)):
        unknown = sorted(set(getattr(arguments, option)) - set(allowed))
        if unknown:
            parser.error(f"unknown {option} {unknown}; choose from {list(allowed)}")
    if quick and any(dim_of(t) > QUICK_MAX_DIM for t in targets):
        parser.error(f"--quick runs targets of at most {QUICK_MAX_DIM} dimensions")
    if arguments.seeds is None:
        arguments.seeds = 1 if quick else 5
    if arguments.live_points is None:
        arguments.live_points = QUICK_LIVE_POINTS if quick else 500
    if quick and arguments.jaxns_roots is None:
        arguments.jaxns_roots = QUICK_LIVE_POINTS
    if arguments.seeds < 1 or arguments.live_points < 20:
        parser.error("--seeds must be >= 1 and --live-points >= 20")
    return arguments


def _versions(libraries: Sequence[str]) -> dict[str, str]:
    versions = {"jax": jax.__version__}
    for library in {name.split("_")[0] for name in libraries}:  # probinfer_slice: probinfer
        try:
            versions[library] = importlib.metadata.version(library)
        except importlib.metadata.PackageNotFoundError:
            versions[library] = "unknown"
    return versions


def main(argv: Sequence[str] | None = None) -> None:
    """Run every library on every target, seeds interleaved, and write the report."""
    arguments = parse_args(argv)
    if arguments.x64:
        jax.config.update("jax_enable_x64", True)
    if "jaxns" in arguments.libraries:
        import_jaxns()  # its import-time global settings, before any other library runs
    machine = machine_description()
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    runners: dict[str, dict[str, Runner | None]] = {}
    truths: dict[str, float] = {}
    for target in arguments.targets:
        problem = Problem(target)
        truths[target] = problem.log_z
        runs[target] = {library: [] for library in arguments.libraries}
        runners[target] = {}
        for library in arguments.libraries:
            start = time.perf_counter()
            try:
                runners[target][library] = make_runner(
                    library, problem, arguments.live_points, arguments.jaxns_roots
                )
                print(
                    f"{target:12s} {library:10s} set up in {time.perf_counter() - start:.1f} s",
                    flush=True,
                )
            except Exception as error:  # a set-up failure fails every run
                runners[target][library] = None
                print(f"{target:12s} {library:10s} set-up failed: {error!r}", flush=True)
                failure = _failure(error)
                runs[target][library] = [
                    {"seed": seed, **failure} for seed in range(arguments.seeds)
                ]
        for seed in range(arguments.seeds):
            for library in arguments.libraries:
                runner = runners[target][library]
                if runner is None:
                    continue
                run = checked_run(runner, seed, problem.log_z)
                runs[target][library].append(run)
                if run["failed"] and "log_z" not in run:
                    print(f"{target:12s} seed {seed:2d} {library:10s} FAILED {run['error']}")
                    continue
                print(
                    f"{target:12s} seed {seed:2d} {library:10s} log Z error "
                    f"{run['log_z_error']:+.3f} sigma {run['log_z_err']:.3f} "
                    f"z {run['z_score']:+.2f}  evals {run['num_evals']:10,d}  "
                    f"{run['seconds']:.2f} s{'  FAILED ' + run['error'] if run['failed'] else ''}",
                    flush=True,
                )
    results = {
        target: {
            library: summarize(library_runs, runners[target][library])
            for library, library_runs in by_library.items()
        }
        for target, by_library in runs.items()
    }
    settings = {
        "targets": arguments.targets,
        "libraries": arguments.libraries,
        "seeds": arguments.seeds,
        "live_points": arguments.live_points,
        "jaxns_roots": arguments.jaxns_roots,
        "x64": arguments.x64,
        "quick": arguments.quick,
        "versions": _versions(arguments.libraries),
        "load_average_end": [round(x, 2) for x in os.getloadavg()],
    }
    report = markdown_report(results, truths, machine, settings)
    payload = {
        "machine": machine,
        "settings": settings,
        "truths": truths,
        "results": results,
        "runs": runs,
    }
    (out / "ns_peers.json").write_text(json.dumps(payload, indent=2))
    (out / "ns_peers.md").write_text(report)
    print(report)


if __name__ == "__main__":
    main()
