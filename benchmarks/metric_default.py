"""A dense or a diagonal metric on the zoo: the measurement behind each method's default.

Run::

    .venv/bin/python benchmarks/metric_default.py [--method nuts] \
        [--seeds 3] [--models gp_poisson,...] [--out benchmarks/results/metric_default]

For every zoo model whose posterior NUTS can sample (not the centered funnel, not the
two-mode mixture): one untimed run per metric to compile, then ``--seeds`` seeds, the two
metrics interleaved within each seed so that machine load hits both alike. Each run is
``pi.sample`` with its defaults (4 chains, 1000 warm-up, 1000 draws; MALA and RWM 10x the
steps, ``STEP_MULTIPLIER``) and ``metric=`` ``"dense"`` or ``"diag"``; ESS/s
= min bulk ESS over latent coordinates / (warm-up + sampling seconds, compilation
excluded). Writes ``metric_default.{json,md}`` (NUTS) or ``metric_default_<method>.*``
with the per-model geometric means, the dense / diagonal ratio and the worst seed's min
ESS; with ``--models`` (a subset), the names are appended to the file names.
"""

from __future__ import annotations

import argparse
import json
import warnings
from pathlib import Path

import arviz as az
import numpy as np

import probinfer as pi
from probinfer import zoo
from probinfer.bench import machine_description

STEP_MULTIPLIER = {"nuts": 1, "hmc": 1, "mala": 10, "rwm": 10}
"""Warm-up and draws per method, as multiples of 1000 + 1000: MALA and RWM 10x, the budget
the committed MALA/RWM tables were measured with (``probinfer bench`` gave them 10x until
2026-12-06; it now gives them NUTS's gradient count, ``bench.matched_budget``)."""

MODELS = (
    "gaussian_iid",
    "gaussian_correlated_100d",
    "normal_normal",
    "beta_binomial",
    "linear_regression",
    "eight_schools_noncentered",
    "lgssm",
    "logistic_regression",
    "gp_poisson",
)
METRICS = ("dense", "diag")


def one_run(name: str, method: str, metric: str, seed: int) -> dict[str, float]:
    """ESS/s, min bulk ESS and max R-hat of one run."""
    zoo_model = zoo.get(name)
    args, kwargs = zoo_model.data()
    steps = 1000 * STEP_MULTIPLIER[method]
    with warnings.catch_warnings():  # the table reports R-hat; divergences are not the point
        warnings.simplefilter("ignore")
        idata = pi.sample(
            zoo_model.model, *args, method=method, metric=metric, warmup=steps, draws=steps,
            seed=seed, progress=False, log_likelihood=False, **kwargs,
        )  # fmt: skip
    names = list(zoo_model.reference.moments)
    posterior = idata.posterior[[n for n in names if n in idata.posterior]]
    ess = az.ess(posterior, method="bulk")
    rhat = az.rhat(posterior)
    # NumPy's min and max keep a NaN (a stuck chain) that the built-ins may drop.
    min_ess = float(np.min([np.min(ess[v].values) for v in ess.data_vars]))
    seconds = idata.attrs["warmup_seconds"] + idata.attrs["sampling_seconds"]
    return {
        "ess_per_second": min_ess / seconds,
        "min_ess": min_ess,
        "max_rhat": float(np.max([np.max(rhat[v].values) for v in rhat.data_vars])),
    }


def report(
    results: dict[str, dict[str, list[dict[str, float]]]], machine: dict, method: str
) -> str:
    """The markdown table: geometric-mean ESS/s per metric and their ratio, per model."""
    steps = 1000 * STEP_MULTIPLIER[method]
    lines = [
        f"# {method.upper()}: dense against diagonal metric on the zoo",
        "",
        f"4 chains x ({steps} warm-up + {steps} draws) per run.",
        "",
        f"Machine: {machine['cpu']} ({machine['cores']} cores, load average "
        f"{machine['load_average'][0]}), jax {machine['jax']}, probinfer at commit "
        f"{machine['commit']}, {machine['date']}. Method: `benchmarks/metric_default.py`.",
        "",
        "| model | seeds | ESS/s dense | ESS/s diagonal | dense / diagonal | "
        "max R-hat dense / diag | worst seed's min ESS dense / diag |",
        "|---|---|---|---|---|---|---|",
    ]
    for name, runs in results.items():
        means = {
            m: float(np.exp(np.mean(np.log([r["ess_per_second"] for r in runs[m]]))))
            for m in METRICS
        }
        rhats = [float(np.max([r["max_rhat"] for r in runs[m]])) for m in METRICS]
        worst = [float(np.min([r["min_ess"] for r in runs[m]])) for m in METRICS]
        lines.append(
            f"| {name} | {len(runs['dense'])} | {means['dense']:.0f} | {means['diag']:.0f} | "
            f"{means['dense'] / means['diag']:.2f} | {rhats[0]:.3f} / {rhats[1]:.3f} | "
            f"{worst[0]:.0f} / {worst[1]:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--method", choices=sorted(STEP_MULTIPLIER), default="nuts")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS), help="zoo models, comma-separated")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/metric_default"))
    options = parser.parse_args()
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    models = options.models.split(",")
    for name in models:
        for metric in METRICS:  # compile, untimed
            one_run(name, options.method, metric, seed=99)
        results[name] = {metric: [] for metric in METRICS}
        for seed in range(options.seeds):
            for metric in METRICS:
                results[name][metric].append(one_run(name, options.method, metric, seed))
        print(name, {m: [round(r["ess_per_second"]) for r in results[name][m]] for m in METRICS})
    machine = machine_description()
    options.out.mkdir(parents=True, exist_ok=True)
    stem = "metric_default" if options.method == "nuts" else f"metric_default_{options.method}"
    if set(models) != set(MODELS):
        stem += "_" + "_".join(models)
    (options.out / f"{stem}.json").write_text(
        json.dumps({"machine": machine, "method": options.method, "results": results}, indent=1)
        + "\n"
    )
    (options.out / f"{stem}.md").write_text(report(results, machine, options.method))


if __name__ == "__main__":
    main()
