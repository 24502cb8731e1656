"""probinfer tempered SMC against BlackJAX and ``particles``, side by side in one process.

Run::

    .venv/bin/python benchmarks/smc_peers.py \
        [--models linear_regression,gaussian_mixture_2d] [--seeds 10] [--particles 1000] \
        [--out benchmarks/results/smc_peers]

Writes ``smc_peers.md``, ``smc_peers.json`` and ``smc_peers.png`` to ``--out``.

Models: the zoo's ``linear_regression`` (6-d, exact Gaussian posterior) and
``gaussian_mixture_2d`` (two modes 15 sd apart), both with an exact log-evidence. Every
library gets the same log prior and log likelihood, written once in JAX (probinfer,
BlackJAX) and once in NumPy (``particles``, which is NumPy code), and starts from prior
draws.

Samplers, all adaptive tempering from prior to posterior with the next exponent chosen so
that the (conditional, in probinfer) ESS of the reweighting is half the particle count
(after a resampling, as in BlackJAX and ``particles`` at every step, the two coincide),
``N`` particles (1000) per run:

- ``probinfer`` (like for like): :func:`probinfer.smc.tempered_smc` with random-walk moves
  (``mcmc.rwm``; proposal covariance = the particles' covariance times a step size that
  starts at 2.38^2 / d and is adapted towards 23% acceptance), 9 transitions per particle
  and step, resampling when the ESS falls below N / 2 (its default).
- ``blackjax``: ``blackjax.inner_kernel_tuning`` over ``blackjax.adaptive_tempered_smc``
  (target ESS 0.5, systematic resampling at every step) with BlackJAX's additive-step
  random walk, proposal = 2.38 / sqrt(d) times the Cholesky factor of the particles'
  covariance (Roberts-Gelman-Gilks scaling, as ``particles`` does), 9 transitions.
- ``particles``: ``AdaptiveTempering(model, wastefree=False, len_chain=10)`` (9 random-walk
  transitions with the same 2.38 / sqrt(d) covariance scaling), ``SMC(N=N)``.
- ``probinfer_wf``, ``blackjax_wf``, ``particles_wf``: waste-free SMC with chains of length
  P = 10 from N / 10 resampled ancestors (``chain_length=10, num_mcmc_steps=1`` in
  probinfer; ``update_strategy=waste_free_smc(N, 10)`` in BlackJAX; ``particles``'s
  default ``AdaptiveTempering(model)`` with ``SMC(N=N / 10)``, which is exactly its default
  ``N=100`` for N = 1000).
- ``probinfer_wf_budget``: waste-free at the standard samplers' cost per tempering step:
  3 N particles in chains of P = 10 kept states, 3 transitions apart (3 N x 3 = 9 N
  evaluations per step, as N particles x 9 transitions), so that waste-free and standard
  SMC are compared at (about) equal likelihood evaluations.
- ``probinfer_adaptive``: like ``probinfer`` with ``adapt_num_mcmc_steps=True`` (up to 30
  transitions, stopping when the particles stop mixing).
- ``probinfer_evidence``: the public ``pi.evidence`` at the same total budget: 8 replicas
  and the tuning replica that tunes them, N / 9 particles each, RWM moves, 9 transitions;
  it reports an error bar (the replicas' spread), so its coverage can be measured.
- ``probinfer_default``: ``pi.evidence`` with its defaults (8 replicas x 500 particles,
  MALA moves, 10 transitions): more evaluations, shown as what a user gets by default.

Likelihood evaluations are counted per particle: probinfer counts its own (every
transition, plus one per chain for the kernel's initial state); ``particles`` is counted
exactly by wrapping the model's ``loglik``; BlackJAX cannot be instrumented inside its
jitted loop, so its count is from its code: per tempering step, N for the exponent search,
N for the MCMC initial states (N / P waste-free), N x transitions (N - N / P waste-free) and
N for the new weights.

Methodology: seeds are the outer loop and samplers the inner one, so that machine load
hits every library alike. JAX samplers run their whole tempering loop in one jitted
``while_loop`` (probinfer's blocks and BlackJAX alike; ``pi.evidence`` runs on its own
driver in chunks), compiled by a first call with an unused seed that is not timed. A run
whose log Z is not finite is shown as not converged and left out of the means. Reported
per sampler: the mean error of log Z (bias), its standard deviation over seeds, the RMSE,
the mean likelihood evaluations and wall seconds, and "RMSE at 1M evaluations", the RMSE
scaled by sqrt(evaluations / 1e6): the error that sampler would have at a budget of one
million evaluations if its variance falls as 1 / cost, so that samplers that spend
different budgets can be compared per evaluation. For samplers with an error bar, coverage
is the fraction of seeds with |error| <= 2 reported standard errors (with 8 replicas the
error bar is a t statistic with 7 degrees of freedom: 91.5% nominal; a run that did not
converge is shown in "not conv." and left out of the coverage too).
"""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from types import ModuleType
from typing import Any

import blackjax
import jax
import jax.numpy as jnp
import numpy as np
from blackjax.smc.tuning.from_particles import particles_covariance_matrix
from blackjax.smc.waste_free import waste_free_smc
from scipy.special import logsumexp

import probinfer as pi
from probinfer import mcmc, smc, zoo
from probinfer.bench import machine_description
from probinfer.model import Target

SAMPLERS = (
    "probinfer",
    "blackjax",
    "particles",
    "probinfer_wf",
    "blackjax_wf",
    "particles_wf",
    "probinfer_wf_budget",
    "probinfer_adaptive",
    "probinfer_evidence",
    "probinfer_default",
)
MODELS = ("linear_regression", "gaussian_mixture_2d")
NUM_TRANSITIONS = 9
CHAIN_LENGTH = 10
REPLICAS = 8
MAX_ADAPTIVE_TRANSITIONS = 30
WARMUP_SEED = 10_000


class Problem:
    """One model's prior and likelihood in JAX and in NumPy, and its exact log Z."""

    def __init__(self, name: str) -> None:
        zoo_model = zoo.get(name)
        self.name = name
        self.log_z = float(zoo_model.reference.log_z)
        args, _ = zoo_model.data()
        if name == "linear_regression":
            x, sigma, y = (np.asarray(a, np.float64) for a in args)
            design = np.concatenate([x, np.ones((x.shape[0], 1))], axis=1)
            self.dim, self.prior_scale = design.shape[1], 1.0

            def loglik_np(z: np.ndarray) -> np.ndarray:
                residual = y[None, :] - z @ design.T
                return np.sum(
                    -0.5 * (residual / sigma) ** 2 - np.log(sigma) - 0.5 * np.log(2 * np.pi),
                    axis=1,
                )

            design_j, y_j = jnp.asarray(design, jnp.float32), jnp.asarray(y, jnp.float32)

            def loglik_jax(z: jax.Array) -> jax.Array:
                residual = y_j - design_j @ z
                return jnp.sum(
                    -0.5 * (residual / sigma) ** 2 - jnp.log(sigma) - 0.5 * jnp.log(2 * jnp.pi)
                )

        elif name == "gaussian_mixture_2d":
            (y,), _ = zoo_model.data()
            offsets, log_probs = zoo_model.OFFSETS, np.log(zoo_model.OFFSET_PROBS)
            noise = zoo_model.NOISE_SCALE
            self.dim, self.prior_scale = 2, zoo_model.PRIOR_SCALE
            norm_const = -2 * np.log(noise) - np.log(2 * np.pi)

            def loglik_np(z: np.ndarray) -> np.ndarray:
                diff = y[None, None, :] - z[:, None, :] - offsets[None, :, :]  # (N, K, 2)
                terms = -0.5 * np.sum(diff**2, axis=2) / noise**2 + norm_const + log_probs
                return logsumexp(terms, axis=1)

            offsets_j, log_probs_j = jnp.asarray(offsets), jnp.asarray(log_probs)
            y_j = jnp.asarray(y)

            def loglik_jax(z: jax.Array) -> jax.Array:
                diff = y_j - z[None, :] - offsets_j
                terms = -0.5 * jnp.sum(diff**2, axis=1) / noise**2 + norm_const + log_probs_j
                return jax.nn.logsumexp(terms)

        else:
            raise ValueError(f"no peer benchmark problem for {name!r}; choose from {MODELS}.")
        self.loglik_np, self.loglik_jax = loglik_np, loglik_jax

    def logprior_jax(self, z: jax.Array) -> jax.Array:
        """Log density of N(0, prior_scale^2 I) at ``z (dim,)``."""
        scale = self.prior_scale
        return jnp.sum(-0.5 * (z / scale) ** 2 - jnp.log(scale) - 0.5 * jnp.log(2 * jnp.pi))

    def sample_prior_jax(self, key: jax.Array, num: int) -> jax.Array:
        """``num`` prior draws, ``(num, dim)``."""
        return self.prior_scale * jax.random.normal(key, (num, self.dim))


# ---------------------------------------------------------------------------------------
# One runner per library: each returns {"log_z", "num_evals", "seconds"} (and "log_z_err")


def _timed(run: Callable[[jax.Array], Any], seed: int) -> tuple[Any, float]:
    start = time.perf_counter()
    out = jax.block_until_ready(run(jax.random.key(seed)))
    return out, time.perf_counter() - start


def probinfer_blocks_runner(problem: Problem, num: int, **settings: Any) -> Callable:
    """probinfer's tempered SMC blocks in one jitted loop."""
    target = Target.from_parts(problem.logprior_jax, problem.loglik_jax)
    sampler = smc.tempered_smc(target, mcmc.rwm, **settings)

    @jax.jit
    def run(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        key_init, key_loop = jax.random.split(key)
        state = sampler.init(problem.sample_prior_jax(key_init, num))

        def body(carry: tuple) -> tuple:
            state, evals, index = carry
            state, info = sampler.step(jax.random.fold_in(key_loop, index), state)
            return state, evals + info.num_evals, index + 1

        state, evals, _ = jax.lax.while_loop(
            lambda carry: carry[0].inverse_temperature < 1.0, body, (state, num, 0)
        )
        return state.log_z, evals

    run(jax.random.key(WARMUP_SEED))

    def measure(seed: int) -> dict[str, float]:
        (log_z, evals), seconds = _timed(run, seed)
        return {"log_z": float(log_z), "num_evals": int(evals), "seconds": seconds}

    return measure


def blackjax_runner(problem: Problem, num: int, *, waste_free: bool) -> Callable:
    """BlackJAX adaptive tempered SMC with particle-covariance random-walk moves."""
    random_walk = blackjax.additive_step_random_walk.build_kernel()
    scale = 2.38 / math.sqrt(problem.dim)

    def step_fn(key: jax.Array, state: Any, logdensity_fn: Callable, chol: jax.Array) -> Any:
        return random_walk(key, state, logdensity_fn, blackjax.mcmc.random_walk.normal(chol))

    def proposal_scale(particles_: jax.Array) -> jax.Array:
        covariance = particles_covariance_matrix(particles_)
        ridge = 1e-6 * jnp.eye(problem.dim)
        return scale * jnp.linalg.cholesky(covariance + ridge)[None]

    extra: dict[str, Any] = {}
    num_transitions: int | None = NUM_TRANSITIONS
    if waste_free:
        extra["update_strategy"] = waste_free_smc(num, CHAIN_LENGTH)
        num_transitions = None
    algorithm = blackjax.inner_kernel_tuning(
        smc_algorithm=blackjax.adaptive_tempered_smc,
        logprior_fn=problem.logprior_jax,
        loglikelihood_fn=problem.loglik_jax,
        mcmc_step_fn=step_fn,
        mcmc_init_fn=blackjax.additive_step_random_walk.init,
        resampling_fn=blackjax.smc.resampling.systematic,
        mcmc_parameter_update_fn=lambda key, state, info: {"chol": proposal_scale(state.particles)},
        initial_parameter_value={"chol": jnp.zeros((1, problem.dim, problem.dim))},
        num_mcmc_steps=num_transitions,
        target_ess=0.5,
        **extra,
    )
    if waste_free:
        ancestors = num // CHAIN_LENGTH
        evals_per_step = num + ancestors + (num - ancestors) + num
    else:
        evals_per_step = num + num + num * NUM_TRANSITIONS + num

    @jax.jit
    def run(key: jax.Array) -> tuple[jax.Array, jax.Array]:
        key_init, key_loop = jax.random.split(key)
        positions = problem.sample_prior_jax(key_init, num)
        state = algorithm.init(positions)
        # The first move's proposal from the prior draws, as the other libraries do.
        state = state._replace(parameter_override={"chol": proposal_scale(positions)})

        def body(carry: tuple) -> tuple:
            state, log_z, index = carry
            state, info = algorithm.step(jax.random.fold_in(key_loop, index), state)
            return state, log_z + info.log_likelihood_increment, index + 1

        _, log_z, steps = jax.lax.while_loop(
            lambda carry: carry[0].sampler_state.tempering_param < 1.0,
            body,
            (state, jnp.zeros(()), 0),
        )
        return log_z, steps

    run(jax.random.key(WARMUP_SEED))

    def measure(seed: int) -> dict[str, float]:
        (log_z, steps), seconds = _timed(run, seed)
        evals = int(steps) * evals_per_step  # blackjax's init evaluates nothing
        return {"log_z": float(log_z), "num_evals": evals, "seconds": seconds}

    return measure


def _import_particles() -> tuple[ModuleType, ModuleType, ModuleType]:
    """``particles`` 0.3 and its ``distributions`` and ``smc_samplers`` modules.

    particles 0.3 uses NumPy aliases that NumPy 2 removed (``np.float``, ``np.int``); they
    are restored before the import. (particles 0.4 pins numpy<2, which current JAX cannot use.)
    """
    for alias, alias_type in (("float", float), ("int", int)):
        if alias not in np.__dict__:
            setattr(np, alias, alias_type)
    import particles
    from particles import distributions, smc_samplers

    return particles, distributions, smc_samplers


def particles_runner(problem: Problem, num: int, *, waste_free: bool) -> Callable:
    """``particles``'s AdaptiveTempering (NumPy), likelihood evaluations counted exactly."""
    particles, particle_dists, smc_samplers = _import_particles()
    counter = {"evals": 0}

    class StaticModel(smc_samplers.StaticModel):
        def loglik(self, theta: Any, t: int | None = None) -> np.ndarray:
            array = smc_samplers.view_2d_array(theta)
            counter["evals"] += array.shape[0]
            return problem.loglik_np(array)

    prior = particle_dists.IndepProd(
        *[particle_dists.Normal(scale=problem.prior_scale)] * problem.dim
    )
    model = StaticModel(prior=prior)

    def measure(seed: int) -> dict[str, float]:
        np.random.seed(seed)
        counter["evals"] = 0
        kept = CHAIN_LENGTH
        feynman_kac = smc_samplers.AdaptiveTempering(
            model=model, wastefree=waste_free, len_chain=kept if waste_free else 10
        )
        algorithm = particles.SMC(
            fk=feynman_kac, N=num // kept if waste_free else num, verbose=False
        )
        start = time.perf_counter()
        algorithm.run()
        seconds = time.perf_counter() - start
        return {"log_z": float(algorithm.logLt), "num_evals": counter["evals"], "seconds": seconds}

    return measure


def evidence_runner(problem: Problem, num: int, *, defaults: bool) -> Callable:
    """The public ``pi.evidence`` (replicas give an error bar)."""
    density = pi.LogDensity(
        init=jnp.zeros(problem.dim),
        logprior_fn=problem.logprior_jax,
        loglikelihood_fn=problem.loglik_jax,
        sample_prior_fn=lambda key: problem.sample_prior_jax(key, 1)[0],
    )
    settings: dict[str, Any] = {"progress": False}
    if not defaults:
        settings.update(
            particles=num // (REPLICAS + 1), replicas=REPLICAS, move="rwm",
            num_mcmc_steps=NUM_TRANSITIONS,
        )  # fmt: skip
    pi.evidence(density, seed=WARMUP_SEED, **settings)

    def measure(seed: int) -> dict[str, float]:
        result = pi.evidence(density, seed=seed, **settings)
        return {
            "log_z": result.log_z,
            "log_z_err": result.log_z_err,
            "num_evals": result.num_likelihood_evals,
            "seconds": result.idata.attrs["sampling_seconds"],
        }

    return measure


def make_runner(sampler: str, problem: Problem, num: int) -> Callable:
    """The measuring function of one sampler on one problem (compiled, if JAX)."""
    if sampler == "probinfer":
        return probinfer_blocks_runner(problem, num, num_mcmc_steps=NUM_TRANSITIONS)
    if sampler == "probinfer_wf":
        return probinfer_blocks_runner(problem, num, num_mcmc_steps=1, chain_length=CHAIN_LENGTH)
    if sampler == "probinfer_wf_budget":
        return probinfer_blocks_runner(
            problem, 3 * num, num_mcmc_steps=3, chain_length=CHAIN_LENGTH
        )
    if sampler == "probinfer_adaptive":
        return probinfer_blocks_runner(
            problem, num, num_mcmc_steps=MAX_ADAPTIVE_TRANSITIONS, adapt_num_mcmc_steps=True
        )
    if sampler in ("blackjax", "blackjax_wf"):
        return blackjax_runner(problem, num, waste_free=sampler == "blackjax_wf")
    if sampler in ("particles", "particles_wf"):
        return particles_runner(problem, num, waste_free=sampler == "particles_wf")
    if sampler in ("probinfer_evidence", "probinfer_default"):
        return evidence_runner(problem, num, defaults=sampler == "probinfer_default")
    raise ValueError(f"unknown sampler {sampler!r}; choose from {SAMPLERS}.")


# ---------------------------------------------------------------------------------------
# Summary and report


def summarize(runs: list[dict[str, Any]], truth: float) -> dict[str, Any]:
    """Error statistics of one sampler's runs on one model (non-finite runs left out)."""
    finite = [run for run in runs if math.isfinite(run["log_z"])]
    errors = np.array([run["log_z"] - truth for run in finite])
    evals = float(np.mean([run["num_evals"] for run in finite])) if finite else math.nan
    rmse = float(np.sqrt(np.mean(errors**2))) if finite else math.nan
    summary = {
        "runs": len(runs),
        "not_converged": len(runs) - len(finite),
        "bias": float(np.mean(errors)) if finite else math.nan,
        "sd": float(np.std(errors, ddof=1)) if len(finite) > 1 else math.nan,
        "rmse": rmse,
        "num_evals": evals,
        "seconds": float(np.mean([run["seconds"] for run in finite])) if finite else math.nan,
        "rmse_at_1m_evals": rmse * math.sqrt(evals / 1e6),
        "coverage": math.nan,
    }
    with_bars = [run for run in finite if "log_z_err" in run]
    if with_bars:
        covered = [abs(run["log_z"] - truth) <= 2 * run["log_z_err"] for run in with_bars]
        summary["coverage"] = float(np.mean(covered))
        summary["mean_log_z_err"] = float(np.mean([run["log_z_err"] for run in with_bars]))
    return summary


def _cell(value: float, digits: int = 3) -> str:
    if isinstance(value, float) and math.isnan(value):
        return "-"
    if isinstance(value, float) and abs(value) >= 1000:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown_report(
    results: dict[str, dict[str, dict[str, Any]]], machine: dict[str, Any], settings: dict
) -> str:
    """The report: machine and settings, then one table per model."""
    lines = [
        "# Tempered SMC: probinfer vs BlackJAX vs particles",
        "",
        f"Machine: {machine['cpu']} ({machine['cores']} cores, load average "
        f"{machine['load_average'][0]} at the start), backend {machine['backend']}, jax "
        f"{machine['jax']}, blackjax {blackjax.__version__}, particles 0.3, probinfer at "
        f"commit {machine['commit']}, {machine['date']}.",
        "",
        f"Settings: {settings['particles']} particles per run, {settings['seeds']} seeds "
        "(seeds outer, samplers inner); see the docstring of `benchmarks/smc_peers.py` for "
        "each sampler. Error = log Z - exact. RMSE at 1M evals = RMSE x sqrt(evals / 1e6) "
        "(lower is better per evaluation). Coverage: fraction of seeds with |error| <= 2 "
        "reported SE (only `pi.evidence` reports one; 91.5% nominal with 8 replicas, t_7).",
        "",
    ]
    header = (
        "| sampler | runs | not conv. | bias | sd | RMSE | evals | seconds "
        "| RMSE at 1M evals | mean SE | coverage (2 SE) |"
    )
    for model_name, by_sampler in results.items():
        lines += [f"## {model_name}", "", header, "|" + "---|" * 11]
        for sampler, summary in by_sampler.items():
            cells = [
                sampler,
                str(summary["runs"]),
                str(summary["not_converged"]),
                _cell(summary["bias"]),
                _cell(summary["sd"]),
                _cell(summary["rmse"]),
                _cell(summary["num_evals"]),
                _cell(summary["seconds"], 2),
                _cell(summary["rmse_at_1m_evals"]),
                _cell(summary.get("mean_log_z_err", math.nan)),
                _cell(summary["coverage"], 2),
            ]
            lines.append("| " + " | ".join(cells) + " |")
        lines.append("")
    return "\n".join(lines)


def chart(
    runs: dict[str, dict[str, list[dict[str, Any]]]], truths: dict[str, float], path: Path
) -> None:
    """log Z errors per seed, one panel per model, one column of dots per sampler."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(runs), figsize=(6 * len(runs), 4.5), squeeze=False)
    for ax, (model_name, by_sampler) in zip(axes[0], runs.items(), strict=True):
        for position, sampler_runs in enumerate(by_sampler.values()):
            errors = [
                run["log_z"] - truths[model_name]
                for run in sampler_runs
                if math.isfinite(run["log_z"])
            ]
            ax.scatter(np.full(len(errors), position), errors, s=12, alpha=0.7)
        ax.axhline(0.0, color="black", lw=0.8)
        ax.set_xticks(range(len(by_sampler)), list(by_sampler), rotation=45, ha="right")
        ax.set_ylabel("log Z - exact")
        ax.set_title(model_name)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    """Command-line options."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--seeds", type=int, default=10)
    parser.add_argument("--particles", type=int, default=1000)
    parser.add_argument("--out", default="benchmarks/results/smc_peers")
    arguments = parser.parse_args(argv)
    for option, allowed in (("models", MODELS), ("samplers", SAMPLERS)):
        chosen = getattr(arguments, option).split(",")
        unknown = sorted(set(chosen) - set(allowed))
        if unknown:
            parser.error(f"unknown {option} {unknown}; choose from {list(allowed)}")
        setattr(arguments, option, chosen)
    multiple = math.lcm(CHAIN_LENGTH, REPLICAS)
    if arguments.particles % multiple:
        parser.error(f"--particles must be a multiple of {multiple}")
    return arguments


def main(argv: Sequence[str] | None = None) -> None:
    """Run every sampler on every model, seeds interleaved, and write the report."""
    arguments = parse_args(argv)
    machine = machine_description()
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    runs: dict[str, dict[str, list[dict[str, Any]]]] = {}
    truths: dict[str, float] = {}
    for model_name in arguments.models:
        problem = Problem(model_name)
        truths[model_name] = problem.log_z
        runners = {
            sampler: make_runner(sampler, problem, arguments.particles)
            for sampler in arguments.samplers
        }
        runs[model_name] = {sampler: [] for sampler in arguments.samplers}
        for seed in range(arguments.seeds):
            for sampler, measure in runners.items():
                run = measure(seed)
                runs[model_name][sampler].append(run)
                print(
                    f"{model_name:20s} seed {seed:2d} {sampler:19s} log Z error "
                    f"{run['log_z'] - problem.log_z:+.3f}  evals {run['num_evals']:9,d}  "
                    f"{run['seconds']:.2f} s",
                    flush=True,
                )
    results = {
        model_name: {
            sampler: summarize(sampler_runs, truths[model_name])
            for sampler, sampler_runs in by_sampler.items()
        }
        for model_name, by_sampler in runs.items()
    }
    settings = {"particles": arguments.particles, "seeds": arguments.seeds}
    (out / "smc_peers.json").write_text(
        json.dumps(
            {"machine": machine, "settings": settings, "results": results, "runs": runs},
            indent=2,
        )
    )
    (out / "smc_peers.md").write_text(markdown_report(results, machine, settings))
    chart(runs, truths, out / "smc_peers.png")
    print(markdown_report(results, machine, settings))


if __name__ == "__main__":
    main()
