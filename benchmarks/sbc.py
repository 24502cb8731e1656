"""Simulation-based calibration of every inference family, with negative controls.

Run::

    .venv/bin/python benchmarks/sbc.py [--methods nuts,hmc,mala,rwm,smc,ns] \
        [--replicates 500] [--seed 0] [--out benchmarks/results/sbc]

For each method, :func:`probinfer.diagnostics.sbc` simulates ``mu ~ Normal(0, 1)``,
``sigma ~ HalfNormal(1)`` and five observations ``Normal(mu, sigma)``, fits the posterior
with that method and ranks the truths among 99 of its draws (``tests/_sbc.py``:
``family_sbc``, with the settings in ``FAMILY_SETTINGS``). Three fitted models per method:
the correct one, which must pass (rank-ECDF p-value above ``ALPHA`` = 5e-5 for both
sites), and two negative controls, which must fail: a half-normal prior on ``sigma``
whose unconstrained transform drops its log-Jacobian, and a prior on ``mu`` three times
too narrow (the data always come from the true model). ``tests/test_calibration_slow.py``
asserts exactly these runs. Writes ``sbc.{json,md}`` and one rank-ECDF figure per method
(rows: the three fitted models).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from sbc_power import load_harness  # noqa: E402

from probinfer.bench import machine_description  # noqa: E402

_sbc = load_harness()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(_sbc.FAMILY_SETTINGS))
    parser.add_argument("--replicates", type=int, default=_sbc.FAMILY_REPLICATES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sbc"))
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    rows = []
    for method in options.methods.split(","):
        figure, axes = plt.subplots(
            len(_sbc.CONTROLS), 2, figsize=(7.0, 2.4 * len(_sbc.CONTROLS)), squeeze=False
        )
        for row, control in enumerate(_sbc.CONTROLS):
            start = time.perf_counter()
            result = _sbc.family_sbc(method, control, options.replicates, options.seed)
            seconds = time.perf_counter() - start
            rows.append(
                {
                    "method": method,
                    "control": control,
                    "p_values": {name: float(p) for name, p in result.p_values.items()},
                    "passes": _sbc.passes(result),
                    # MCMC only: SMC and nested-sampling draws are particles (NaN ESS).
                    "median_min_ess": None
                    if np.all(np.isnan(result.min_ess))
                    else float(np.nanmedian(result.min_ess)),
                    "low_ess_replicates": int(np.sum(result.min_ess < result.num_ranked)),
                    "warned_replicates": result.num_warned,
                    "seconds": seconds,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            result.plot(axes=list(axes[row]))
            axes[row, 0].set_ylabel(f"{control}\nECDF difference", fontsize=9)
        figure.suptitle(
            f"SBC of {method}: {options.replicates} replicates, ranks among "
            f"{_sbc.NUM_RANKED} draws, 95% simultaneous bands",
            fontsize=10,
        )
        figure.tight_layout()
        figure.savefig(options.out / f"sbc_{method}.png", dpi=80)
        plt.close(figure)
    machine = machine_description()
    settings = {
        "replicates": options.replicates,
        "seed": options.seed,
        "num_ranked": _sbc.NUM_RANKED,
        "alpha": _sbc.ALPHA,
        "family_settings": _sbc.FAMILY_SETTINGS,
    }
    (options.out / "sbc.json").write_text(
        json.dumps({"machine": machine, "settings": settings, "rows": rows}, indent=1) + "\n"
    )
    (options.out / "sbc.md").write_text(report(rows, machine, options.replicates))


def report(rows: list[dict], machine: dict, replicates: int) -> str:
    """The markdown table: each run's p-values and whether it passed."""
    lines = [
        "# Simulation-based calibration of every family (`benchmarks/sbc.py`)",
        "",
        f"Machine: {machine['cpu']}, {machine['cores']} cores, load average "
        f"{machine['load_average']}, jax {machine['jax']}, probinfer at commit "
        f"{machine['commit']}, {machine['date']}. {replicates} replicates per row, ranks "
        f"among {_sbc.NUM_RANKED} draws; a row passes when both sites' rank-ECDF p-values "
        f"are above {_sbc.ALPHA:g}. The correct model must pass, the controls must fail. "
        "Settings per method: `FAMILY_SETTINGS` in `tests/_sbc.py`; figures "
        "`sbc_<method>.png`.",
        "",
        "| method | fitted model | p (mu) | p (sigma) | verdict | median smallest ESS "
        "| replicates with ESS < 99 | replicates that warned | seconds |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        expected = "pass" if row["control"] == "correct" else "fail"
        verdict = "pass" if row["passes"] else "fail"
        mark = "" if verdict == expected else " (unexpected)"
        ess = "-" if row["median_min_ess"] is None else f"{row['median_min_ess']:.0f}"
        low = "-" if row["median_min_ess"] is None else str(row["low_ess_replicates"])
        lines.append(
            f"| {row['method']} | {row['control']} | {row['p_values']['mu']:.2g} | "
            f"{row['p_values']['sigma']:.2g} | {verdict}{mark} | {ess} | {low} | "
            f"{row['warned_replicates']} | {row['seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
