"""The GP-hyperparameter distribution transformer against importance sampling, NUTS and the PFN.

Run::

    PYTHONPATH=. .venv/bin/python benchmarks/dt_gp.py [--model DIR] [--examples 1000]
        [--datasets 30] [--out benchmarks/results/dt]

Writes ``dt_gp.md`` and ``dt_gp.json`` to ``--out``. The paper's task (Whittle et al.): a
Gaussian-mixture prior over a squared-exponential GP's ``theta = (log lengthscale, log
variance, log noise)`` plus ``n`` points of one GP draw, to a mixture posterior over
``theta``, whose draws give the posterior predictive of new points. No closed form exists:
the reference is importance sampling (:func:`probinfer.amortize.importance_posterior`,
16,384 draws from half the prior, half the transformer's posterior widened 1.5x;
consistent whatever the proposal, its effective sample size is reported). Three parts:

- **Accuracy**: held-out priors and data from the training meta-prior (a key the training
  never used): ``KL(reference || q)`` and the true latent's negative log density gap, in
  nats per latent dimension, by number of points.
- **The PFN's prior**: the shipped GP PFN's log-normal hyperprior (``GPHyperPrior``'s
  defaults, a one-component mixture over ``theta``), 1-d inputs, 2/5/10/20 train points
  and 10 test points: the predictive NLL per test point of the reference, the transformer
  (1,000 draws of its posterior, each a GP predictive), NUTS over the hyperparameters
  (``pi.sample``, 4 chains x 500 warm-up + 500 draws, the PFN benchmark's setting) and the
  PFN (``gp_hyper``); seconds per dataset through each one's public API, dataset by
  dataset in turn so that machine load hits all alike.
- **Priors the PFN cannot take**: a bimodal lengthscale prior, a noisier one, a tight
  short-lengthscale one: the transformer and NUTS (on the same mixture prior) against the
  reference; the PFN answers for its own prior, which shows what ignoring the given prior
  costs.
"""

from __future__ import annotations

import argparse
import json
import time
import warnings
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
from dt import _display_path, _se

import probinfer as pi
from probinfer import amortize
from probinfer.amortize.gp_hyperparameters import PROPOSAL_WIDENING, sample_gp_values, widened
from probinfer.bench import machine_description

EVALUATION_KEY = 20261205
NUM_TEST = 10
TRAIN_SIZES = (2, 5, 10, 20)
REFERENCE_DRAWS = 16_384
Q_DRAWS = 1_000
NUTS_CHAINS, NUTS_WARMUP, NUTS_DRAWS = 4, 500, 500

# The PFN's hyperprior: GPHyperPrior's defaults as (mean, std) of each log hyperparameter.
PFN_PRIOR = ((-1.0, 0.5), (0.0, 0.3), (-4.0, 1.0))


def _diagonal_prior(spec: tuple[tuple[float, float], ...]) -> amortize.GaussianMixture:
    means, sds = np.array([m for m, _ in spec]), np.array([s for _, s in spec])
    return amortize.gaussian_mixture([1.0], means[None], np.diag(sds**2)[None])


def _other_priors() -> dict[str, amortize.GaussianMixture]:
    """Priors unlike the PFN's, inside the transformer's trained ranges (covariances)."""
    short = np.diag([0.15, 0.3, 1.0]) ** 2
    sd = np.array([0.5, 0.3, 1.0])
    correlated = np.array([[1, 0.8, 0], [0.8, 1, 0], [0, 0, 1.0]]) * np.outer(sd, sd)
    return {
        "bimodal lengthscale (log l at -2 or 0)": amortize.gaussian_mixture(
            [0.5, 0.5], [[-2.0, 0.0, -4.0], [0.0, 0.0, -4.0]], np.stack([short, short])
        ),
        "noisier (log noise ~ N(-2, 0.5^2))": amortize.gaussian_mixture(
            [1.0], [[-1.0, 0.0, -2.0]], np.diag([0.5, 0.3, 0.5])[None] ** 2
        ),
        "short lengthscales (log l ~ N(-2, 0.15^2))": amortize.gaussian_mixture(
            [1.0], [[-2.0, 0.0, -4.0]], short[None]
        ),
        "the PFN's prior, correlated (rho(log l, log variance) = 0.8)": (
            amortize.gaussian_mixture([1.0], [[-1.0, 0.0, -4.0]], correlated[None])
        ),
    }


def accuracy(model_dir: Path, num_examples: int) -> dict:
    config = json.loads((model_dir / "config.json").read_text())
    task = amortize.task_from_spec(config["task"])
    model = amortize.load_dt(model_dir)
    evaluation = amortize.evaluate_dt(
        model, task, jax.random.key(EVALUATION_KEY), num_examples=num_examples,
        num_draws=REFERENCE_DRAWS,
    )  # fmt: skip
    dim = task.dim
    gap = np.asarray(evaluation.nll_q - evaluation.nll_exact) / dim
    kl = np.asarray(evaluation.kl) / dim
    ess = np.asarray(evaluation.reference_ess)
    count = np.asarray(evaluation.num_observations)
    most = task.max_observations
    groups = {
        "all": np.ones_like(count, bool),
        "0": count == 0,
        f"1-{most // 4}": (count >= 1) & (count <= most // 4),
        f"{most // 4 + 1}-{most // 2}": (count > most // 4) & (count <= most // 2),
        f"{most // 2 + 1}-{most}": count > most // 2,
    }
    rows = [
        {
            "group": label,
            "examples": int(cell.sum()),
            "kl": float(kl[cell].mean()),
            "kl_se": _se(kl[cell]),
            "kl_median": float(np.median(kl[cell])),
            "gap": float(gap[cell].mean()),
            "gap_se": _se(gap[cell]),
            "ess_min": float(ess[cell].min()),
            "ess_median": float(np.median(ess[cell])),
        }  # fmt: skip
        for label, cell in groups.items()
        if cell.sum() >= 2
    ]
    return {"task": config["task"], "training": config["training"], "rows": rows}


def _mixture_model(x_train, y_train, log_weights, means, scale_tril):
    """NUTS's target: ``theta`` from the mixture prior, the GP marginal likelihood."""
    import numpyro
    import numpyro.distributions as dist

    mixing = dist.Categorical(logits=log_weights)
    components = dist.MultivariateNormal(means, scale_tril=scale_tril)
    theta = numpyro.sample("theta", dist.MixtureSameFamily(mixing, components))
    data = amortize.GPRegressionData(x_train, y_train)
    numpyro.factor("gp", amortize.gp_log_likelihood(theta, data))


@jax.jit
def _predictive_nll(draws, x_train, y_train, x_test, y_test, log_weights=None):
    data = amortize.GPRegressionData(x_train, y_train)
    return -jnp.mean(amortize.gp_predictive_log_density(draws, data, x_test, y_test, log_weights))


@jax.jit
def _reference(key, prior, q, x_train, y_train):
    data = amortize.GPRegressionData(x_train, y_train)
    return amortize.importance_posterior(key, prior, data, widened(q), num_draws=REFERENCE_DRAWS)


@jax.jit
def _kl(reference, q):
    return reference.kl_to(q)[0]


def _draw_dataset(key, prior: amortize.GaussianMixture, num_points: int):
    key_theta, key_x, key_y = jax.random.split(key, 3)
    theta = prior.sample(key_theta)
    x = jax.random.uniform(key_x, (num_points, 1), minval=-1.0, maxval=1.0)
    return np.asarray(x), np.asarray(sample_gp_values(key_y, theta, x))


def _dt_nll(model, prior, x, y, num_train, key):
    """The transformer through the public API: posterior, draws, their GP predictive."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # measured here on purpose, warned or not
        data = amortize.gp_regression_data(x[:num_train], y[:num_train])
        q = amortize.posterior(model, prior, data)
    draws = q.sample(key, (Q_DRAWS,))
    nll = float(_predictive_nll(draws, x[:num_train], y[:num_train], x[num_train:], y[num_train:]))
    return nll, q


def _nuts_nll(prior, x, y, num_train, seed):
    idata = pi.sample(
        _mixture_model, jnp.asarray(x[:num_train]), jnp.asarray(y[:num_train]),
        prior.log_weights, prior.means, prior.scale_tril,
        chains=NUTS_CHAINS, warmup=NUTS_WARMUP, draws=NUTS_DRAWS, seed=seed, progress=False,
    )  # fmt: skip
    draws = jnp.asarray(idata.posterior["theta"].values.reshape(-1, 3))
    nll = float(_predictive_nll(draws, x[:num_train], y[:num_train], x[num_train:], y[num_train:]))
    divergences = int(idata.sample_stats["diverging"].values.sum())
    return nll, divergences


def _pfn_nll(pfn, x, y, num_train):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        predictive = amortize.predict(pfn, x[:num_train], y[:num_train], x[num_train:])
        return -float(np.mean(np.asarray(predictive.log_prob(y[num_train:]), np.float64)))


def compare(model_dir: Path, prior: amortize.GaussianMixture, num_datasets: int, seed: int,
            *, with_timing: bool) -> list[dict]:  # fmt: skip
    """Per train-set size: reference, transformer, NUTS and PFN predictive NLLs and times."""
    model = amortize.load_dt(model_dir)
    pfn = amortize.load(amortize.PRETRAINED_GP_HYPER)
    rows = []
    key = jax.random.key(seed)
    for num_train in TRAIN_SIZES:
        key, key_data = jax.random.split(key)
        data_keys = jax.random.split(key_data, num_datasets)
        values: dict[str, list[float]] = {name: [] for name in (
            "reference", "dt", "nuts", "pfn", "kl", "ess", "dt_s", "nuts_s", "pfn_s",
            "divergences")}  # fmt: skip
        # Compile each path once before timing.
        x, y = _draw_dataset(data_keys[0], prior, num_train + NUM_TEST)
        _dt_nll(model, prior, x, y, num_train, jax.random.key(0))
        _nuts_nll(prior, x, y, num_train, 0)
        _pfn_nll(pfn, x, y, num_train)
        for i in range(num_datasets):
            x, y = _draw_dataset(data_keys[i], prior, num_train + NUM_TEST)
            key_q, key_reference = jax.random.split(jax.random.fold_in(key_data, i))
            start = time.perf_counter()
            dt_value, q = _dt_nll(model, prior, x, y, num_train, key_q)
            values["dt_s"].append(time.perf_counter() - start)
            reference = _reference(key_reference, prior, q, x[:num_train], y[:num_train])
            reference_value = float(_predictive_nll(
                reference.draws, x[:num_train], y[:num_train], x[num_train:], y[num_train:],
                reference.log_weights,
            ))  # fmt: skip
            kl_value, ess_value = float(_kl(reference, q)) / 3, float(reference.ess)
            start = time.perf_counter()
            nuts_value, divergences = _nuts_nll(prior, x, y, num_train, i + 1)
            values["nuts_s"].append(time.perf_counter() - start)
            start = time.perf_counter()
            pfn_value = _pfn_nll(pfn, x, y, num_train)
            values["pfn_s"].append(time.perf_counter() - start)
            for name, value in (("reference", reference_value), ("dt", dt_value),
                                ("nuts", nuts_value), ("pfn", pfn_value),
                                ("kl", kl_value), ("ess", ess_value),
                                ("divergences", divergences)):  # fmt: skip
                values[name].append(value)
        arrays = {name: np.asarray(v, np.float64) for name, v in values.items()}
        row = {
            "num_train": num_train,
            "datasets": num_datasets,
            "reference_nll": float(arrays["reference"].mean()),
            "kl_per_dim": float(arrays["kl"].mean()),
            "kl_se": _se(arrays["kl"]),
            "ess_min": float(arrays["ess"].min()),
            "nuts_divergences": int(arrays["divergences"].sum()),
        }
        for name in ("dt", "nuts", "pfn"):
            gap = arrays[name] - arrays["reference"]
            row[f"{name}_gap"] = float(gap.mean())
            row[f"{name}_gap_se"] = _se(gap)
        if with_timing:
            for name in ("dt", "nuts", "pfn"):
                row[f"{name}_seconds"] = float(np.median(arrays[f"{name}_s"]))
            row["dt_speedup_over_nuts"] = row["nuts_seconds"] / row["dt_seconds"]
        rows.append(row)
        print(json.dumps(row), flush=True)
    return rows


def markdown(result: dict) -> str:
    lines = [
        "# Distribution transformer over a GP's hyperparameters (the paper's task)",
        "",
        f"Machine: `{json.dumps(result['machine'])}`",
        "",
        f"Model `{result['model']}`; task `{json.dumps(result['accuracy']['task'])}`.",
        "",
        "Reference: importance sampling, "
        f"{REFERENCE_DRAWS:,} draws from half the prior and half the transformer posterior "
        f"widened {PROPOSAL_WIDENING}x (consistent whatever the proposal; its effective "
        "sample size, ESS, is shown). Nats per latent dimension for the latent, per test "
        "point for the predictive.",
        "",
        "## Accuracy on held-out priors and data of the training meta-prior",
        "",
        "| points | examples | KL(reference ‖ q) (± s.e.) | median KL | NLL gap of the true "
        "latent (± s.e.) | reference ESS min / median |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["accuracy"]["rows"]:
        lines.append(
            f"| {r['group']} | {r['examples']} | {r['kl']:.4f} ± {r['kl_se']:.4f} | "
            f"{r['kl_median']:.4f} | {r['gap']:+.4f} ± {r['gap_se']:.4f} | "
            f"{r['ess_min']:.0f} / {r['ess_median']:.0f} |"
        )
    lines += [
        "",
        "## On the PFN's own prior: transformer, NUTS and PFN against the reference",
        "",
        f"Log-normal hyperprior {PFN_PRIOR} ((mean, sd) of log lengthscale, log variance, "
        f"log noise), 1-d inputs on [-1, 1], {NUM_TEST} test points, "
        f"{result['num_datasets']} datasets per row. Transformer: `posterior` + "
        f"{Q_DRAWS:,} draws + their GP predictive; NUTS: `pi.sample`, {NUTS_CHAINS} chains x "
        f"{NUTS_WARMUP} warm-up + {NUTS_DRAWS} draws + the same predictive; PFN: `predict` + "
        "`log_prob`. Gaps: predictive NLL minus the reference's, per test point (± s.e. over "
        "datasets); seconds: median per dataset, warm, in turn dataset by dataset.",
        "",
        "| train points | reference NLL | transformer gap | NUTS gap | PFN gap | latent KL "
        "per dim | transformer s | NUTS s | PFN s | transformer vs NUTS | ESS min | NUTS "
        "divergences |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["pfn_prior"]:
        lines.append(
            f"| {r['num_train']} | {r['reference_nll']:.4f} | {r['dt_gap']:+.4f} ± "
            f"{r['dt_gap_se']:.4f} | {r['nuts_gap']:+.4f} ± {r['nuts_gap_se']:.4f} | "
            f"{r['pfn_gap']:+.4f} ± {r['pfn_gap_se']:.4f} | {r['kl_per_dim']:.4f} ± "
            f"{r['kl_se']:.4f} | {r['dt_seconds'] * 1e3:.1f} ms | {r['nuts_seconds']:.2f} | "
            f"{r['pfn_seconds'] * 1e3:.1f} ms | {r['dt_speedup_over_nuts']:.0f}x | "
            f"{r['ess_min']:.0f} | {r['nuts_divergences']} |"
        )
    lines += [
        "",
        "## Priors the PFN cannot take",
        "",
        "The transformer and NUTS are given the prior; the PFN answers for its own "
        "(log-normal) prior, which is what ignoring the given prior costs.",
        "",
        "| prior | train points | reference NLL | transformer gap | NUTS gap | PFN gap | "
        "latent KL per dim | ESS min |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, rows in result["other_priors"].items():
        for r in rows:
            lines.append(
                f"| {name} | {r['num_train']} | {r['reference_nll']:.4f} | {r['dt_gap']:+.4f} "
                f"± {r['dt_gap_se']:.4f} | {r['nuts_gap']:+.4f} ± {r['nuts_gap_se']:.4f} | "
                f"{r['pfn_gap']:+.4f} ± {r['pfn_gap_se']:.4f} | {r['kl_per_dim']:.4f} ± "
                f"{r['kl_se']:.4f} | {r['ess_min']:.0f} |"
            )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(amortize.PRETRAINED_DT_GP))
    parser.add_argument("--examples", type=int, default=500)
    parser.add_argument("--datasets", type=int, default=30)
    parser.add_argument("--other-datasets", type=int, default=15)
    parser.add_argument("--out", default="benchmarks/results/dt")
    arguments = parser.parse_args()
    model_dir = Path(arguments.model)
    result = {
        "machine": machine_description(),
        "model": _display_path(model_dir),
        "num_datasets": arguments.datasets,
        "accuracy": accuracy(model_dir, arguments.examples),
    }
    print(json.dumps(result["accuracy"]["rows"], indent=1), flush=True)
    result["pfn_prior"] = compare(
        model_dir, _diagonal_prior(PFN_PRIOR), arguments.datasets, 1, with_timing=True
    )
    result["other_priors"] = {
        name: compare(model_dir, prior, arguments.other_datasets, 2 + i, with_timing=False)
        for i, (name, prior) in enumerate(_other_priors().items())
    }
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "dt_gp.json").write_text(json.dumps(result, indent=1) + "\n")
    (out / "dt_gp.md").write_text(markdown(result))
    print(markdown(result))


if __name__ == "__main__":
    main()
