"""NUTS throughput against the number of chains: sequential, lock-step and interleaved chains.

Run::

    .venv/bin/python benchmarks/scale.py \
        [--chains 1,2,4,8,16,32,64,128,256] [--models eight_schools_noncentered,neals_funnel] \
        [--repeats 2] [--threads 1] [--out benchmarks/results/scale]

Three ways to run ``C`` NUTS chains in one program (``pi.sample(..., chain_method=...)``):

- ``sequential``: ``lax.map`` over chains; each pays for its own trajectories only. This
  script runs it on one host thread (``PROBINFER_CPU_THREADS=1`` unless ``--threads``
  says otherwise), so that the three modes compare one program each; ``pi.sample``'s
  default runs equal groups of sequential chains at once, a thread per usable core.
- ``lock_step``: ``vmap`` over chains, each transition run whole: every transition costs
  the longest trajectory of the group.
- ``interleaved``: ``vmap`` over chains as one flat loop of leapfrog steps
  (``probinfer.driver.StagedStep``): a chain starts its next transition as soon as its own
  trajectory ends; the finishing branch (record, adaptation, next momentum) runs for the
  group whenever any chain finishes.

``pi.sample`` picks ``interleaved`` for vectorized chains from
``probinfer.run.INTERLEAVE_MIN_CHAINS`` chains per device; this script forces each mode by
setting that threshold (1 or never). Every run: NUTS with the defaults (dense metric,
target acceptance 0.8), 200 warm-up steps and ``max(16, 8192 // C)`` draws per chain, so
the draws are comparable across chain counts. Per (model, chain count): one untimed run
per mode to compile, then ``--repeats`` repeats with seeds 0.., the three modes
interleaved within each repeat so that machine load hits them alike. Reported (medians
over repeats): transitions per second (all chains, warm-up and sampling, compilation
excluded), gradient evaluations per second, and each mode's time relative to the best.
Writes ``scale.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import os
import warnings
from pathlib import Path
from typing import Any

import numpy as np

import probinfer as pi
import probinfer.run
from probinfer import zoo
from probinfer.bench import machine_description

MODES = ("sequential", "lock_step", "interleaved")
WARMUP = 200
TOTAL_DRAWS = 8192


def one_run(name: str, mode: str, chains: int, seed: int) -> dict[str, float]:
    """Seconds, transitions/s and gradient evaluations/s of one run."""
    zoo_model = zoo.get(name)
    args, kwargs = zoo_model.data()
    draws = max(16, TOTAL_DRAWS // chains)
    probinfer.run.INTERLEAVE_MIN_CHAINS = 1 if mode == "interleaved" else 2**62
    chain_method = "sequential" if mode == "sequential" else "vectorized"
    with warnings.catch_warnings():  # throughput, not the quality of short runs
        warnings.simplefilter("ignore")
        idata = pi.sample(
            zoo_model.model,
            *args,
            chains=chains,
            warmup=WARMUP,
            draws=draws,
            seed=seed,
            progress=False,
            chain_method=chain_method,
            **kwargs,
        )
    seconds = idata.attrs["warmup_seconds"] + idata.attrs["sampling_seconds"]
    grads = idata.attrs["warmup_grad_evals"] + int(idata.sample_stats.n_steps.sum())
    return {
        "seconds": seconds,
        "transitions_per_second": chains * (WARMUP + draws) / seconds,
        "grads_per_second": grads / seconds,
    }


def summarise(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.median([r[key] for r in runs])) for key in runs[0]}


def report(results: dict[str, Any], machine: dict[str, Any]) -> str:
    """The markdown tables, one per model."""
    lines = [
        "# NUTS throughput against the number of chains",
        "",
        f"Machine: {machine['cpu']} ({machine['cores']} cores, load average "
        f"{machine['load_average'][0]}), jax {machine['jax']}, probinfer at commit "
        f"{machine['commit']}, {machine['date']}. Method: `benchmarks/scale.py` (its "
        f"docstring). {WARMUP} warm-up steps and max(16, {TOTAL_DRAWS} // chains) draws "
        "per chain; medians over repeats.",
        "",
    ]
    for name, by_chains in results.items():
        lines += [
            f"## {name}",
            "",
            "| chains | mode | transitions/s | gradients/s | time / best mode |",
            "|---|---|---|---|---|",
        ]
        for chains, by_mode in by_chains.items():
            best = min(s["seconds"] for s in by_mode.values())
            for mode, s in by_mode.items():
                lines.append(
                    f"| {chains} | {mode} | {s['transitions_per_second']:,.0f} | "
                    f"{s['grads_per_second']:,.0f} | {s['seconds'] / best:.2f} |"
                )
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """Transitions per second against chains, one panel per model."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(results), figsize=(5 * len(results), 3.6), squeeze=False)
    for ax, (name, by_chains) in zip(axes[0], results.items(), strict=True):
        chains = [int(c) for c in by_chains]
        for mode in by_chains[str(chains[0])]:
            rates = [by_chains[str(c)][mode]["transitions_per_second"] for c in chains]
            ax.plot(chains, rates, marker="o", label=mode)
        ax.set(xscale="log", yscale="log", xlabel="chains", ylabel="transitions / s", title=name)
        ax.set_xticks(chains, [str(c) for c in chains])
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--chains", default="1,2,4,8,16,32,64,128,256")
    parser.add_argument("--models", default="eight_schools_noncentered,neals_funnel")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale"))
    parser.add_argument("--modes", default=",".join(MODES), help="a subset of " + ",".join(MODES))
    parser.add_argument("--threads", type=int, default=1, help="host threads for sequential chains")
    options = parser.parse_args()
    from probinfer.driver import THREADS_VARIABLE

    os.environ[THREADS_VARIABLE] = str(options.threads)
    modes = options.modes.split(",")
    if not set(modes) <= set(MODES):
        parser.error(f"--modes: choose from {','.join(MODES)}")
    results: dict[str, Any] = {}
    for name in options.models.split(","):
        results[name] = {}
        for chains in [int(c) for c in options.chains.split(",")]:
            for mode in modes:  # compile, untimed
                one_run(name, mode, chains, seed=99)
            runs: dict[str, list[dict[str, float]]] = {mode: [] for mode in modes}
            for seed in range(options.repeats):
                for mode in modes:
                    runs[mode].append(one_run(name, mode, chains, seed))
            summary = {mode: summarise(runs[mode]) for mode in modes}
            results[name][str(chains)] = summary
            rates = {m: round(s["transitions_per_second"]) for m, s in summary.items()}
            print(name, chains, rates, flush=True)
    machine = machine_description()
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "scale.json").write_text(
        json.dumps({"machine": machine, "results": results}, indent=1) + "\n"
    )
    (options.out / "scale.md").write_text(report(results, machine))
    plot(results, options.out / "scale.png")


if __name__ == "__main__":
    main()
