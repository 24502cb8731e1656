"""A trained PFN against the exact GP posterior predictive it approximates.

Run::

    .venv/bin/python benchmarks/pfn.py [--model DIR] [--datasets 200]
        [--out benchmarks/results]

Writes ``pfn.md``, ``pfn.json`` and ``pfn.png`` to ``--out``.

Held-out datasets are drawn from the prior the model was trained on (a GP with fixed
hyperparameters; its spec is read from the model's ``config.json``), for 1, 2 and 3 input
features and several numbers of train points, each with 10 test points. For each dataset:

- **exact GP**: the posterior predictive with the true hyperparameters (the best possible
  NLL, :class:`probinfer.nngp.ScaleMixtureProcess` in float64);
- **PFN**: one forward pass (:func:`probinfer.amortize.predict`);
- **MLE-II GP**: RBF lengthscale, variance and noise fitted per dataset by maximising the
  marginal likelihood (Adam on log parameters, 300 steps, vmapped over datasets), the
  practical alternative when the hyperparameters are unknown.

Reported: test negative log predictive density per point (nats), the PFN's gap to the exact
GP with its standard error over datasets, and the time per dataset of the PFN and the exact
GP (batched, after compilation).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import optax

from probinfer import amortize, nngp
from probinfer.bench import machine_description

NUM_TEST = 10
TRAIN_SIZES = (2, 5, 10, 20, 30, 50)


def _standard_error(values) -> float:
    """Standard error of the mean over datasets."""
    values = np.asarray(values, np.float64)
    return float(values.std(ddof=1) / np.sqrt(values.size))


def draw_datasets(prior, key, num_datasets, num_points, num_features):
    keys = jax.random.split(key, num_datasets)
    return jax.vmap(lambda k: prior.sample(k, num_points, num_features))(keys)


def exact_nll(prior, x, y, num_train):
    with jax.enable_x64(True):
        x64, y64 = np.asarray(x, np.float64), np.asarray(y, np.float64)
        process = nngp.ScaleMixtureProcess(
            nngp.rbf(float(prior.kernel.lengthscale), float(prior.kernel.variance)),
            None,
            float(prior.noise),
            jitter=1e-6,
        )

        def one(xi, yi):
            posterior = process.condition(xi[:num_train], yi[:num_train])
            predictive = posterior.predict(xi[num_train:])
            return -jnp.mean(predictive.log_prob(yi[num_train:]))

        values = [float(one(xi, yi)) for xi, yi in zip(x64, y64, strict=True)]
    return np.asarray(values)


def mle_nll(x, y, num_train, steps=300):
    """Per-dataset ML-II of RBF lengthscale, variance and noise (vmapped Adam)."""
    with jax.enable_x64(True):
        x64, y64 = jnp.asarray(x, jnp.float64), jnp.asarray(y, jnp.float64)
        optimizer = optax.adam(0.05)

        def build(params):
            lengthscale, variance, noise = jnp.exp(params)
            return nngp.ScaleMixtureProcess(
                nngp.rbf(lengthscale, variance), None, noise + 1e-4, jitter=1e-6
            )

        def fit_and_score(xi, yi):
            def loss(params):
                return -build(params).log_marginal_likelihood(xi[:num_train], yi[:num_train])

            def step(carry, _):
                params, state = carry
                grads = jax.grad(loss)(params)
                updates, state = optimizer.update(grads, state)
                return (optax.apply_updates(params, updates), state), None

            params = jnp.log(jnp.array([0.5, 1.0, 0.05]))
            (params, _), _ = jax.lax.scan(step, (params, optimizer.init(params)), None, steps)
            predictive = (
                build(params).condition(xi[:num_train], yi[:num_train]).predict(xi[num_train:])
            )
            return -jnp.mean(predictive.log_prob(yi[num_train:]))

        return np.asarray(jax.jit(jax.vmap(fit_and_score))(x64, y64))


HYPER_TRAIN_SIZES = (10, 30)
HYPER_FEATURES = (1, 2, 3)


def _draw_predictives(x_train, y_train, x_test, lengthscale, variance, noise):
    """``(draws, m)`` means and standard deviations of the GP predictive at each draw."""

    def one(ls, var, nz):
        process = nngp.ScaleMixtureProcess(nngp.rbf(ls, var), None, nz + 1e-6, jitter=0.0)
        predictive = process.condition(x_train, y_train).predict(x_test)
        return predictive.mean, jnp.sqrt(predictive.variance)

    return jax.vmap(one)(lengthscale, variance, noise)


@jax.jit
def _mixture_log_density(x_train, y_train, x_test, y_test, lengthscale, variance, noise):
    """``log mean_draws N(y_test; GP predictive at the draw's hyperparameters)``."""
    from jax.scipy.special import logsumexp
    from jax.scipy.stats import norm

    mean, std = _draw_predictives(x_train, y_train, x_test, lengthscale, variance, noise)
    log_p = norm.logpdf(y_test, mean, std)
    return logsumexp(log_p, axis=0) - jnp.log(log_p.shape[0])


@jax.jit
def _mixture_bar_log_densities(
    x_train, y_train, x_test, y_test, lengthscale, variance, noise, bars
):
    """The same mixture projected onto each bar's buckets: the best its histogram can do."""
    from jax.scipy.special import ndtr

    mean, std = _draw_predictives(x_train, y_train, x_test, lengthscale, variance, noise)

    def projected(bar):
        inner = bar.borders[1:-1]
        cdf = jnp.mean(ndtr((inner[None, None, :] - mean[..., None]) / std[..., None]), axis=0)
        zeros, ones = (
            jnp.zeros((cdf.shape[0], 1), cdf.dtype),
            jnp.ones((cdf.shape[0], 1), cdf.dtype),
        )
        mass = jnp.diff(jnp.concatenate([zeros, cdf, ones], axis=1), axis=1)
        return bar.log_prob(jnp.log(jnp.maximum(mass, 1e-300)), y_test)

    return [projected(bar) for bar in bars]


def gp_hyper_model(x_train, y_train, hyperprior):
    """The GP-with-hyperpriors regression model, for NUTS (module level: compiled once)."""
    import numpyro
    import numpyro.distributions as dist

    lengthscale = numpyro.sample("lengthscale", dist.LogNormal(*hyperprior[0]))
    variance = numpyro.sample("variance", dist.LogNormal(*hyperprior[1]))
    noise = numpyro.sample("noise", dist.LogNormal(*hyperprior[2]))
    kernel = nngp.rbf(lengthscale, variance)
    numpyro.sample(
        "y", nngp.gaussian_process(kernel, x_train, noise=noise, jitter=1e-6), obs=y_train
    )


def nuts_nll(prior, x, y, num_train, seed):
    """Posterior predictive NLL with NUTS over the GP hyperparameters (``pi.sample``).

    Returns the NLL of the mixture over draws and a function giving the NLLs of that mixture
    projected onto the buckets of each of some bar distributions (not part of NUTS's time).
    """
    import probinfer as pi

    hyperprior = jnp.asarray([prior.log_lengthscale, prior.log_variance, prior.log_noise])
    x_train, y_train = x[:num_train], y[:num_train]
    idata = pi.sample(
        gp_hyper_model, x_train, y_train, hyperprior, chains=2, warmup=500, draws=500,
        seed=seed, progress=False,
    )  # fmt: skip
    draws = {k: jnp.asarray(idata.posterior[k].values.reshape(-1)) for k in
             ("lengthscale", "variance", "noise")}  # fmt: skip

    args = (x_train, y_train, x[num_train:], y[num_train:],
            draws["lengthscale"], draws["variance"], draws["noise"])  # fmt: skip

    def projected_nll(*bars: amortize.BarDistribution) -> list[float]:
        with jax.enable_x64(True):  # small bucket masses are CDF differences
            args64 = [jnp.asarray(a, jnp.float64) for a in args]
            return [-float(jnp.mean(v)) for v in _mixture_bar_log_densities(*args64, bars)]

    return -float(jnp.mean(_mixture_log_density(*args))), projected_nll


def run_hyper(model_dir: Path, num_datasets: int) -> dict:
    """The hyperprior PFN against NUTS over the hyperparameters, on 1- to 3-d datasets."""
    config = json.loads((model_dir / "config.json").read_text())
    prior = amortize.prior_from_spec(config["prior"])
    model = amortize.load(model_dir)
    single = jax.jit(lambda a, b, c: model(a, b, c))
    # The same borders thinned to every fourth: what a 4x coarser histogram would cost.
    coarse = amortize.BarDistribution(np.asarray(model.bar.borders)[::4])
    rows = []
    for num_features in HYPER_FEATURES:
        if num_features > model.num_features:
            continue
        key = jax.random.key(2023 + num_features)  # 1-d: the datasets of earlier reports
        for num_train in HYPER_TRAIN_SIZES:
            key, key_data = jax.random.split(key)
            x, y = draw_datasets(prior, key_data, num_datasets, num_train + NUM_TEST, num_features)
            x, y = np.asarray(x), np.asarray(y)
            nuts_nll(prior, x[0], y[0], num_train, 0)  # compile, off the clock
            pfn_values, nuts_values, pfn_times, nuts_times = [], [], [], []
            floor_values, coarse_values = [], []
            for i in range(num_datasets):
                args = (jnp.asarray(x[i, :num_train]), jnp.asarray(y[i, :num_train]),
                        jnp.asarray(x[i, num_train:]))  # fmt: skip
                jax.block_until_ready(single(*args))
                start = time.perf_counter()
                logits = jax.block_until_ready(single(*args))
                pfn_times.append(time.perf_counter() - start)
                pfn_values.append(-float(jnp.mean(model.bar.log_prob(logits, y[i, num_train:]))))
                start = time.perf_counter()
                nuts, projected_nll = nuts_nll(prior, x[i], y[i], num_train, i + 1)
                nuts_times.append(time.perf_counter() - start)
                nuts_values.append(nuts)
                projected, projected_coarse = projected_nll(model.bar, coarse)
                floor_values.append(projected - nuts)
                coarse_values.append(projected_coarse - nuts)
            gap = np.array(pfn_values) - np.array(nuts_values)
            rows.append(
                {
                    "num_features": num_features,
                    "num_train": num_train,
                    "pfn_nll": float(np.mean(pfn_values)),
                    "nuts_nll": float(np.mean(nuts_values)),
                    "gap": float(gap.mean()),
                    "gap_se": _standard_error(gap),
                    "bucket_floor": float(np.mean(floor_values)),
                    "bucket_floor_se": _standard_error(floor_values),
                    "coarse_floor": float(np.mean(coarse_values)),
                    "coarse_floor_se": _standard_error(coarse_values),
                    "coarse_buckets": coarse.num_buckets,
                    "pfn_seconds_per_dataset": float(np.median(pfn_times)),
                    "nuts_seconds_per_dataset": float(np.median(nuts_times)),
                    "speedup": float(np.median(nuts_times) / np.median(pfn_times)),
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    return _result(model_dir, config, num_datasets, rows)


def markdown_hyper(result: dict) -> str:
    lines = [
        "# PFN (GP with hyperpriors) against NUTS over the hyperparameters",
        "",
        f"Machine: `{json.dumps(result['machine'])}`",
        "",
        f"Model `{result['model']}` ({result['training']['num_buckets']} buckets); prior "
        f"`{json.dumps(result['prior'])}`; {result['num_datasets']} held-out datasets per row, "
        f"{NUM_TEST} test points; NUTS: `pi.sample`, 2 chains x 500 warm-up + 500 draws, "
        "predictive = mixture over draws. *Bucket floor*: the NLL the PFN's histogram would "
        "add if its bucket masses were exactly the NUTS predictive's (its least possible gap); "
        "*coarse floor*: the same with every fourth border only "
        f"({result['rows'][0]['coarse_buckets']} buckets).",
        "",
        "| features | train points | NUTS | PFN | PFN - NUTS (± s.e.) | bucket floor "
        "| coarse floor | NUTS s/dataset | PFN s/dataset | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['num_features']} | {r['num_train']} | {r['nuts_nll']:.4f} | "
            f"{r['pfn_nll']:.4f} | {r['gap']:+.4f} ± {r['gap_se']:.4f} | "
            f"{r['bucket_floor']:+.4f} ± {r['bucket_floor_se']:.4f} | "
            f"{r['coarse_floor']:+.4f} ± {r['coarse_floor_se']:.4f} | "
            f"{r['nuts_seconds_per_dataset']:.2f} | "
            f"{r['pfn_seconds_per_dataset'] * 1e3:.2f} ms | {r['speedup']:.0f}x |"
        )
    return "\n".join(lines) + "\n"


def _result(model_dir: Path, config: dict, num_datasets: int, rows: list[dict]) -> dict:
    """The fields every PFN benchmark result carries."""
    return {
        "machine": machine_description(),
        "model": _display_path(model_dir),
        "prior": config["prior"],
        "training": config["training"],
        "num_datasets": num_datasets,
        "rows": rows,
    }


def _display_path(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def run(model_dir: Path, num_datasets: int) -> dict:
    config = json.loads((model_dir / "config.json").read_text())
    prior = amortize.prior_from_spec(config["prior"])
    model = amortize.load(model_dir)
    rows = []
    key = jax.random.key(12345)  # held-out: training used keys derived from its own seed
    for num_features in range(1, prior.num_features + 1):
        for num_train in TRAIN_SIZES:
            if num_train > model.max_train:
                continue
            key, key_data = jax.random.split(key)
            x, y = draw_datasets(prior, key_data, num_datasets, num_train + NUM_TEST, num_features)
            x_np, y_np = np.asarray(x), np.asarray(y)

            def pfn_batch(x=x, y=y, num_train=num_train):
                logits = jax.vmap(model)(x[:, :num_train], y[:, :num_train], x[:, num_train:])
                return model.bar.log_prob(logits, y[:, num_train:])

            jax.block_until_ready(jax.jit(pfn_batch)())
            start = time.perf_counter()
            log_prob = jax.block_until_ready(jax.jit(pfn_batch)())
            pfn_seconds = (time.perf_counter() - start) / num_datasets
            pfn = -np.asarray(log_prob, np.float64).mean(axis=1)
            start = time.perf_counter()
            exact = exact_nll(prior, x_np, y_np, num_train)
            exact_seconds = (time.perf_counter() - start) / num_datasets
            mle = mle_nll(x_np, y_np, num_train)
            gap = pfn - exact
            rows.append(
                {
                    "num_features": num_features,
                    "num_train": num_train,
                    "pfn_nll": float(pfn.mean()),
                    "exact_nll": float(exact.mean()),
                    "mle_nll": float(np.mean(mle)),
                    "gap": float(gap.mean()),
                    "gap_se": _standard_error(gap),
                    "pfn_seconds_per_dataset": pfn_seconds,
                    "exact_seconds_per_dataset": exact_seconds,
                }
            )
            print(json.dumps(rows[-1]), flush=True)
    all_gaps = np.array([r["gap"] for r in rows])
    result = _result(model_dir, config, num_datasets, rows)
    result.update(mean_gap=float(all_gaps.mean()), max_gap=float(all_gaps.max()))
    return result


def markdown(result: dict) -> str:
    lines = [
        "# PFN against the exact GP predictive",
        "",
        f"Machine: `{json.dumps(result['machine'])}`",
        "",
        f"Model `{result['model']}`; prior `{json.dumps(result['prior'])}`; "
        f"{result['num_datasets']} held-out datasets per row, {NUM_TEST} test points each.",
        "",
        "| features | train points | exact GP | PFN | MLE-II GP | PFN - exact (± s.e.) |",
        "|---|---|---|---|---|---|",
    ]
    for r in result["rows"]:
        lines.append(
            f"| {r['num_features']} | {r['num_train']} | {r['exact_nll']:.4f} | "
            f"{r['pfn_nll']:.4f} | {r['mle_nll']:.4f} | {r['gap']:+.4f} ± {r['gap_se']:.4f} |"
        )
    lines += [
        "",
        f"Mean gap {result['mean_gap']:+.4f} nats per test point; "
        f"largest {result['max_gap']:+.4f}.",
        "",
    ]
    return "\n".join(lines)


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    features = sorted({r["num_features"] for r in result["rows"]})
    fig, axes = plt.subplots(1, len(features), figsize=(4.5 * len(features), 3.8), squeeze=False)
    for ax, d in zip(axes[0], features, strict=True):
        rows = [r for r in result["rows"] if r["num_features"] == d]
        n = [r["num_train"] for r in rows]
        for key, label in (("exact_nll", "exact GP"), ("pfn_nll", "PFN"), ("mle_nll", "MLE-II")):
            ax.plot(n, [r[key] for r in rows], marker="o", label=label)
        # MLE-II overfits two or five points badly; keep the PFN and exact curves readable.
        values = [r[k] for r in rows for k in ("exact_nll", "pfn_nll")]
        ax.set_ylim(min(values) - 0.2, max(values) + 0.6)
        ax.set_xlabel("train points")
        ax.set_ylabel("test NLL per point (nats)")
        ax.set_title(f"{d}-d inputs")
        ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", default=str(amortize.PRETRAINED_GP))
    parser.add_argument("--datasets", type=int, default=200)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument(
        "--hyper-model", help="a GP-hyperprior PFN: compare it with NUTS (writes pfn_hyper.*)"
    )
    args = parser.parse_args()
    if args.hyper_model:
        result = run_hyper(Path(args.hyper_model), args.datasets)
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        (out / "pfn_hyper.json").write_text(json.dumps(result, indent=2))
        (out / "pfn_hyper.md").write_text(markdown_hyper(result))
        print(markdown_hyper(result))
        return
    result = run(Path(args.model), args.datasets)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "pfn.json").write_text(json.dumps(result, indent=2))
    (out / "pfn.md").write_text(markdown(result))
    plot(result, out / "pfn.png")
    print(markdown(result))


if __name__ == "__main__":
    main()
