"""How often does one zoo run pass `probinfer bench`'s verdict? Many seeds, several samplers.

Run::

    PYTHONPATH=. .venv/bin/python benchmarks/seed_sweep.py [--model gp_poisson] \
        [--seeds 14] [--out benchmarks/results/seed_sweep]

One bench row is one seed: a row that passes at seed 0 may fail at seed 4. This sweep runs
each sampler at the bench's NUTS budget (4 chains, 1000 warm-up, 1000 draws) for seeds
``0 .. seeds-1`` and judges every run with :func:`probinfer.bench.evaluate` (every mean
within 5 combined MCSE of the reference, max R-hat < 1.05, min bulk ESS >= 400):

- ``probinfer``: ``pi.sample`` with its defaults (dense metric, target acceptance 0.8), as
  ``probinfer bench`` runs it (:func:`probinfer.bench.run_one`);
- ``probinfer_t90``, ``probinfer_t95``: the same with ``target_acceptance`` 0.9 / 0.95;
- ``numpyro``, ``numpyro_dense``: ``MCMC(NUTS(model), chain_method="vectorized")`` with
  NumPyro's default diagonal metric, and with ``dense_mass=True`` (target 0.8 both).

Nothing is timed (run it beside other work if need be); gradient counts are the sampling
phase's. Writes ``seed_sweep_<model>.{json,md}``: one row per run and a summary per sampler
(runs failed, mean divergences, min and median ESS, median gradients per draw and ESS
per 1000 gradients).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import arviz as az
import numpy as np

from probinfer import zoo
from probinfer.bench import evaluate, machine_description, run_one

SAMPLERS = {
    "probinfer": {},
    "probinfer_t90": {"target_acceptance": 0.9},
    "probinfer_t95": {"target_acceptance": 0.95},
    "numpyro": {"dense_mass": False},
    "numpyro_dense": {"dense_mass": True},
}
CHAINS, WARMUP, DRAWS = 4, 1000, 1000


def one_row(name: str, sampler: str, seed: int) -> dict[str, Any]:
    """Sample ``name`` with ``sampler`` at ``seed`` and judge the run: a row of
    :func:`probinfer.bench.evaluate`. probinfer runs exactly as ``probinfer bench`` runs
    NUTS (:func:`probinfer.bench.run_one`); NumPyro as ``benchmarks/mcmc_peers.py`` runs its
    ``numpyro`` and ``numpyro_dense`` samplers."""
    settings = SAMPLERS[sampler]
    if sampler.startswith("probinfer"):
        return run_one(
            name, "nuts", chains=CHAINS, warmup=WARMUP, draws=DRAWS, seed=seed, settings=settings
        )
    import jax
    from numpyro.infer import MCMC, NUTS

    zoo_model = zoo.get(name)
    args, kwargs = zoo_model.data()
    mcmc = MCMC(
        NUTS(zoo_model.model, **settings), num_warmup=WARMUP, num_samples=DRAWS,
        num_chains=CHAINS, chain_method="vectorized", progress_bar=False,
    )  # fmt: skip
    mcmc.run(jax.random.key(seed), *args, extra_fields=("diverging", "num_steps"), **kwargs)
    return evaluate(az.from_numpyro(mcmc, log_likelihood=False), zoo_model.reference)


def summarize(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per-sampler summary of its rows."""
    ess = np.array([row["min_ess_bulk"] for row in rows])
    grads = np.array([row["num_grad_evals"] for row in rows])
    return {
        "runs": len(rows),
        "failed_seeds": [row["seed"] for row in rows if not row["passed"]],
        "mean_divergences": float(np.mean([row["divergences"] for row in rows])),
        "min_ess": float(ess.min()),
        "median_ess": float(np.median(ess)),
        "max_rhat": float(np.max([row["max_rhat"] for row in rows])),  # NaN kept
        "median_grads_per_draw": float(np.median(grads / (CHAINS * DRAWS))),
        "median_ess_per_1000_grads": float(np.median(1000 * ess / grads)),
    }


def markdown(
    name: str, summaries: dict[str, dict[str, Any]], rows: list[dict], machine: dict
) -> str:
    """The sweep's tables: one summary row per sampler, then the failed runs."""
    lines = [
        f"# Seed sweep: `{name}`, {CHAINS} chains x ({WARMUP} warm-up + {DRAWS} draws)",
        "",
        f"- Machine: {machine['cpu']}; commit {machine.get('commit', '?')}; {machine['date']}",
        "- Verdict as `probinfer bench`'s: means within 5 combined MCSE, R-hat < 1.05, "
        "min bulk ESS >= 400. Method: `benchmarks/seed_sweep.py`'s docstring.",
        "",
        "| sampler | failed | failed seeds | mean div | min ESS | median ESS | max R-hat "
        "| median grads/draw | median ESS/1k grads |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for sampler, s in summaries.items():
        lines.append(
            f"| {sampler} | {len(s['failed_seeds'])} of {s['runs']} | "
            f"{', '.join(map(str, s['failed_seeds'])) or '-'} | {s['mean_divergences']:.1f} | "
            f"{s['min_ess']:.0f} | {s['median_ess']:.0f} | {s['max_rhat']:.3f} | "
            f"{s['median_grads_per_draw']:.1f} | {s['median_ess_per_1000_grads']:.2f} |"
        )
    lines += ["", "## Failed runs", "", "| sampler | seed | why |", "|---|---|---|"]
    lines += [f"| {r['sampler']} | {r['seed']} | {r['why']} |" for r in rows if not r["passed"]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default="gp_poisson")
    parser.add_argument("--seeds", type=int, default=14)
    parser.add_argument("--samplers", default=",".join(SAMPLERS))
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/seed_sweep"))
    options = parser.parse_args()
    samplers = options.samplers.split(",")
    unknown = sorted(set(samplers) - set(SAMPLERS))
    if unknown:
        parser.error(f"unknown samplers {unknown}; choose from {sorted(SAMPLERS)}")
    machine = machine_description()
    rows = []
    for sampler in samplers:
        for seed in range(options.seeds):
            row = one_row(options.model, sampler, seed)
            row.update(sampler=sampler, seed=seed)
            rows.append(row)
            print(
                f"{sampler:14s} seed {seed:2d}: R-hat {row['max_rhat']:.3f} ESS "
                f"{row['min_ess_bulk']:5.0f} div {row['divergences']:4d} "
                + ("ok" if row["passed"] else f"FAIL ({row['why']})"),
                flush=True,
            )
    summaries = {s: summarize([r for r in rows if r["sampler"] == s]) for s in samplers}
    options.out.mkdir(parents=True, exist_ok=True)
    stem = options.out / f"seed_sweep_{options.model}"
    stem.with_suffix(".json").write_text(
        json.dumps({"machine": machine, "summaries": summaries, "rows": rows}, indent=2)
    )
    stem.with_suffix(".md").write_text(markdown(options.model, summaries, rows, machine))
    print(stem.with_suffix(".md").read_text())


if __name__ == "__main__":
    main()
