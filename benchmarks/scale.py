"""Throughput at scale: NUTS against chains and devices, SMC, nested sampling, PFN tokens.

Run::

    .venv/bin/python benchmarks/scale.py [--sections chains,devices,smc,ns,pfn] \
        [--chains 1,4,16,64,256,1024,4096] [--models eight_schools_noncentered,neals_funnel:256] \
        [--devices 1,2,4] [--particles 256,1024,4096,16384] [--live-points 100,300,1000,3000] \
        [--pfn-batches 4,16,64,256] [--repeats 2] [--threads 1] [--out benchmarks/results/scale]

Every measurement: one untimed call to compile, then ``--repeats`` timed calls with seeds
0.. (medians reported), compilation excluded; within a size the variants alternate so
that machine load hits them alike. Each section is written to ``scale.{json,md,png}`` as
soon as it is done (a run cut short keeps the sections before). Sections:

- ``chains``: NUTS (``pi.sample`` defaults: dense metric, target acceptance 0.8) with
  ``C`` chains in one program, 200 warm-up steps and ``max(16, 8192 // C)`` draws per
  chain, in three modes (``pi.sample(..., chain_method=...)``):

  - ``sequential``: ``lax.map`` over chains; each pays for its own trajectories only, run
    on one host thread (``PROBINFER_CPU_THREADS=1`` unless ``--threads`` says otherwise),
    so that the three modes compare one program each; ``pi.sample`` on a CPU runs equal
    groups of sequential chains, and of vectorized NUTS chains, at once, a thread per
    usable core (with ``--threads`` above 1 all three modes are grouped).
  - ``lock_step``: ``vmap`` over chains, each transition run whole: every transition
    costs the longest trajectory of the group.
  - ``interleaved``: ``vmap`` over chains as one flat loop of leapfrog steps
    (``probinfer.driver.StagedStep``): a chain starts its next transition as soon as its
    own trajectory ends. ``pi.sample`` picks it for vectorized chains from
    ``probinfer.run.INTERLEAVE_MIN_CHAINS`` chains per device; this script forces each
    mode by setting that threshold (1 or never).

  Reported: transitions/s (all chains, warm-up and sampling), gradient evaluations/s, ESS/s
  (the smallest bulk ESS over the latent coordinates, per second of warm-up and sampling)
  and each mode's time relative to the best. ``--models`` entries may cap the chain
  counts (``neals_funnel:256``: lock-step funnel chains run at about 1,700 transitions/s
  here, so 4,096 of them would take 9 minutes per run, half an hour per count).
- ``devices``: NUTS with 64 chains split evenly over ``D`` emulated CPU devices
  (``XLA_FLAGS=--xla_force_host_platform_device_count=D``, set before JAX starts: one
  subprocess per ``D``), ``chain_method="parallel-vectorized"`` (interleaved on each
  device) and ``"parallel-sequential"``, 200 warm-up steps and 128 draws per chain. The
  emulated devices share the machine's cores: the table shows what the split costs or
  gains on this machine, not what more hardware would give.
- ``smc``: adaptive tempered SMC (``pi.evidence(method="smc")``, defaults: 8 replicas plus
  the tuning one, 10 MALA steps per tempering step) against the particles per replica, on
  ``linear_regression`` (6 latents, exact log Z). Reported: particle-steps/s (particles
  x replicas x tempering steps, per second: each is one reweighting, resampling and move),
  likelihood evaluations/s, and the log Z error in units of its reported error.
- ``ns``: nested sampling (``pi.evidence(method="ns")``, defaults: slice moves) against the
  number of live points on the same model: likelihood evaluations/s and the log Z error.
- ``pfn``: transformer tokens/s (a token is one point of a dataset: 50 train + 20 test
  here) against the batch of datasets, for the architecture of the shipped ``gp_hyper``
  model (width 128, 4 layers) on its prior: training (prior draws, forward, backward and
  the AdamW update, through ``amortize.train``; the rate is the difference of a 20-step and
  a 60-step run, so that tail fitting and set-up cancel) and prediction (the shipped
  model's forward pass and bar-distribution log density for every point of a batch of
  fixed prior datasets, one jitted call).
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

SECTIONS = ("chains", "devices", "smc", "ns", "pfn")
MODES = ("sequential", "lock_step", "interleaved")
WARMUP = 200
TOTAL_DRAWS = 8192
DEVICE_CHAINS = 64
DEVICE_DRAWS = 128
DEVICE_METHODS = ("parallel-vectorized", "parallel-sequential")
EVIDENCE_MODEL = "linear_regression"
PFN_MODEL = "gp_hyper"
PFN_STEPS = (20, 60)


def min_bulk_ess(idata: Any) -> float:
    """The smallest bulk ESS over every scalar coordinate of ``idata.posterior``."""
    import arviz as az

    ess = az.ess(idata.posterior, method="bulk")
    return float(min(np.min(ess[name].values) for name in ess.data_vars))


def nuts_run(name: str, chains: int, draws: int, seed: int, chain_method: str) -> dict[str, float]:
    """Seconds, transitions/s, gradient evaluations/s and ESS/s of one ``pi.sample`` call."""
    import probinfer as pi
    from probinfer import zoo

    zoo_model = zoo.get(name)
    args, kwargs = zoo_model.data()
    with warnings.catch_warnings():  # throughput, not the quality of short runs
        warnings.simplefilter("ignore")
        idata = pi.sample(
            zoo_model.model, *args, chains=chains, warmup=WARMUP, draws=draws, seed=seed,
            progress=False, chain_method=chain_method, **kwargs,
        )  # fmt: skip
    seconds = idata.attrs["warmup_seconds"] + idata.attrs["sampling_seconds"]
    grads = idata.attrs["warmup_grad_evals"] + int(idata.sample_stats.n_steps.sum())
    return {
        "seconds": seconds,
        "transitions_per_second": chains * (WARMUP + draws) / seconds,
        "grads_per_second": grads / seconds,
        "ess_per_second": min_bulk_ess(idata) / seconds,
    }


def chains_run(name: str, mode: str, chains: int, seed: int) -> dict[str, float]:
    """One ``chains``-section run: ``mode`` forced through the interleaving threshold."""
    import probinfer.run

    probinfer.run.INTERLEAVE_MIN_CHAINS = 1 if mode == "interleaved" else 2**62
    chain_method = "sequential" if mode == "sequential" else "vectorized"
    return nuts_run(name, chains, max(16, TOTAL_DRAWS // chains), seed, chain_method)


def median(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: float(np.median([r[key] for r in runs])) for key in runs[0]}


def alternating_repeats(
    variants: dict[str, Callable[[int], dict[str, float]]], repeats: int
) -> dict[str, dict[str, float]]:
    """Each variant called once untimed (seed 99: compilation), then ``repeats`` times,
    the variants alternating within each repeat; the medians per variant."""
    for run in variants.values():
        run(99)
    runs: dict[str, list[dict[str, float]]] = {v: [] for v in variants}
    for seed in range(repeats):
        for variant, run in variants.items():
            runs[variant].append(run(seed))
    return {variant: median(r) for variant, r in runs.items()}


def chains_section(options: argparse.Namespace, results: dict, save: Callable[[], None]) -> None:
    """NUTS against the number of chains into ``results``: model -> chains -> mode ->
    medians, saved after each chain count."""
    modes = options.modes.split(",")
    for name, max_chains in _models(options.models):
        results[name] = {}
        for chains in [c for c in _counts(options.chains) if c <= max_chains]:
            variants = {m: (lambda s, m=m, c=chains, n=name: chains_run(n, m, c, s)) for m in modes}
            summary = alternating_repeats(variants, options.repeats)
            results[name][str(chains)] = summary
            rates = {m: round(s["transitions_per_second"]) for m, s in summary.items()}
            print("chains", name, chains, rates, flush=True)
            save()


def devices_worker(options: argparse.Namespace) -> dict[str, Any]:
    """In a process started with ``D`` emulated devices: model -> method -> medians."""
    results: dict[str, Any] = {}
    for name, _ in _models(options.models):
        variants = {
            method: (lambda s, method=method, name=name: nuts_run(
                name, DEVICE_CHAINS, DEVICE_DRAWS, s, method))
            for method in DEVICE_METHODS
        }  # fmt: skip
        results[name] = alternating_repeats(variants, options.repeats)
    return results


def devices_section(options: argparse.Namespace, results: dict, save: Callable[[], None]) -> None:
    """NUTS over emulated devices into ``results``: model -> devices -> method -> medians,
    one subprocess per device count (JAX reads the device count once, at start-up)."""
    for devices in _counts(options.devices):
        with tempfile.TemporaryDirectory() as folder:
            out = Path(folder) / "devices.json"
            env = {**os.environ, "XLA_FLAGS": (os.environ.get("XLA_FLAGS", "") +
                   f" --xla_force_host_platform_device_count={devices}").strip()}  # fmt: skip
            command = [sys.executable, __file__, "--devices-worker", str(out),
                       "--models", options.models, "--repeats", str(options.repeats),
                       "--threads", str(options.threads)]  # fmt: skip
            subprocess.run(command, env=env, check=True)
            by_model = json.loads(out.read_text())
        print("devices", devices, by_model, flush=True)
        for name, summary in by_model.items():
            results.setdefault(name, {})[str(devices)] = summary
        save()


def evidence_run(method: str, size: int, seed: int) -> dict[str, float]:
    """One ``pi.evidence`` call on :data:`EVIDENCE_MODEL`: its throughput and accuracy."""
    import probinfer as pi
    from probinfer import zoo

    zoo_model = zoo.get(EVIDENCE_MODEL)
    args, kwargs = zoo_model.data()
    setting = {"particles": size} if method == "smc" else {"live_points": size}
    start = time.perf_counter()
    result = pi.evidence(
        zoo_model.model, *args, method=method, seed=seed, progress=False, **setting, **kwargs
    )
    seconds = time.perf_counter() - start
    truth = zoo_model.reference.log_z
    row = {
        "seconds": seconds,
        "likelihood_evals_per_second": result.num_likelihood_evals / seconds,
        "log_z_error": result.log_z - truth,
        "log_z_z_score": (result.log_z - truth) / result.log_z_err,
    }
    if method == "smc":
        steps = sum(len(ladder) for ladder in result.inverse_temperatures)
        row["particle_steps_per_second"] = size * steps / seconds
    return row


def evidence_section(
    method: str, sizes: str, repeats: int, results: dict, save: Callable[[], None]
) -> None:
    """SMC or nested sampling against its population size into ``results``: size ->
    medians, saved after each size."""
    for size in _counts(sizes):
        summary = alternating_repeats(
            {method: lambda s, size=size: evidence_run(method, size, s)}, repeats
        )
        results[str(size)] = summary[method]
        print(method, size, {k: round(v, 3) for k, v in results[str(size)].items()}, flush=True)
        save()


def pfn_training_seconds(batch_size: int, num_steps: int, seed: int) -> float:
    """Wall seconds of ``amortize.train`` on the shipped model's prior and architecture."""
    from probinfer import amortize

    config = json.loads((_pretrained_folder() / "config.json").read_text())
    prior = amortize.prior_from_spec(config["prior"])
    training = {**config["training"], "batch_size": batch_size, "num_steps": num_steps,
                "warmup_steps": 10, "steps_per_chunk": num_steps, "seed": seed}  # fmt: skip
    start = time.perf_counter()
    amortize.train(prior, amortize.TrainingConfig(**training), progress=False)
    return time.perf_counter() - start


def pfn_section(options: argparse.Namespace, results: dict, save: Callable[[], None]) -> None:
    """PFN training and prediction tokens/s against the batch into ``results``: batch ->
    medians, saved after each batch."""
    import equinox as eqx
    import jax

    from probinfer import amortize

    folder = _pretrained_folder()
    config = json.loads((folder / "config.json").read_text())
    model = amortize.load(folder)
    prior = amortize.prior_from_spec(config["prior"])
    num_train, num_test = config["training"]["max_train"], config["training"]["num_test"]
    num_points = num_train + num_test

    @eqx.filter_jit
    def log_prob(model: Any, x: Any, y: Any) -> Any:
        return jax.vmap(lambda xi, yi: model.log_prob(xi, yi, num_train))(x, y)

    def training_run(batch: int, seed: int) -> dict[str, float]:
        short, long = (pfn_training_seconds(batch, n, seed) for n in PFN_STEPS)
        seconds = (long - short) / (PFN_STEPS[1] - PFN_STEPS[0])
        return {"seconds_per_step": seconds, "tokens_per_second": batch * num_points / seconds}

    def prediction_run(batch: int, seed: int) -> dict[str, float]:
        x, y = amortize.sample_batch(jax.random.key(seed), prior, batch, num_points)
        # Untimed: the first call for a batch size compiles.
        jax.block_until_ready(log_prob(model, x, y))
        calls = max(1, 4096 // batch)
        start = time.perf_counter()
        for _ in range(calls):
            out = log_prob(model, x, y)
        jax.block_until_ready(out)
        seconds = (time.perf_counter() - start) / calls
        return {"seconds_per_call": seconds, "tokens_per_second": batch * num_points / seconds}

    results["num_points"] = num_points
    for batch in _counts(options.pfn_batches):
        results[str(batch)] = alternating_repeats(
            {"training": lambda s, b=batch: training_run(b, s),
             "prediction": lambda s, b=batch: prediction_run(b, s)},
            options.repeats,
        )  # fmt: skip
        rates = {k: round(v["tokens_per_second"]) for k, v in results[str(batch)].items()}
        print("pfn", batch, rates, flush=True)
        save()


def _pretrained_folder() -> Path:
    from probinfer import amortize

    return Path(amortize.__file__).parent / "pretrained" / PFN_MODEL


def _counts(text: str) -> list[int]:
    return [int(c) for c in text.split(",") if c]


def _models(text: str) -> list[tuple[str, float]]:
    """``name`` or ``name:max_chains`` entries: each model and its largest chain count."""
    entries = [entry.partition(":") for entry in text.split(",") if entry]
    return [(name, int(cap) if cap else float("inf")) for name, _, cap in entries]


# --------------------------------------------------------------------------- report


def report(results: dict[str, Any], machine: dict[str, Any]) -> str:
    """The markdown tables, one per section and model."""
    lines = [
        "# Throughput at scale",
        "",
        f"Machine: {machine['cpu']} ({machine['cores']} cores, load average "
        f"{machine['load_average'][0]}), backend {machine['backend']}, jax {machine['jax']}, "
        f"probinfer at commit {machine['commit']}, {machine['date']}. Method: "
        "`benchmarks/scale.py` (its docstring); medians over repeats, compilation excluded.",
        "",
    ]
    for name, by_chains in results.get("chains", {}).items():
        lines += [f"## NUTS against chains: {name}", "",
                  f"{WARMUP} warm-up steps and max(16, {TOTAL_DRAWS} // chains) draws per chain.",
                  "", "| chains | mode | transitions/s | gradients/s | ESS/s | time / best mode |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for chains, by_mode in by_chains.items():
            best = min(s["seconds"] for s in by_mode.values())
            for mode, s in by_mode.items():
                lines.append(
                    f"| {chains} | {mode} | {s['transitions_per_second']:,.0f} | "
                    f"{s['grads_per_second']:,.0f} | {s['ess_per_second']:,.0f} | "
                    f"{s['seconds'] / best:.2f} |"
                )
        lines.append("")
    for name, by_devices in results.get("devices", {}).items():
        lines += [f"## NUTS against emulated CPU devices: {name}", "",
                  f"{DEVICE_CHAINS} chains split evenly over the devices, {WARMUP} warm-up "
                  f"steps and {DEVICE_DRAWS} draws per chain.", "",
                  "| devices | chain method | transitions/s | gradients/s | ESS/s | seconds |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for devices, by_method in by_devices.items():
            for method, s in by_method.items():
                lines.append(
                    f"| {devices} | {method} | {s['transitions_per_second']:,.0f} | "
                    f"{s['grads_per_second']:,.0f} | {s['ess_per_second']:,.0f} | "
                    f"{s['seconds']:.2f} |"
                )
        lines.append("")
    if "smc" in results:
        lines += [f"## Tempered SMC against particles per replica: {EVIDENCE_MODEL}", "",
                  "| particles | seconds | particle-steps/s | likelihood evaluations/s | "
                  "log Z error | error / reported error |",
                  "|---|---|---|---|---|---|"]  # fmt: skip
        for size, s in results["smc"].items():
            lines.append(
                f"| {size} | {s['seconds']:.2f} | {s['particle_steps_per_second']:,.0f} | "
                f"{s['likelihood_evals_per_second']:,.0f} | {s['log_z_error']:+.3f} | "
                f"{s['log_z_z_score']:+.2f} |"
            )
        lines.append("")
    if "ns" in results:
        lines += [f"## Nested sampling against live points: {EVIDENCE_MODEL}", "",
                  "| live points | seconds | likelihood evaluations/s | log Z error | "
                  "error / reported error |", "|---|---|---|---|---|"]  # fmt: skip
        for size, s in results["ns"].items():
            lines.append(
                f"| {size} | {s['seconds']:.2f} | {s['likelihood_evals_per_second']:,.0f} | "
                f"{s['log_z_error']:+.3f} | {s['log_z_z_score']:+.2f} |"
            )
        lines.append("")
    if "pfn" in results:
        pfn = dict(results["pfn"])
        num_points = pfn.pop("num_points")
        lines += [f"## PFN tokens/s against the batch: {PFN_MODEL}", "",
                  f"{num_points} points (tokens) per dataset.", "",
                  "| datasets per batch | training tokens/s | seconds per step | "
                  "prediction tokens/s | seconds per call |", "|---|---|---|---|---|"]  # fmt: skip
        for batch, s in pfn.items():
            train, predict = s["training"], s["prediction"]
            lines.append(
                f"| {batch} | {train['tokens_per_second']:,.0f} | "
                f"{train['seconds_per_step']:.4f} | {predict['tokens_per_second']:,.0f} | "
                f"{predict['seconds_per_call']:.5f} |"
            )
        lines.append("")
    return "\n".join(lines)


def plot(results: dict[str, Any], path: Path) -> None:
    """One panel per measurement: rate against size, log-log."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels: list[tuple[str, str, str, dict[str, tuple[list[int], list[float]]]]] = []
    for name, by_chains in results.get("chains", {}).items():
        counts = [int(c) for c in by_chains]
        if not counts:  # the section's first count is still running
            continue
        modes = by_chains[str(counts[0])]
        lines = {m: (counts, [by_chains[str(c)][m]["ess_per_second"] for c in counts])
                 for m in modes}  # fmt: skip
        panels.append((f"NUTS: {name}", "chains", "ESS / s", lines))
    for name, by_devices in results.get("devices", {}).items():
        counts = [int(d) for d in by_devices]
        methods = by_devices[str(counts[0])]
        lines = {m: (counts, [by_devices[str(d)][m]["ess_per_second"] for d in counts])
                 for m in methods}  # fmt: skip
        panels.append((f"NUTS, {DEVICE_CHAINS} chains: {name}", "devices", "ESS / s", lines))
    for section, label in (("smc", "particles per replica"), ("ns", "live points")):
        if section in results:
            sizes = [int(s) for s in results[section]]
            rates = [results[section][str(s)]["likelihood_evals_per_second"] for s in sizes]
            panels.append((section.upper(), label, "likelihood evaluations / s",
                           {section: (sizes, rates)}))  # fmt: skip
    if "pfn" in results:
        batches = [int(b) for b in results["pfn"] if b != "num_points"]
        lines = {
            kind: (batches, [results["pfn"][str(b)][kind]["tokens_per_second"] for b in batches])
            for kind in ("training", "prediction")
        }
        panels.append(("PFN", "datasets per batch", "tokens / s", lines))
    if not panels:
        return
    columns = min(4, len(panels))
    rows = -(-len(panels) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(4.2 * columns, 3.6 * rows), squeeze=False)
    for ax in axes.flat[len(panels) :]:
        ax.set_visible(False)
    for ax, (title, xlabel, ylabel, lines) in zip(axes.flat, panels, strict=False):
        for label, (xs, ys) in lines.items():
            ax.plot(xs, ys, marker="o", label=label)
        ax.set(xscale="log", yscale="log", xlabel=xlabel, ylabel=ylabel, title=title)
        ax.set_xticks(xs, [str(x) for x in xs])
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write(results: dict[str, Any], out: Path) -> None:
    from probinfer.bench import machine_description

    machine = machine_description()
    out.mkdir(parents=True, exist_ok=True)
    payload = {"machine": machine, "results": results}
    (out / "scale.json").write_text(json.dumps(payload, indent=1) + "\n")
    (out / "scale.md").write_text(report(results, machine))
    plot(results, out / "scale.png")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sections", default=",".join(SECTIONS), help=",".join(SECTIONS))
    parser.add_argument("--chains", default="1,4,16,64,256,1024,4096")
    parser.add_argument(
        "--models",
        default="eight_schools_noncentered,neals_funnel:256",
        help="zoo models, each as name or name:max_chains",
    )
    parser.add_argument("--modes", default=",".join(MODES), help="a subset of " + ",".join(MODES))
    parser.add_argument("--devices", default="1,2,4")
    parser.add_argument("--particles", default="256,1024,4096,16384")
    parser.add_argument("--live-points", default="100,300,1000,3000")
    parser.add_argument("--pfn-batches", default="4,16,64,256")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--threads", type=int, default=1, help="host threads for grouped chains")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/scale"))
    parser.add_argument("--devices-worker", type=Path, help=argparse.SUPPRESS)
    options = parser.parse_args()
    from probinfer.driver import THREADS_VARIABLE

    os.environ[THREADS_VARIABLE] = str(options.threads)
    if options.devices_worker is not None:
        options.devices_worker.write_text(json.dumps(devices_worker(options)))
        return
    sections = options.sections.split(",")
    if not set(sections) <= set(SECTIONS):
        parser.error(f"--sections: choose from {','.join(SECTIONS)}")
    if not set(options.modes.split(",")) <= set(MODES):
        parser.error(f"--modes: choose from {','.join(MODES)}")
    runs = {
        "chains": functools.partial(chains_section, options),
        "devices": functools.partial(devices_section, options),
        "smc": functools.partial(evidence_section, "smc", options.particles, options.repeats),
        "ns": functools.partial(evidence_section, "ns", options.live_points, options.repeats),
        "pfn": functools.partial(pfn_section, options),
    }
    results: dict[str, Any] = {}
    for section in sections:
        results[section] = {}
        runs[section](results[section], lambda: write(results, options.out))


if __name__ == "__main__":
    main()
