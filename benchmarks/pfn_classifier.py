"""A classifier PFN against the MCMC posterior predictive of its GP-classification prior.

Run::

    PYTHONPATH=. .venv/bin/python benchmarks/pfn_classifier.py [--model DIR]
        [--datasets 40] [--out benchmarks/results/pfn_classifier]

Writes ``pfn_classifier.md``, ``pfn_classifier.json`` and ``pfn_classifier.png`` to
``--out``, with ``training_curve.json`` / ``.png`` when the model's folder (or
``--training-curve``) has one.

Held-out datasets come from the prior the model was trained on (its ``config.json``): a
latent scale-mixture process (ReLU NNGP kernel, inverse-gamma scale) with a logistic link,
for 1, 2 and 3 input features and several numbers of train points, each with
:data:`NUM_TEST` test points. Inputs stay zero-padded to the prior's feature count: the NNGP
kernel normalises by the input dimension, so the padded inputs are the prior's own. For
each dataset, interleaved:

- **MCMC**: :func:`probinfer.nngp.sample_classifier` on the same model (NUTS on the
  whitened latents and ``log s``, 4 chains x (1,000 warm-up + 1,000 draws), float64), its
  predictive class probabilities averaged over the draws (16 latent draws at each test
  point per posterior draw): the reference. A run that warns that its chains have not
  mixed is counted and left out of the means.
- **PFN**: one forward pass through the public API (``predict`` then ``log_prob``).

Reported per cell: the test negative log predictive probability per point (nats) of both,
the PFN's gap with its standard error over datasets, the mean absolute difference of the
predicted probability of class 1, how often both pick the same class, and the time per
dataset of each after compilation (same process, interleaved dataset by dataset). The
prior predictive (no data) scores ``log 2 = 0.693`` nats per point.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import jax
import numpy as np

from benchmarks.pfn import (
    _display_path,
    _result,
    _standard_error,
    copy_training_curve,
    nll_panels,
    write_result,
)
from probinfer import amortize, nngp
from probinfer.diagnostics import SamplingWarning

NUM_TEST = 10
TRAIN_SIZES = (2, 5, 10, 20, 50)
MCMC_WARMUP = 1000
MCMC_DRAWS = 1000
LATENT_SAMPLES = 16


def mcmc_probabilities(
    prior: amortize.GPClassificationPrior,
    x_train: np.ndarray,
    labels: np.ndarray,
    x_test: np.ndarray,
    *,
    key: jax.Array,
    warmup: int = MCMC_WARMUP,
    draws: int = MCMC_DRAWS,
) -> tuple[np.ndarray, bool]:
    """``(m, num_classes)`` MCMC posterior predictive class probabilities at ``x_test``
    (float64), and whether the chains mixed (no :class:`SamplingWarning`)."""
    key_sample, key_predict = jax.random.split(key)
    with jax.enable_x64(True), warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", SamplingWarning)
        posterior = nngp.sample_classifier(
            key_sample, prior.process.kernel, np.asarray(x_train, np.float64),
            np.asarray(labels, int), scale_prior=prior.process.scale_prior,
            num_classes=prior.num_classes, num_warmup=warmup, num_draws=draws,
            jitter=prior.process.jitter, progress=False,
        )  # fmt: skip
        probabilities = posterior.predict_proba(
            np.asarray(x_test, np.float64), key=key_predict, num_latent_samples=LATENT_SAMPLES
        )
        probabilities = np.asarray(probabilities, np.float64)
    mixed = not any(issubclass(w.category, SamplingWarning) for w in caught)
    return probabilities, mixed


def class_nll(probabilities: np.ndarray, labels: np.ndarray) -> float:
    """Mean negative log probability of ``labels`` under ``(m, C)`` ``probabilities``."""
    chosen = probabilities[np.arange(labels.size), labels]
    return -float(np.mean(np.log(chosen)))


def pfn_probabilities(
    model: amortize.PFNClassifier, x_train: np.ndarray, labels: np.ndarray, x_test: np.ndarray
) -> amortize.PFNClassPredictive:
    """The PFN's predictive through the public API (off-range inputs measured on purpose)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        predictive = amortize.predict(model, x_train, labels, x_test)
    return predictive


def _median(per_dataset: list[dict], name: str) -> float:
    return float(np.median([d[name] for d in per_dataset]))


def run(model_dir: Path, num_datasets: int) -> dict:
    config = json.loads((model_dir / "config.json").read_text())
    prior = amortize.prior_from_spec(config["prior"])
    model = amortize.load(model_dir)
    if not isinstance(prior, amortize.GPClassificationPrior) or not isinstance(
        model, amortize.PFNClassifier
    ):
        raise SystemExit(f"{model_dir} is not a classifier PFN; use benchmarks/pfn.py.")
    if model.num_classes != 2:
        raise SystemExit(f"{model_dir} has {model.num_classes} classes; this compares two.")
    rows = []
    key = jax.random.key(2468)  # held-out: training used keys derived from its own seed
    compiled: set[int] = set()
    for num_features in range(1, prior.num_features + 1):
        for num_train in TRAIN_SIZES:
            key, key_data, key_mcmc = jax.random.split(key, 3)
            keys = jax.random.split(key_data, num_datasets)
            x, y = jax.vmap(
                lambda k, n=num_train, d=num_features: prior.sample(k, n + NUM_TEST, d)
            )(keys)
            x, labels = np.asarray(x, np.float64), np.rint(np.asarray(y)).astype(int)
            # Inputs are always padded to the prior's full width: one program per train size.
            if num_train not in compiled:  # compile both outside the timings
                compiled.add(num_train)
                mcmc_probabilities(prior, x[0, :num_train], labels[0, :num_train],
                                   x[0, num_train:], key=key_mcmc)  # fmt: skip
                pfn_probabilities(model, x[0, :num_train], labels[0, :num_train],
                                  x[0, num_train:]).log_prob(labels[0, num_train:])  # fmt: skip
            per_dataset = []
            for index in range(num_datasets):
                x_train, x_test = x[index, :num_train], x[index, num_train:]
                train_labels, test_labels = labels[index, :num_train], labels[index, num_train:]
                start = time.perf_counter()
                predictive = pfn_probabilities(model, x_train, train_labels, x_test)
                pfn_nll = -float(np.mean(predictive.log_prob(test_labels)))
                pfn_seconds = time.perf_counter() - start
                start = time.perf_counter()
                reference, mixed = mcmc_probabilities(
                    prior, x_train, train_labels, x_test,
                    key=jax.random.fold_in(key_mcmc, index),
                )  # fmt: skip
                mcmc_seconds = time.perf_counter() - start
                pfn = predictive.probabilities
                per_dataset.append({
                    "pfn_nll": pfn_nll, "mcmc_nll": class_nll(reference, test_labels),
                    "abs_diff": float(np.mean(np.abs(pfn[:, 1] - reference[:, 1]))),
                    "agree": float(np.mean(pfn.argmax(1) == reference.argmax(1))),
                    "pfn_seconds": pfn_seconds, "mcmc_seconds": mcmc_seconds, "mixed": mixed,
                })  # fmt: skip
            kept = [d for d in per_dataset if d["mixed"]]
            if len(kept) < 2:
                raise SystemExit(
                    f"{num_features}-d, {num_train} points: {len(kept)} of {num_datasets} MCMC "
                    "runs mixed; too few to compare with. Raise MCMC_WARMUP."
                )
            gap = np.array([d["pfn_nll"] - d["mcmc_nll"] for d in kept])
            rows.append({
                "num_features": num_features,
                "num_train": num_train,
                "datasets": len(per_dataset),
                "not_mixed": len(per_dataset) - len(kept),
                "pfn_nll": float(np.mean([d["pfn_nll"] for d in kept])),
                # Over every dataset: unmixed ones are the hardest, do not hide the PFN there.
                "pfn_nll_all": float(np.mean([d["pfn_nll"] for d in per_dataset])),
                "mcmc_nll": float(np.mean([d["mcmc_nll"] for d in kept])),
                "gap": float(gap.mean()),
                "gap_se": _standard_error(gap),
                "abs_diff": float(np.mean([d["abs_diff"] for d in kept])),
                "agree": float(np.mean([d["agree"] for d in kept])),
                "pfn_seconds_per_dataset": _median(per_dataset, "pfn_seconds"),
                "mcmc_seconds_per_dataset": _median(per_dataset, "mcmc_seconds"),
                "per_dataset": per_dataset,
            })  # fmt: skip
            print(json.dumps({k: v for k, v in rows[-1].items() if k != "per_dataset"}), flush=True)
    gaps = np.array([r["gap"] for r in rows])
    result = _result(model_dir, config, num_datasets, rows)
    result.update(
        mean_gap=float(gaps.mean()),
        max_gap=float(gaps.max()),
        mcmc={
            "warmup": MCMC_WARMUP,
            "draws": MCMC_DRAWS,
            "chains": 4,
            "latent_samples": LATENT_SAMPLES,
        },  # fmt: skip
    )
    return result


def markdown(result: dict) -> str:
    lines = [
        "# Classifier PFN against the MCMC posterior predictive",
        "",
        f"Machine: `{json.dumps(result['machine'])}`",
        "",
        f"Model `{result['model']}`; prior `{json.dumps(result['prior'])}`; "
        f"{result['num_datasets']} held-out datasets per row, {NUM_TEST} test points each. "
        "MCMC: `nngp.sample_classifier` (NUTS, 4 chains x "
        f"({result['mcmc']['warmup']:,} warm-up + {result['mcmc']['draws']:,} draws), "
        "float64). NLL in nats per test point (the prior predictive scores 0.6931); "
        "abs dp: mean absolute difference of P(class 1); agree: share of test points where "
        "both pick the same class; MCMC runs whose chains did not mix are left out of the "
        "means (the PFN's NLL over all datasets is shown too); times are medians per "
        "dataset after compilation, through the public API for the PFN.",
        "",
        "| features | train points | MCMC | PFN | PFN - MCMC (± s.e.) | abs dp | agree | "
        "not mixed | PFN, all datasets | PFN ms | MCMC s | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        pfn_s, mcmc_s = r["pfn_seconds_per_dataset"], r["mcmc_seconds_per_dataset"]
        lines.append(
            f"| {r['num_features']} | {r['num_train']} | {r['mcmc_nll']:.4f} | "
            f"{r['pfn_nll']:.4f} | {r['gap']:+.4f} ± {r['gap_se']:.4f} | {r['abs_diff']:.4f} | "
            f"{r['agree']:.3f} | {r['not_mixed']} of {r['datasets']} | "
            f"{r['pfn_nll_all']:.4f} | {1e3 * pfn_s:.2f} | "
            f"{mcmc_s:.2f} | {mcmc_s / pfn_s:,.0f}x |"
        )
    lines += [
        "",
        f"Mean gap {result['mean_gap']:+.4f} nats per test point; "
        f"largest {result['max_gap']:+.4f}.",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    series = (("mcmc_nll", "MCMC"), ("pfn_nll", "PFN"))
    fig, panels = nll_panels(result, series, log_x=True)
    for ax, _ in panels.values():
        ax.axhline(np.log(2), color="grey", linestyle=":", label="prior predictive")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(amortize.pretrained_model("gp-classifier").folder))
    parser.add_argument("--datasets", type=int, default=40)
    parser.add_argument("--out", default="benchmarks/results/pfn_classifier")
    parser.add_argument(
        "--training-curve",
        help="the model's training_curve.json (default: the one in --model's folder, if any)",
    )
    args = parser.parse_args()
    if args.training_curve and not Path(args.training_curve).is_file():
        raise SystemExit(f"--training-curve {args.training_curve}: no such file")
    result = run(Path(args.model), args.datasets)
    out = Path(args.out)
    write_result(out, "pfn_classifier", result, markdown, plot)
    copy_training_curve(args.training_curve, Path(args.model), out)
    print(markdown(result))
    print(f"written to {_display_path(out)}")


if __name__ == "__main__":
    main()
