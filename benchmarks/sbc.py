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

``--sections pfn`` calibrates the shipped PFNs instead: the probability integral transform
(PIT) of one held-out target per dataset, over ``PFN_DATASETS`` = 1,000 datasets from the
model's training prior, is uniform when the predictive is calibrated; ``floor(100 PIT)``
is tested as ranks in ``0..99`` (``tests/_sbc.py``: ``pfn_pit_ranks``). Controls: data
from a wrong prior, and the predictive squeezed 2x (``PFN_CONTROLS``). Writes
``pfn_pit.{json,md}`` and ``pfn_pit.png``.

``--sections classifier`` calibrates the binary and the three-class NNGP classifier
(``nngp.sample_classifier``, NUTS and Gibbs) on labels simulated from its own model
(``tests/_sbc.py``: ``classifier_sbc``, ``CLASSIFIER_REPLICATES`` = 300 replicates), with a
prior on ``log s`` three times too narrow as the control. Writes ``classifier.{json,md}`` and
``classifier.png``.

``--sections pfn-classifier`` tests the shipped classifier PFN (``gp-classifier``) with
Spiegelhalter's z on one held-out label per dataset over ``PFN_CLASSIFIER_DATASETS`` =
2,000 prior datasets (``tests/_sbc.py``: ``pfn_classifier_calibration``); controls: its
logits doubled or halved. Writes ``pfn_classifier.{json,md}``.
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
from _tests_import import load_test_module  # noqa: E402

from probinfer.bench import machine_description  # noqa: E402
from probinfer.diagnostics import SBCResult, rank_ecdf_test  # noqa: E402

_sbc = load_test_module("_sbc")  # the test suite's SBC harness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--methods", default=",".join(_sbc.FAMILY_SETTINGS))
    parser.add_argument("--replicates", type=int, default=_sbc.FAMILY_REPLICATES)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/sbc"))
    parser.add_argument("--sections", default="families,pfn,classifier,pfn-classifier")
    options = parser.parse_args()
    options.out.mkdir(parents=True, exist_ok=True)
    sections = options.sections.split(",")
    if "families" in sections:
        families(options)
    if "pfn" in sections:
        pfn(options)
    if "classifier" in sections:
        classifier(options)
    if "pfn-classifier" in sections:
        pfn_classifier(options)


def verdict(row: dict) -> str:
    """ "pass" or "fail", flagged when a correct model fails or a control passes."""
    result = "pass" if row["passes"] else "fail"
    expected = "pass" if row["control"] == "correct" else "fail"
    return result if result == expected else f"{result} (unexpected)"


def save_figure(figure: plt.Figure, title: str, path: Path, dpi: int) -> None:
    """Title the figure, lay it out, write it to ``path`` and close it."""
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    figure.savefig(path, dpi=dpi)
    plt.close(figure)


def families(options: argparse.Namespace) -> None:
    """SBC of every method with its controls: ``sbc.{json,md}``, ``sbc_<method>.png``."""
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
                    # Refitted with more draws because the first run's ESS was below 99.
                    "extended_replicates": int(
                        np.sum(result.draws > _sbc.FAMILY_SETTINGS[method]["draws"])
                    ),
                    "warned_replicates": result.num_warned,
                    "seconds": seconds,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
            result.plot(axes=list(axes[row]))
            axes[row, 0].set_ylabel(f"{control}\nECDF difference", fontsize=9)
        save_figure(
            figure,
            f"SBC of {method}: {options.replicates} replicates, ranks among "
            f"{_sbc.NUM_RANKED} draws, 95% simultaneous bands",
            options.out / f"sbc_{method}.png",
            dpi=80,
        )
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


def pfn(options: argparse.Namespace) -> None:
    """PIT calibration of the shipped PFNs: ``pfn_pit.{json,md,png}``."""
    rows = []
    figure, axes = plt.subplots(
        len(_sbc.PFN_MODELS) * len(_sbc.PFN_TRAIN_SIZES),
        len(_sbc.PFN_CONTROLS),
        figsize=(
            3.6 * len(_sbc.PFN_CONTROLS),
            2.3 * len(_sbc.PFN_MODELS) * len(_sbc.PFN_TRAIN_SIZES),
        ),
        squeeze=False,
    )
    row_index = 0
    for name in _sbc.PFN_MODELS:
        for num_train in _sbc.PFN_TRAIN_SIZES:
            for column, control in enumerate(_sbc.PFN_CONTROLS):
                ranks = _sbc.pfn_pit_ranks(name, control, num_train, seed=options.seed)
                p_value = rank_ecdf_test(ranks, _sbc.NUM_RANKED)
                rows.append(
                    {"model": name, "num_train": num_train, "control": control,
                     "p_value": p_value, "passes": p_value > _sbc.ALPHA}
                )  # fmt: skip
                print(json.dumps(rows[-1]), flush=True)
                as_result = SBCResult.from_ranks({"PIT": ranks}, _sbc.NUM_RANKED, name)
                axis = axes[row_index, column]
                as_result.plot(axes=[axis])
                axis.set_title(f"{name}, n = {num_train}, {control}\np = {p_value:.2g}", fontsize=8)
                axis.set_xlabel("")
            row_index += 1
    save_figure(
        figure,
        f"PIT of the shipped PFNs: {_sbc.PFN_DATASETS} prior datasets per panel, 95% bands",
        options.out / "pfn_pit.png",
        dpi=70,
    )
    machine = machine_description()
    (options.out / "pfn_pit.json").write_text(
        json.dumps({"machine": machine, "datasets": _sbc.PFN_DATASETS, "rows": rows}, indent=1)
        + "\n"
    )
    (options.out / "pfn_pit.md").write_text(pfn_report(rows, machine))


def classifier(options: argparse.Namespace) -> None:
    """SBC of the NNGP classifier with its control: ``classifier.{json,md,png}``."""
    rows = []
    methods, controls = _sbc.CLASSIFIER_METHODS, _sbc.CLASSIFIER_CONTROLS
    cases = [(classes, method, control) for classes in _sbc.CLASSIFIER_CLASSES
             for method in methods for control in controls]  # fmt: skip
    figure, axes = plt.subplots(len(cases), 3, figsize=(9.0, 2.4 * len(cases)))
    for row_index, (classes, method, control) in enumerate(cases):
        start = time.perf_counter()
        result = _sbc.classifier_sbc(
            method, control, _sbc.CLASSIFIER_REPLICATES, options.seed, num_classes=classes
        )
        rows.append(
            {
                "classes": classes,
                "method": method,
                "control": control,
                "p_values": {label: float(p) for label, p in zip(
                    result.labels(),
                    np.concatenate([np.ravel(p) for p in result.p_values.values()]),
                    strict=True,
                )},
                "passes": _sbc.passes(result),
                "median_min_ess": float(np.median(result.min_ess)),
                "low_ess_replicates": int(np.sum(result.min_ess < 0.5 * result.num_ranked)),
                "warned_replicates": result.num_warned,
                "seconds": time.perf_counter() - start,
            }
        )  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
        result.plot(axes=list(axes[row_index]))
        axes[row_index, 0].set_ylabel(
            f"{classes} classes, {method},\n{control}\nECDF difference", fontsize=8
        )
    save_figure(
        figure,
        f"SBC of the NNGP classifier: {_sbc.CLASSIFIER_REPLICATES} replicates, ranks among "
        f"{_sbc.NUM_RANKED} draws, 95% simultaneous bands",
        options.out / "classifier.png",
        dpi=70,
    )
    machine = machine_description()
    settings = {"replicates": _sbc.CLASSIFIER_REPLICATES, "seed": options.seed,
                "points": _sbc.CLASSIFIER_POINTS, "classes": _sbc.CLASSIFIER_CLASSES,
                "settings": _sbc.CLASSIFIER_SETTINGS}  # fmt: skip
    (options.out / "classifier.json").write_text(
        json.dumps({"machine": machine, "settings": settings, "rows": rows}, indent=1) + "\n"
    )
    lines = [
        "# SBC of the NNGP classifier (`benchmarks/sbc.py --sections classifier`)",
        "",
        f"Machine: {machine['cpu']}, jax {machine['jax']}, probinfer at commit "
        f"{machine['commit']}, {machine['date']}. {_sbc.CLASSIFIER_REPLICATES} replicates "
        f"per row: `log s ~ Normal(0, 1)`, `f_c | s ~ GP(0, s K)` at {_sbc.CLASSIFIER_POINTS} "
        "inputs on [-1, 1] (ReLU NNGP, one hidden layer); two classes: one latent function, "
        "Bernoulli-logit labels; three classes: three independent latent functions, softmax "
        f"labels. One chain per fit, ranks among {_sbc.NUM_RANKED} kept draws of `log s` "
        "and of `f` of the first class at the first input and of the last class at the "
        "last input (`f[0]`, `f[1]` in the figure); a row passes when every "
        f"p-value is above {_sbc.ALPHA:g}. "
        "Control: fitted with `log s ~ Normal(0, 1/3)`. Settings: `CLASSIFIER_SETTINGS` in "
        "`tests/_sbc.py`. ESS: bulk ESS of the 99 kept draws, smallest over the three "
        "quantities.",
        "",
        "| classes | method | fitted prior | p (log s) | p (f first) | p (f last) | verdict "
        "| median smallest ESS | replicates with ESS < 50 | replicates that warned |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        p = list(row["p_values"].values())
        lines.append(
            f"| {row['classes']} | {row['method']} | {row['control']} | {p[0]:.2g} | "
            f"{p[1]:.2g} | {p[2]:.2g} | "
            f"{verdict(row)} | {row['median_min_ess']:.0f} | {row['low_ess_replicates']} | "
            f"{row['warned_replicates']} |"
        )
    lines += ["", "![rank ECDFs](classifier.png)"]
    (options.out / "classifier.md").write_text("\n".join(lines) + "\n")


def pfn_classifier(options: argparse.Namespace) -> None:
    """Spiegelhalter's test of the classifier PFN and its controls:
    ``pfn_classifier.{json,md}``."""
    rows = []
    for num_train in _sbc.PFN_TRAIN_SIZES:
        for control in _sbc.PFN_CLASSIFIER_CONTROLS:
            z, p_value = _sbc.pfn_classifier_calibration(control, num_train, seed=options.seed)
            rows.append({"num_train": num_train, "control": control, "z": z,
                         "p_value": p_value, "passes": p_value > _sbc.ALPHA})  # fmt: skip
            print(json.dumps(rows[-1]), flush=True)
    machine = machine_description()
    (options.out / "pfn_classifier.json").write_text(
        json.dumps(
            {"machine": machine, "datasets": _sbc.PFN_CLASSIFIER_DATASETS, "rows": rows}, indent=1
        )
        + "\n"
    )
    lines = [
        "# Calibration of the classifier PFN (`benchmarks/sbc.py --sections pfn-classifier`)",
        "",
        f"Machine: {machine['cpu']}, jax {machine['jax']}, probinfer at commit "
        f"{machine['commit']}, {machine['date']}. The shipped `gp-classifier` on "
        f"{_sbc.PFN_CLASSIFIER_DATASETS} datasets from its training prior (3 input features) "
        "per row, one held-out label each. Spiegelhalter's z is standard normal when the "
        "predicted probabilities are the labels' true ones; a row passes when its two-sided "
        f"p-value is above {_sbc.ALPHA:g}. Controls: the PFN's logits doubled "
        "(overconfident) or halved (underconfident), which must fail.",
        "",
        "| train points | predictive | z | p | verdict |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        lines.append(
            f"| {row['num_train']} | {row['control']} | {row['z']:+.2f} | "
            f"{row['p_value']:.2g} | {verdict(row)} |"
        )
    (options.out / "pfn_classifier.md").write_text("\n".join(lines) + "\n")


def pfn_report(rows: list[dict], machine: dict) -> str:
    """The markdown table of the PFNs' PIT p-values."""
    lines = [
        "# PIT calibration of the shipped PFNs (`benchmarks/sbc.py --sections pfn`)",
        "",
        f"Machine: {machine['cpu']}, jax {machine['jax']}, probinfer at commit "
        f"{machine['commit']}, {machine['date']}. {_sbc.PFN_DATASETS} datasets per row (3 "
        "input features, one held-out target each) from the model's training prior or a "
        "control; rank-ECDF p-value of `floor(100 PIT)`; a row passes above "
        f"{_sbc.ALPHA:g}. Controls: `PFN_CONTROLS` in `tests/_sbc.py`; figure `pfn_pit.png`.",
        "",
        "| model | train points | data / predictive | p | verdict |",
        "|---|---|---|---|---|",
    ]
    for row in rows:
        outcome = "pass" if row["passes"] else "fail"
        lines.append(
            f"| {row['model']} | {row['num_train']} | {row['control']} | "
            f"{row['p_value']:.2g} | {outcome} |"
        )
    lines += ["", "![PIT ECDFs](pfn_pit.png)"]
    return "\n".join(lines) + "\n"


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
        "`sbc_<method>.png`; run times (not a speed benchmark) are in `sbc.json`. ESS: "
        "the bulk ESS of the ranked run, smallest over `mu` and `sigma`; MCMC replicates "
        "whose ESS was below 99 were refitted with doubled draws, up to twice "
        "(thinning by ESS: `sbc`'s `max_extensions`).",
        "",
        "| method | fitted model | p (mu) | p (sigma) | verdict | median smallest ESS "
        "| replicates extended | replicates with ESS < 99 | replicates that warned |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        ess = "-" if row["median_min_ess"] is None else f"{row['median_min_ess']:.0f}"
        low = "-" if row["median_min_ess"] is None else str(row["low_ess_replicates"])
        extended = "-" if row["median_min_ess"] is None else str(row["extended_replicates"])
        lines.append(
            f"| {row['method']} | {row['control']} | {row['p_values']['mu']:.2g} | "
            f"{row['p_values']['sigma']:.2g} | {verdict(row)} | {ess} | {extended} | {low} | "
            f"{row['warned_replicates']} |"
        )
    lines.append("")
    for method in dict.fromkeys(row["method"] for row in rows):
        lines.append(f"![rank ECDFs of {method}](sbc_{method}.png)")
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
