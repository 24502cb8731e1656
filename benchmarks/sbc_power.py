"""How often the SBC test passes the correct model and fails its negative controls.

Run::

    .venv/bin/python benchmarks/sbc_power.py \
        [--replicates 200,500] [--seeds 60] [--out benchmarks/results/sbc_power]

The test is ``tests/_sbc.py``'s (read its docstring): ranks of ``mu`` and ``sigma`` among
99 thinned NUTS draws, one chi-square test per site over 10 bins, failed when either
p-value is below ``ALPHA`` (5e-5). For every number of replicates and every seed it runs
the correct model and two negative controls, a half-normal prior whose unconstrained
transform drops its log-Jacobian and a prior on ``mu`` three times too narrow, and
reports the fraction of seeds in which the test passes (correct model) or fails
(controls). ``tests/test_sbc.py`` uses the smallest number of replicates for which the
correct model passes and the dropped Jacobian fails in at least 95% of seeds. Writes
``sbc_power.{json,md}``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpyro.distributions as dist
from _tests_import import load_test_module

from probinfer.bench import machine_description

_sbc = load_test_module("_sbc")  # the test suite's SBC harness

MODELS = {
    "correct": _sbc.make_model(),
    "dropped Jacobian (sigma)": _sbc.make_model(_sbc.HalfNormalNoJacobian),
    "prior on mu 3x too narrow": _sbc.make_model(dist.HalfNormal, mu_scale=1.0 / 3.0),
}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", default="200,500")
    parser.add_argument("--seeds", type=int, default=60)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sbc_power"))
    options = parser.parse_args()
    results: dict[str, dict[str, list[dict[str, float]]]] = {}
    for replicates in [int(r) for r in options.replicates.split(",")]:
        results[str(replicates)] = {label: [] for label in MODELS}
        for seed in range(options.seeds):
            for label, model in MODELS.items():
                p_values = _sbc.sbc_p_values(model, replicates, seed)
                results[str(replicates)][label].append(p_values)
            print(replicates, seed, flush=True)
    machine = machine_description()
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "sbc_power.json").write_text(
        json.dumps({"machine": machine, "alpha": _sbc.ALPHA, "results": results}, indent=1) + "\n"
    )
    (options.out / "sbc_power.md").write_text(report(results, machine))


def report(results: dict[str, dict[str, list[dict[str, float]]]], machine: dict) -> str:
    """The markdown table: pass/fail counts, median p-values, and each row's worst seed (the
    smallest p-value for the correct model, the largest for a control)."""
    num_seeds = len(next(iter(next(iter(results.values())).values())))
    lines = [
        "# Power of the SBC test (`tests/_sbc.py`)",
        "",
        f"Machine: {machine['cpu']}, jax {machine['jax']}, probinfer at commit "
        f"{machine['commit']}, {machine['date']}. Method: `benchmarks/sbc_power.py` (its "
        f"docstring); {num_seeds} seeds per row; a test fails when the chi-square "
        f"p-value of either site is below {_sbc.ALPHA:g}.",
        "",
        "| replicates | model | test passes | test fails | median p (mu / sigma) "
        "| worst seed's p (mu / sigma) |",
        "|---|---|---|---|---|---|",
    ]
    for replicates, by_model in results.items():
        for label, runs in by_model.items():
            failed = sum(min(p.values()) < _sbc.ALPHA for p in runs)
            sites = ("mu", "sigma")
            medians = [sorted(p[site] for p in runs)[len(runs) // 2] for site in sites]
            worst_of = min if label == "correct" else max
            worst = [worst_of(p[site] for p in runs) for site in sites]
            lines.append(
                f"| {replicates} | {label} | {len(runs) - failed}/{len(runs)} | "
                f"{failed}/{len(runs)} | {medians[0]:.2g} / {medians[1]:.2g} | "
                f"{worst[0]:.2g} / {worst[1]:.2g} |"
            )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
