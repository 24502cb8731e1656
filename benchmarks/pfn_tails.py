"""What a PFN's tails cost: test targets beyond its outer bucket borders, against the exact
predictive, under the half-normal tails used before, the default exponential ones and the
model's fitted ones.

Run::

    PYTHONPATH=. .venv/bin/python benchmarks/pfn_tails.py [--models gp_rbf gp_hyper]
        [--datasets 60] [--out benchmarks/results/pfn_tails]

Writes ``pfn_tails.md`` and ``pfn_tails.json`` to ``--out``.

For each shipped model (folders under ``probinfer/amortize/pretrained``), prior datasets are
drawn in turn with 1-3 features and 5, 10, 20 or 50 train points (10 test points each);
those with a test target beyond the outer borders are kept until ``--datasets`` are. On
each kept dataset the reference is the exact predictive (the GP's for a fixed prior; NUTS
over the hyperparameters for a hyperprior, ``benchmarks/pfn.py``), and the PFN's logits are
scored with three tails. Only a tail's shape differs between them (the network never sees
it: :mod:`probinfer.amortize._bar`), so the gap per point beyond the borders is what each
tail costs there; times the share of test points beyond (over every drawn dataset), it is
the cost per test point on the prior.
"""

from __future__ import annotations

import argparse
import itertools
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from pfn import (
    NUM_TEST,
    RHAT_LIMIT,
    _display_path,
    _standard_error,
    checked_reference,
    converged,
    draw_datasets,
    exact_point_nll,
)

from probinfer import amortize
from probinfer.bench import machine_description

PRETRAINED = Path(amortize.__file__).parent / "pretrained"
FEATURES = (1, 2, 3)
TRAIN_SIZES = (5, 10, 20, 50)
# The draws are chunked so that each shape compiles once.
CHUNK = 256


def half_normal_log_prob(bar: amortize.BarDistribution, logits, y) -> np.ndarray:
    """The bar density under the half-normal tails probinfer used before the fitted ones:
    each tail's scale put its median at the replaced bucket's width."""
    borders = np.asarray(bar.borders, np.float64)
    widths = np.diff(borders)
    log_p = np.asarray(jax.nn.log_softmax(jnp.asarray(logits, jnp.float32), axis=-1), np.float64)
    inner = np.asarray(bar.log_prob(logits, y), np.float64)
    median = 0.6744897501960817  # of a unit half-normal

    def tail(excess, width, log_mass):
        scale = width / median
        return log_mass + 0.5 * np.log(2 / np.pi) - np.log(scale) - 0.5 * (excess / scale) ** 2

    left = tail(borders[1] - y, widths[0], log_p[..., 0])
    right = tail(y - borders[-2], widths[-1], log_p[..., -1])
    return np.where(y < borders[1], left, np.where(y > borders[-2], right, inner))


def run_model(folder: Path, num_datasets: int) -> dict:
    config = json.loads((folder / "config.json").read_text())
    prior = amortize.prior_from_spec(config["prior"])
    model = amortize.load(folder)
    if model.scale_free or model.bar.fitted_tails is None:
        raise ValueError(f"{folder}: measure a model with fitted tails in its prior's units")
    bars = {"half-normal (before)": None,
            "exponential (default)": amortize.BarDistribution(model.bar.borders),
            "fitted": model.bar}  # fmt: skip
    borders = np.asarray(model.bar.borders, np.float64)
    hyper = isinstance(prior, amortize.GPHyperPrior)
    logits_of = jax.jit(jax.vmap(model))
    gaps = {name: [] for name in bars}
    drawn_points = beyond_points = kept = retried = unconverged = 0
    max_rhat = 0.0
    reference_seconds = 0.0
    shapes = itertools.cycle(itertools.product(FEATURES, TRAIN_SIZES))
    key = jax.random.key(777)
    while kept < num_datasets:
        num_features, num_train = next(shapes)
        key, key_data = jax.random.split(key)
        x, y = draw_datasets(prior, key_data, CHUNK, num_train + NUM_TEST, num_features)
        x, y = np.asarray(x, np.float64), np.asarray(y, np.float64)
        y_test = y[:, num_train:]
        beyond = (y_test < borders[1]) | (y_test > borders[-2])
        drawn_points += beyond.size
        beyond_points += int(beyond.sum())
        chosen = np.flatnonzero(beyond.any(axis=1))[: num_datasets - kept]
        if chosen.size == 0:
            continue
        logits = logits_of(jnp.asarray(x[chosen, :num_train], jnp.float32),
                           jnp.asarray(y[chosen, :num_train], jnp.float32),
                           jnp.asarray(x[chosen, num_train:], jnp.float32))  # fmt: skip
        start = time.perf_counter()
        if hyper:  # each rerun longer above the R-hat limit, left out if still above
            runs = [checked_reference(prior, x[i], y[i], num_train, kept + j + 1)
                    for j, i in enumerate(chosen)]  # fmt: skip
            retried += sum(again for _, again in runs)
            max_rhat = float(np.max([max_rhat, *(run.max_rhat for run, _ in runs)]))  # NaN stays
            usable = np.array([converged(run.max_rhat) for run, _ in runs])
            unconverged += int((~usable).sum())
            if unconverged > num_datasets:
                raise SystemExit(
                    f"{folder.name}: {unconverged} NUTS references did not converge (R-hat "
                    f"up to {max_rhat:.3f} after a longer rerun), more than the "
                    f"{num_datasets} datasets asked for: the reference cannot be trusted here"
                )
            logits, chosen = logits[usable], chosen[usable]
            reference = np.stack([run.point_nll for run, _ in runs])[usable]
        else:
            reference = exact_point_nll(prior, x[chosen], y[chosen], num_train)
        reference_seconds += time.perf_counter() - start
        if chosen.size == 0:  # none of this chunk's references converged
            continue
        for name, bar in bars.items():
            if bar is None:
                log_prob = half_normal_log_prob(model.bar, logits, y_test[chosen])
            else:
                log_prob = np.asarray(bar.log_prob(logits, y_test[chosen]), np.float64)
            gaps[name].extend((-log_prob - reference)[beyond[chosen]].tolist())
        kept += chosen.size
        print(f"{folder.name}: {kept}/{num_datasets} datasets", flush=True)
    share = beyond_points / drawn_points
    return {
        "model": _display_path(folder),
        "prior": config["prior"],
        "tails": [list(tail) for tail in model.bar.tails],
        "datasets": num_datasets,
        "points_beyond": len(gaps["fitted"]),
        "share_beyond": share,
        "drawn_test_points": drawn_points,
        "reference": "NUTS over the hyperparameters" if hyper else "exact GP",
        "reference_seconds": reference_seconds,
        # NUTS references only: rerun longer above the R-hat limit; left out if still above.
        **(
            {"nuts_max_rhat": max_rhat, "nuts_retried": retried, "nuts_unconverged": unconverged}
            if hyper
            else {}
        ),  # fmt: skip
        "gap_per_point_beyond": {
            name: [float(np.mean(v)), _standard_error(v)] for name, v in gaps.items()
        },
        "cost_per_test_point": {name: float(np.mean(v)) * share for name, v in gaps.items()},
    }


def markdown(result: dict) -> str:
    lines = [
        "# What the PFN's tails cost",
        "",
        f"Machine: `{json.dumps(result['machine'])}`",
        "",
        "Prior datasets (1-3 features, 5/10/20/50 train points, 10 test points) with a test "
        "target beyond the model's outer bucket borders; per such point, the PFN's NLL minus "
        "the exact predictive's (mean ± s.e.) under each tail, on the same logits. The cost "
        "per test point on the prior is that gap times the share of test points beyond.",
        "",
        "| model | reference | datasets | points beyond | share beyond | tails | "
        "gap per point beyond | cost per test point |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in result["rows"]:
        for name, (gap, se) in row["gap_per_point_beyond"].items():
            lines.append(
                f"| {Path(row['model']).name} | {row['reference']} | {row['datasets']} | "
                f"{row['points_beyond']} | {row['share_beyond']:.2%} | {name} | "
                f"{gap:+.3f} ± {se:.3f} | {row['cost_per_test_point'][name]:+.4f} |"
            )
    checked = [row for row in result["rows"] if "nuts_max_rhat" in row]
    if checked:
        lines += ["", "NUTS references: rerun with 1000 warm-up + 2000 draws when R-hat is above "
                  f"{RHAT_LIMIT}, the dataset left out if still above.", ""]  # fmt: skip
        lines += [
            f"- {Path(row['model']).name}: R-hat <= {row['nuts_max_rhat']:.3f}; "
            f"{row['nuts_retried']} retried, {row['nuts_unconverged']} left out"
            for row in checked
        ]
    lines += ["", "Fitted tails (shape, scale; left, right):", ""]
    for row in result["rows"]:
        tails = ", ".join(f"({shape:.3f}, {scale:.3f})" for shape, scale in row["tails"])
        lines.append(f"- {Path(row['model']).name}: {tails}")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["gp_rbf", "gp_hyper"])
    parser.add_argument("--datasets", type=int, default=60)
    parser.add_argument("--out", default="benchmarks/results/pfn_tails")
    args = parser.parse_args()
    rows = [run_model(PRETRAINED / name, args.datasets) for name in args.models]
    result = {"machine": machine_description(), "rows": rows}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pfn_tails.json").write_text(json.dumps(result, indent=2))
    (out / "pfn_tails.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
