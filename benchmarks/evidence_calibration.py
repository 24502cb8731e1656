"""Are the evidence error bars honest? z-scores of log Z over many seeds, SMC and NS.

Run::

    .venv/bin/python benchmarks/evidence_calibration.py [--seeds 200] \
        [--models normal_normal ...] [--methods smc ns] \
        [--out benchmarks/results/evidence_calibration]

For every zoo model with an exact ``log_z`` in ``--models`` and every seed, ``pi.evidence``
runs with its defaults (SMC: 8 replicas of 500 particles, MALA moves, the error bar the
replicas' standard error; nested sampling: 500 live points, slice moves, the error bar
from simulated shrinkages) and records ``z = (log_z - exact) / log_z_err``. Honest error
bars give z-scores with mean 0 and a known spread: standard normal for nested sampling;
for SMC a Student t with ``replicas - 1`` = 7 degrees of freedom (the error bar is itself
estimated from 8 replicas), whose standard deviation is ``sqrt(7 / 5)`` = 1.18. The seeds
are run one after another with every model and method interleaved, so machine load hits
all alike. Writes ``evidence_calibration.{json,md,png}``.
"""

from __future__ import annotations

import argparse
import json
import math
import time
import warnings
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import scipy.stats  # noqa: E402

import probinfer as pi  # noqa: E402
from probinfer import zoo  # noqa: E402
from probinfer.bench import machine_description  # noqa: E402

MODELS = (
    "normal_normal",
    "beta_binomial",
    "linear_regression",
    "eight_schools_noncentered",
    "gaussian_mixture_2d",
)
SMC_REPLICAS = 8  # pi.evidence's default


def reference_distribution(method: str) -> scipy.stats.rv_continuous:
    """The z-scores' distribution under honest error bars (module docstring)."""
    if method == "smc":
        return scipy.stats.t(df=SMC_REPLICAS - 1)
    return scipy.stats.norm()


def summarize(z: np.ndarray, method: str) -> dict[str, float]:
    """Mean and standard deviation of the z-scores with 95% intervals, the expected
    standard deviation, and the KS p-value against the reference distribution."""
    n = z.size
    reference = reference_distribution(method)
    sd = float(np.std(z, ddof=1))
    # Chi-square interval of a standard deviation (normal z; for t_7 it is a bit narrow).
    low = sd * math.sqrt((n - 1) / scipy.stats.chi2.ppf(0.975, n - 1))
    high = sd * math.sqrt((n - 1) / scipy.stats.chi2.ppf(0.025, n - 1))
    return {
        "runs": n,
        "mean": float(np.mean(z)),
        "mean_se": sd / math.sqrt(n),
        "sd": sd,
        "sd_low": low,
        "sd_high": high,
        "expected_sd": float(reference.std()),
        "within_2": float(np.mean(np.abs(z) < 2)),
        "expected_within_2": float(reference.cdf(2) - reference.cdf(-2)),
        "ks_p_value": float(scipy.stats.kstest(z, reference.cdf).pvalue),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, default=200)
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    parser.add_argument("--methods", nargs="+", default=["smc", "ns"])
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/evidence_calibration"))
    options = parser.parse_args()
    runs: list[dict] = []
    start = time.perf_counter()
    data = {name: zoo.get(name).data() for name in options.models}
    for seed in range(options.seeds):
        for name in options.models:
            zoo_model = zoo.get(name)
            args, kwargs = data[name]
            truth = float(zoo_model.reference.log_z)
            for method in options.methods:
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")  # counted runs, judged by their z
                    result = pi.evidence(
                        zoo_model.model, *args, method=method, seed=seed, progress=False,
                        **kwargs,
                    )  # fmt: skip
                runs.append(
                    {
                        "model": name,
                        "method": method,
                        "seed": seed,
                        "log_z": result.log_z,
                        "log_z_err": result.log_z_err,
                        "truth": truth,
                        "z": (result.log_z - truth) / result.log_z_err,
                    }
                )
        if seed % 10 == 9:
            print(f"{seed + 1} seeds, {time.perf_counter() - start:.0f} s", flush=True)
    summaries = []
    for method in options.methods:
        for name in [*options.models, "all"]:
            z = np.array(
                [r["z"] for r in runs if r["method"] == method and name in ("all", r["model"])]
            )
            summaries.append({"model": name, "method": method, **summarize(z, method)})
    machine = machine_description()
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "evidence_calibration.json").write_text(
        json.dumps(
            {
                "machine": machine,
                "seeds": options.seeds,
                "summaries": summaries,
                "runs": compact_runs(runs),
            },
            separators=(",", ":"),  # 2,000 runs: one line, not one per number
        )
        + "\n"
    )
    (options.out / "evidence_calibration.md").write_text(report(summaries, machine, options))
    plot(runs, options).savefig(options.out / "evidence_calibration.png", dpi=80)


def compact_runs(runs: list[dict]) -> dict[str, dict[str, dict]]:
    """Method -> model -> the exact log Z and, by seed, each run's ``log_z`` and
    ``log_z_err`` (7 significant digits)."""
    compact: dict[str, dict[str, dict]] = {}
    for run in runs:
        entry = compact.setdefault(run["method"], {}).setdefault(
            run["model"], {"truth": run["truth"], "log_z": [], "log_z_err": []}
        )
        entry["log_z"].append(float(f"{run['log_z']:.7g}"))
        entry["log_z_err"].append(float(f"{run['log_z_err']:.7g}"))
    return compact


def report(summaries: list[dict], machine: dict, options: argparse.Namespace) -> str:
    """The markdown table, one row per model and method (and all models pooled)."""
    lines = [
        "# Evidence calibration (`benchmarks/evidence_calibration.py`)",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, load average "
        f"{machine['load_average']}, jax {machine['jax']}, probinfer at commit "
        f"{machine['commit']}, {machine['date']}. z = (log Z - exact) / log_z_err over "
        f"{options.seeds} seeds per row, `pi.evidence` defaults. Honest error bars: z "
        "standard normal for NS; for SMC Student t with 7 degrees of freedom (sd 1.18: "
        "the error bar is estimated from 8 replicas). Intervals are 95%.",
        "",
        "| method | model | mean z ± 95% | sd of z [95%] | expected sd | within 2 (expected) "
        "| KS p vs expected |",
        "|---|---|---|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s['method']} | {s['model']} | {s['mean']:+.2f} ± {1.96 * s['mean_se']:.2f} | "
            f"{s['sd']:.2f} [{s['sd_low']:.2f}, {s['sd_high']:.2f}] | {s['expected_sd']:.2f} | "
            f"{s['within_2']:.2f} ({s['expected_within_2']:.2f}) | {s['ks_p_value']:.2g} |"
        )
    lines += ["", "![z-scores against their expected quantiles](evidence_calibration.png)"]
    return "\n".join(lines) + "\n"


def plot(runs: list[dict], options: argparse.Namespace) -> plt.Figure:
    """Quantile-quantile plots of the z-scores against their expected distribution."""
    figure, axes = plt.subplots(
        1, len(options.methods), figsize=(4.2 * len(options.methods), 4.0), squeeze=False
    )
    for axis, method in zip(axes[0], options.methods, strict=True):
        reference = reference_distribution(method)
        for name in options.models:
            z = np.sort([r["z"] for r in runs if r["method"] == method and r["model"] == name])
            expected = reference.ppf((np.arange(z.size) + 0.5) / z.size)
            axis.plot(expected, z, ".", markersize=3, label=name)
        limit = float(reference.ppf(1 - 0.5 / options.seeds)) * 1.2
        axis.plot([-limit, limit], [-limit, limit], color="0.4", linewidth=0.8)
        axis.set_xlabel("expected quantile" + (" (t, 7 d.o.f.)" if method == "smc" else ""))
        axis.set_ylabel("z = (log Z - exact) / log_z_err")
        axis.set_title(f"{method}: {options.seeds} seeds per model", fontsize=10)
    axes[0, 0].legend(fontsize=7)
    figure.tight_layout()
    return figure


if __name__ == "__main__":
    main()
