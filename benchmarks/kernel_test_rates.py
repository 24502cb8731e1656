"""How often ``tests/test_kernels.py``'s statistical checks fail a correct kernel, and catch a
wrong one, over many seeds.

Run::

    .venv/bin/python benchmarks/kernel_test_rates.py \
        [--algorithms nuts] [--adapted-seeds 200] [--invariance-seeds 300] \
        [--shaped-seeds 30] [--out benchmarks/results/kernel_test_rates]

For each algorithm it runs the test module's own functions (imported, not copied) with
seeds ``0 .. N-1`` in place of the test's seed 0:

- *adapted*: ``adapted_draws`` (window adaptation, 16 chains x 2000 draws), the 14 MCSE
  checks against the exact 4-d Gaussian; power: every mean check against the target
  shifted by 0.3 sd must fail (same draws);
- *invariance*: ``invariance_draws`` (8192 exact draws, a few steps) with the identity and
  the true dense metric, the 14 iid-MCSE checks; power: the kernel targeting the shifted
  density, dense metric, must fail a check;
- *shaped*: ``shaped_chi_square`` on the banana, the funnel and the mixture, against the
  test's chi-square limit; power: the perturbed target must exceed it.

A false failure is a seed where the correct kernel fails; power is the fraction of seeds
where the wrong one is caught. Writes ``kernel_test_rates.{json,md}``. The test module's
programs are compiled once per algorithm and reused across seeds (only the key changes).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from types import ModuleType
from typing import Any

import numpy as np
from _tests_import import load_test_module

from probinfer.bench import machine_description


def standardized_errors(checks: list[Any]) -> list[float]:
    """``|estimate - truth| / MCSE`` of each check (a check fails above its ``z``, 4)."""
    return [abs(c.estimate - c.truth) / c.mcse for c in checks]


def adapted_rates(kernels: ModuleType, name: str, seeds: int) -> dict[str, Any]:
    """False failures of the adapted-run check and its power against the shifted target."""
    false_failures, caught, worst_z = [], 0, 0.0
    for seed in range(seeds):
        draws = kernels.adapted_draws.__wrapped__(name, seed)
        checks = kernels.check_moments(draws, kernels.MEAN, kernels.COV)
        if kernels.failures(checks):
            false_failures.append(seed)
        worst_z = max(worst_z, max(standardized_errors(checks)))
        shifted = kernels.check_moments(
            draws, kernels.MEAN + kernels.SHIFT, kernels.COV, covariances=False
        )
        caught += all(not c.ok for c in shifted if c.name.startswith("mean"))
    return {
        "seeds": seeds,
        "false_failures": false_failures,
        "power": caught / seeds,
        "largest_abs_z": worst_z,
    }


def invariance_rates(kernels: ModuleType, name: str, seeds: int) -> dict[str, Any]:
    """False failures per metric and the power against the shifted density (dense)."""
    result: dict[str, Any] = {"seeds": seeds}
    zeros = np.zeros(4, np.float32)
    for metric in sorted(kernels.METRICS):
        false_failures, worst_z = [], 0.0
        for seed in range(seeds):
            draws = kernels.invariance_draws(name, metric, shift=zeros, seed=seed)
            checks = kernels.check_moments(draws, kernels.MEAN, kernels.COV, iid=True)
            if kernels.failures(checks):
                false_failures.append(seed)
            worst_z = max(worst_z, max(standardized_errors(checks)))
        result[metric] = {"false_failures": false_failures, "largest_abs_z": worst_z}
    shift = np.asarray(kernels.SHIFT, np.float32)
    caught = 0
    for seed in range(seeds):
        draws = kernels.invariance_draws(name, "dense", shift=shift, seed=seed)
        checks = kernels.check_moments(draws, kernels.MEAN, kernels.COV, iid=True)
        caught += bool(kernels.failures(checks))
    result["power"] = caught / seeds
    return result


def shaped_rates(kernels: ModuleType, name: str, seeds: int) -> dict[str, Any]:
    """Per target: false failures, the largest chi-square, and the power (perturbed)."""
    result: dict[str, Any] = {"seeds": seeds, "limit": kernels.CHI_SQUARE_LIMIT}
    for target in kernels.SHAPED_TARGETS:
        values = [kernels.shaped_chi_square(name, target, seed=seed) for seed in range(seeds)]
        perturbed = [
            kernels.shaped_chi_square(name, target, delta=kernels.SHAPED_DELTAS[target], seed=seed)
            for seed in range(seeds)
        ]
        result[target] = {
            "false_failures": [s for s, v in enumerate(values) if v >= kernels.CHI_SQUARE_LIMIT],
            "largest_chi_square": max(values),
            "power": float(np.mean(np.asarray(perturbed) > kernels.CHI_SQUARE_LIMIT)),
            "smallest_perturbed_chi_square": min(perturbed),
        }
    return result


def report(results: dict[str, Any], machine: dict[str, Any], seconds: float) -> str:
    """The markdown tables of false-failure counts and power."""
    lines = [
        "# False-failure rate and power of `tests/test_kernels.py`",
        "",
        f"Machine: {machine['cpu']}, jax {machine['jax']}, probinfer at commit "
        f"{machine['commit']}, {machine['date']}, load {machine['load_average']}; "
        f"{seconds:.0f} s. Method: `benchmarks/kernel_test_rates.py` (its docstring): the "
        "test module's own functions with seeds 0 .. N-1.",
        "",
        "| algorithm | check | seeds | false failures | largest abs(z) or chi-square "
        "| power (wrong target caught) |",
        "|---|---|---|---|---|---|",
    ]
    for name, by_check in results.items():
        adapted = by_check["adapted"]
        lines.append(
            f"| {name} | adapted, 14 MCSE checks | {adapted['seeds']} | "
            f"{len(adapted['false_failures'])} {adapted['false_failures'] or ''} | "
            f"z {adapted['largest_abs_z']:.2f} | {adapted['power']:.0%} |"
        )
        invariance = by_check["invariance"]
        for metric in ("identity", "dense"):
            row = invariance[metric]
            power = f"{invariance['power']:.0%}" if metric == "dense" else "-"
            lines.append(
                f"| {name} | invariance, {metric} metric | {invariance['seeds']} | "
                f"{len(row['false_failures'])} {row['false_failures'] or ''} | "
                f"z {row['largest_abs_z']:.2f} | {power} |"
            )
        shaped = by_check["shaped"]
        for target in ("banana", "funnel", "mixture"):
            row = shaped[target]
            lines.append(
                f"| {name} | shaped, {target} (limit {shaped['limit']:.1f}) | "
                f"{shaped['seeds']} | {len(row['false_failures'])} "
                f"{row['false_failures'] or ''} | {row['largest_chi_square']:.1f} | "
                f"{row['power']:.0%} (smallest {row['smallest_perturbed_chi_square']:.0f}) |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--algorithms", default="nuts")
    parser.add_argument("--adapted-seeds", type=int, default=200)
    parser.add_argument("--invariance-seeds", type=int, default=300)
    parser.add_argument("--shaped-seeds", type=int, default=30)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/kernel_test_rates"))
    options = parser.parse_args()
    kernels = load_test_module("test_kernels")
    start = time.perf_counter()
    results: dict[str, Any] = {}
    for name in options.algorithms.split(","):
        results[name] = {
            "adapted": adapted_rates(kernels, name, options.adapted_seeds),
            "invariance": invariance_rates(kernels, name, options.invariance_seeds),
            "shaped": shaped_rates(kernels, name, options.shaped_seeds),
        }
        print(name, json.dumps(results[name]), flush=True)
    seconds = time.perf_counter() - start
    machine = machine_description()
    options.out.mkdir(parents=True, exist_ok=True)
    (options.out / "kernel_test_rates.json").write_text(
        json.dumps({"machine": machine, "seconds": seconds, "results": results}, indent=1) + "\n"
    )
    (options.out / "kernel_test_rates.md").write_text(report(results, machine, seconds))
    print(report(results, machine, seconds))


if __name__ == "__main__":
    main()
