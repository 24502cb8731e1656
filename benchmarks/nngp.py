"""NNGP scale mixtures: robustness experiments, kernel speed and memory.

Run::

    .venv/bin/python benchmarks/nngp.py \
        [--sections regression,classification,classifier_defaults,speed,memory] \
        [--splits 5] \
        [--out benchmarks/results]

The default sections are shown; ``large``, ``ml2_subsets`` and ``ml2_large`` run only when
named.

Writes ``nngp.md``, ``nngp.json`` and ``nngp.png`` to ``--out``.

**Regression** (after Lee et al., 2022, section 5.1). Two data sets: scikit-learn's
bundled diabetes data (442 x 10) and a synthetic set (400 x 4, ``y = sin(x0) + x1 x2 / 2``
plus Student-t noise with 2 degrees of freedom and scale 0.3). Two kinds of split, each
repeated ``--splits`` times with different seeds: *random* (80% train / 20% test) and
*shifted* (out of distribution: a random unit direction ``u`` per split; the 20% of points
with the largest ``x . u`` are the test set). Inputs and targets are standardised with the
training statistics. Three processes, each with its MLP-kernel variances, noise and prior
parameters either fitted by marginal likelihood per split (``ml-ii``:
:func:`probinfer.nngp.fit_hyperparameters`, depths 1-3, 300 Adam steps) or fixed
(``fixed``: depth 2, variances 2 and 0.1, noise 0.1, InvGamma(2, 2), BurrXII(2, 1, 1)):
the NNGP (plain GP), the Student-t process (inverse-gamma scale prior) and a Burr XII
scale prior (predictive by quadrature over ``s``). Reported:
test negative log predictive density per point (standardised units), mean and standard
error over splits.

**Classification** (section 5.2). scikit-learn's digits (1,797 8x8 images, 10 classes;
pixels / 16): 1,000 training images, the other 797 as the clean test set, and the same test
images corrupted (each pixel replaced with probability 0.3 by a uniform random intensity).
Latent processes with an MLP kernel (depth 2, weight variance 2, bias variance 0.1) and a
softmax likelihood: NNGP with ``s = 1``, Student-t (``s ~ InvGamma(2, 2)``) and Burr XII
(``c = 2``, ``k = 1``). Two inference methods: MCMC (``sample_classifier`` with
``method="gibbs"``, elliptical slice on the latents and two slice moves on ``log s``; joint
NUTS takes about 255 gradient steps per kept iteration on these 10,000 latents, 44 minutes
at its defaults here: ``benchmarks/nngp_digits_defaults.py``; 4 chains x (``MCMC_WARMUP``
warm-up + ``MCMC_DRAWS`` kept, thinned by ``MCMC_THIN``), started near the joint mode) and the
variational classifier (``fit_variational_classifier``: ``VI_INDUCING`` inducing points,
quadrature on ``log s`` over ``VI_LOG_SCALE_GRID``, ``VI_STEPS`` natural-gradient steps; one
grid fit serves both scale priors through ``reweighted``). Reported: accuracy and NLL per
image, the posterior mean and sd of ``log s``, R-hat of ``log s`` (MCMC) and wall time.

**Classifier defaults**. ``sample_classifier`` at its defaults (4 chains, 1,000 warm-up +
1,000 draws) with ``method="nuts"`` (the default) and ``method="gibbs"``, on scikit-learn's
breast cancer data (350 of the 569 points, standardised features; MLP kernel depth 2,
weight variance 2, bias variance 0.1) with ``s ~ InvGamma(2, 2)`` and ``BurrXII(2, 1, 1)``,
two seeds each. Reported: rank-normalised split R-hat and bulk ESS of ``log s`` and the
worst over the latent values ``f``, and wall time (compilation included).

**Speed**. The depth-3 ReLU NNGP kernel on n = 4,000 random 10-d inputs, and exact GP
posterior prediction with 4,000 training and 1,000 test points (kernel matrices, Cholesky
factorisation, predictive mean and variance). Yardstick: the same recursion and algebra in
plain NumPy/SciPy (float64, and float32 for reference), run side by side. Best of 3 timed
calls after one untimed call (compilation excluded and reported separately).

**Memory**. Peak resident memory of a fresh process computing the n = 10,000 kernel
(float32, default row blocks), against the size of the output matrix.

**Large** (beyond one dense Cholesky). scikit-learn's Friedman #1 generator (10 inputs, 5
of them used, noise sd 1; 50,000 training and 1,000 test points, standardised with the
training statistics), a depth-2 ReLU kernel (variances 2 and 0.1), noise 0.05 and
``s ~ InvGamma(2, 2)``, float32. *Accuracy*: on the first 2,000 and 8,000 training points,
the test log density per point of ``condition`` (exact, float32), ``condition_inducing``
with ``solver="fitc"`` and ``"cg"`` at 500-2,000 inducing points, and ``"cg"`` with
``predict(variance="cg")``, each against the exact float64 predictive (mean and standard
error of the paired differences), and the log marginal likelihood against the exact one.
*Scale*: all 50,000 points, each run in a fresh process
(time, CG iterations, test NLL, log marginal likelihood with its SLQ standard error, peak
RSS); with 2,000 inducing points, the exact predictive (variances by CG) on the first
``LARGE_VARIANCE_POINTS`` test points against the FITC-variance one. Not run by default
(about 20 minutes): pass ``--sections large``.

**ML-II on subsets** (``--sections ml2_subsets``, not run by default): the MLP kernel's
variances, the noise and the inverse-gamma prior fitted by
``fit_hyperparameters(max_points=m)`` on random subsets of 500-2,000 of the first 8,000
points of the large set, each fitted process conditioned on all 8,000 (exact, float32):
test NLL against the fixed hyperparameters.

**ML-II then the large predictive** (``--sections ml2_large``, not run by default): the
same fit on 1,000 random points of all 50,000, then the ``large`` section's CG run (2,000
inducing points) on all of them with the fitted process, in a fresh process (float32;
float64 only if float32 fails with the error that names it); that process and solver on
the first ``ML2_CHECK`` points against the exact float64 posterior (test NLL and log
marginal likelihood; the fitted noise is smaller and the bias variance larger, so the
solve is harder); FITC alone on all points for comparison; CG's warnings.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

from probinfer import nngp
from probinfer.bench import machine_description

REGRESSION_MODELS = {"NNGP": None, "Student-t": "inverse_gamma", "Burr XII": "burr_xii"}
_FIXED_KERNEL = nngp.mlp(2, weight_variance=2.0, bias_variance=0.1)
FIXED_PROCESSES = {
    "NNGP": nngp.ScaleMixtureProcess(_FIXED_KERNEL, None, noise=0.1),
    "Student-t": nngp.ScaleMixtureProcess(_FIXED_KERNEL, nngp.inverse_gamma(2.0, 2.0), noise=0.1),
    "Burr XII": nngp.ScaleMixtureProcess(_FIXED_KERNEL, nngp.burr_xii(2.0, 1.0, 1.0), noise=0.1),
}
# Digits: MCMC iterations per chain (4 chains) and the variational fit (inducing points at
# every training image, so it differs from the MCMC only by the Gaussian family).
MCMC_WARMUP = 4000
MCMC_DRAWS = 12000
MCMC_THIN = 30
VI_INDUCING = 1000
VI_STEPS = 60
VI_STEP_SIZE = 0.3
VI_LOG_SCALE_GRID = tuple(float(t) for t in range(0, 11))
CLASSIFICATION_PRIORS = {
    "NNGP": None,
    "Student-t": nngp.inverse_gamma(2.0, 2.0),
    "Burr XII": nngp.burr_xii(2.0, 1.0, 1.0),
}


# --------------------------------------------------------------------------- regression


def regression_datasets() -> dict[str, tuple[np.ndarray, np.ndarray]]:
    from sklearn.datasets import load_diabetes

    diabetes = load_diabetes()
    rng = np.random.default_rng(2022)
    x = rng.normal(size=(400, 4))
    y = np.sin(x[:, 0]) + 0.5 * x[:, 1] * x[:, 2] + 0.3 * rng.standard_t(2, size=400)
    return {"diabetes": (diabetes.data, diabetes.target), "synthetic-t2": (x, y)}


def split(x: np.ndarray, kind: str, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Train and test indices: random 80/20, or the 20% furthest along a random direction."""
    rng = np.random.default_rng(seed)
    n = len(x)
    num_test = n // 5
    if kind == "random":
        order = rng.permutation(n)
    else:
        direction = rng.normal(size=x.shape[1])
        standardized = (x - x.mean(0)) / x.std(0)
        order = np.argsort(standardized @ direction)
    return order[: n - num_test], order[n - num_test :]


def run_regression(num_splits: int) -> list[dict]:
    rows = []
    for name, (x, y) in regression_datasets().items():
        for kind in ("random", "shifted"):
            for seed in range(num_splits):
                train, test = split(x, kind, seed)
                mu, sd = x[train].mean(0), x[train].std(0)
                y_mu, y_sd = y[train].mean(), y[train].std()
                x_train, x_test = (x[train] - mu) / sd, (x[test] - mu) / sd
                y_train, y_test = (y[train] - y_mu) / y_sd, (y[test] - y_mu) / y_sd
                for model, family in REGRESSION_MODELS.items():
                    for protocol in ("ml-ii", "fixed"):
                        start = time.perf_counter()
                        if protocol == "ml-ii":
                            fit = nngp.fit_hyperparameters(
                                x_train, y_train, depths=(1, 2, 3), scale_prior=family,
                                num_steps=300, progress=False,
                            )  # fmt: skip
                            process, depth = fit.process, fit.depth
                        else:
                            process, depth = FIXED_PROCESSES[model], 2
                        predictive = process.condition(x_train, y_train).predict(x_test)
                        nll = -float(jnp.mean(predictive.log_prob(y_test)))
                        rows.append(
                            {
                                "dataset": name, "split": kind, "seed": seed, "model": model,
                                "protocol": protocol, "test_nll": nll, "depth": depth,
                                "seconds": time.perf_counter() - start,
                            }
                        )  # fmt: skip
                        print(f"regression {name} {kind} {seed} {model} {protocol}: {nll:.3f}")
    return rows


def summarize(rows: list[dict], keys: tuple[str, ...], value: str) -> dict[tuple, tuple]:
    groups: dict[tuple, list[float]] = {}
    for row in rows:
        groups.setdefault(tuple(row[k] for k in keys), []).append(row[value])
    return {
        k: (float(np.mean(v)), float(np.std(v, ddof=1) / np.sqrt(len(v))) if len(v) > 1 else 0.0)
        for k, v in groups.items()
    }


# ----------------------------------------------------------------------- classification


def _classification_scores(probs: np.ndarray, labels: np.ndarray) -> tuple[float, float]:
    probs = np.asarray(probs, np.float64)
    accuracy = float(np.mean(probs.argmax(1) == labels))
    nll = float(-np.mean(np.log(np.maximum(probs[np.arange(len(labels)), labels], 1e-300))))
    return accuracy, nll


def digits_split() -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, np.random.Generator]:
    """scikit-learn's digits (pixels / 16), labels, the 1,000 training and 797 test indices,
    and the generator that drew the split (it goes on to corrupt the test images)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    rng = np.random.default_rng(0)
    order = rng.permutation(len(digits.data))
    return digits.data / 16.0, digits.target, order[:1000], order[1000:], rng


def classifier_convergence(posterior: nngp.ClassificationPosterior) -> dict[str, float]:
    """Rank-normalised split R-hat and bulk ESS of ``log s`` and the worst over the latents."""
    from probinfer.diagnostics import convergence

    scale = convergence({"log_scale": np.asarray(posterior.log_scales)})
    latent = convergence({"f": posterior.idata["posterior"]["f"].values})
    return {
        "rhat_log_scale": float(scale.rhat[0]),
        "ess_log_scale": float(scale.ess_bulk[0]),
        "ess_tail_log_scale": float(scale.ess_tail[0]),
        "max_rhat_f": float(np.nanmax(latent.rhat)),
        "min_ess_f": float(np.nanmin(latent.ess_bulk)),
    }


def run_classification() -> list[dict]:
    x, labels, train, test, rng = digits_split()
    corrupt = rng.uniform(size=x[test].shape) < 0.3
    x_corrupted = np.where(corrupt, rng.uniform(size=x[test].shape), x[test])
    tests = (("clean", x[test]), ("corrupted", x_corrupted))
    kernel = nngp.mlp(2, weight_variance=2.0, bias_variance=0.1)
    rows = []

    def record(model, inference, predictor, seconds, **extra):
        for test_name, x_test in tests:
            probs = predictor.predict_proba(x_test, key=jax.random.key(1))
            accuracy, nll = _classification_scores(probs, labels[test])
            row = {"model": model, "inference": inference, "test": test_name}
            rows.append({**row, "accuracy": accuracy, "nll": nll, "seconds": seconds, **extra})
            print(f"classification {model} {inference} {test_name}: acc {accuracy:.3f} "
                  f"nll {nll:.3f} {extra}", flush=True)  # fmt: skip

    for model, prior in CLASSIFICATION_PRIORS.items():
        start = time.perf_counter()
        posterior = nngp.sample_classifier(
            jax.random.key(0), kernel, x[train], labels[train], scale_prior=prior,
            num_chains=4, num_warmup=MCMC_WARMUP, num_draws=MCMC_DRAWS, thin=MCMC_THIN,
            method="gibbs", progress=False,
        )  # fmt: skip
        jax.block_until_ready(posterior.log_scales)
        seconds = time.perf_counter() - start
        rhat = float("nan")
        if prior is not None:
            import arviz as az

            rhat = float(az.rhat(np.asarray(posterior.log_scales)))
        log_s = np.asarray(posterior.log_scales, np.float64)
        record(model, "MCMC", posterior, seconds, rhat_log_scale=rhat,
               mean_log_scale=float(log_s.mean()), sd_log_scale=float(log_s.std()))  # fmt: skip

    # The node fits do not depend on the scale prior: fit the grid once, reweight per prior.
    fits = {}
    start = time.perf_counter()
    fits["NNGP"] = nngp.fit_variational_classifier(
        jax.random.key(0), kernel, x[train], labels[train], num_inducing=VI_INDUCING,
        num_steps=VI_STEPS, step_size=VI_STEP_SIZE,
    )  # fmt: skip
    nngp_seconds = time.perf_counter() - start
    start = time.perf_counter()
    grid_fit = nngp.fit_variational_classifier(
        jax.random.key(0), kernel, x[train], labels[train],
        scale_prior=CLASSIFICATION_PRIORS["Student-t"], num_inducing=VI_INDUCING,
        num_steps=VI_STEPS, step_size=VI_STEP_SIZE, log_scale_grid=VI_LOG_SCALE_GRID,
    )  # fmt: skip
    grid_seconds = time.perf_counter() - start
    for model, prior in CLASSIFICATION_PRIORS.items():
        fit = fits["NNGP"] if prior is None else grid_fit.reweighted(prior)
        record(model, "VI", fit, nngp_seconds if prior is None else grid_seconds,
               rhat_log_scale=float("nan"), mean_log_scale=float(fit.log_scale_mean),
               sd_log_scale=float(fit.log_scale_std), log_evidence=float(fit.log_evidence),
               node_elbos=np.asarray(fit.elbos).round(2).tolist())  # fmt: skip
    return rows


def run_classifier_defaults() -> list[dict]:
    import warnings

    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    features = (data.data - data.data.mean(0)) / data.data.std(0)
    subset = np.random.default_rng(0).permutation(len(features))[:350]
    x, labels = features[subset], data.target[subset]
    kernel = nngp.mlp(2, weight_variance=2.0, bias_variance=0.1)
    priors = {"Student-t": nngp.inverse_gamma(2.0, 2.0), "Burr XII": nngp.burr_xii(2.0, 1.0, 1.0)}
    rows = []
    for seed in (0, 1):  # methods interleaved, so that machine load hits both alike
        for model, prior in priors.items():
            for method in ("nuts", "gibbs"):
                start = time.perf_counter()
                with warnings.catch_warnings(record=True) as caught:
                    warnings.simplefilter("always")
                    posterior = nngp.sample_classifier(
                        jax.random.key(seed), kernel, x, labels, scale_prior=prior,
                        method=method, progress=False,
                    )  # fmt: skip
                    jax.block_until_ready(posterior.log_scales)
                seconds = time.perf_counter() - start
                row = {
                    "model": model, "method": method, "seed": seed, "seconds": seconds,
                    **classifier_convergence(posterior),
                    "warnings": len(caught),
                    "mean_log_scale": float(np.mean(posterior.log_scales)),
                }  # fmt: skip
                rows.append(row)
                print(f"classifier defaults: {row}", flush=True)
    return rows


# -------------------------------------------------------------------------------- speed


def numpy_relu_kernel(x1, x2, depth, weight_variance, bias_variance):
    """The yardstick: the arc-cosine recursion in plain NumPy (dtype of the inputs)."""
    d = x1.shape[1]
    cov = x1 @ x2.T / d
    v1 = (x1**2).sum(1) / d
    v2 = (x2**2).sum(1) / d
    cov, v1, v2 = (weight_variance * a + bias_variance for a in (cov, v1, v2))
    for _ in range(depth):
        norm = np.sqrt(np.outer(v1, v2))
        cos = np.clip(cov / norm, -1, 1)
        theta = np.arccos(cos)
        cov = norm * (np.sin(theta) + (np.pi - theta) * cos) / (2 * np.pi)
        v1, v2 = v1 / 2, v2 / 2
        cov, v1, v2 = (weight_variance * a + bias_variance for a in (cov, v1, v2))
    return cov


def numpy_relu_diagonal(x, depth, weight_variance, bias_variance):
    v = weight_variance * (x**2).sum(1) / x.shape[1] + bias_variance
    for _ in range(depth):
        v = weight_variance * v / 2 + bias_variance
    return v


def numpy_predict(x, y, x_test, noise):
    k = numpy_relu_kernel(x, x, 3, 2.0, 0.1)
    k[np.diag_indices_from(k)] += noise
    cross = numpy_relu_kernel(x, x_test, 3, 2.0, 0.1)
    factor = scipy.linalg.cho_factor(k, lower=True, check_finite=False)
    alpha = scipy.linalg.cho_solve(factor, y, check_finite=False)
    mean = cross.T @ alpha
    whitened = scipy.linalg.solve_triangular(factor[0], cross, lower=True, check_finite=False)
    var = numpy_relu_diagonal(x_test, 3, 2.0, 0.1) - np.sum(whitened**2, 0) + noise
    return mean, var


def best_of(fn, repeats=3) -> tuple[float, float]:
    """(first call seconds, best of ``repeats`` later calls)."""
    start = time.perf_counter()
    jax.block_until_ready(fn())
    first = time.perf_counter() - start
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return first, min(times)


def run_speed() -> list[dict]:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(4000, 10))
    x_test = rng.normal(size=(1000, 10))
    y = np.sin(x[:, 0]) + 0.1 * rng.normal(size=4000)
    kernel = nngp.mlp(3, weight_variance=2.0, bias_variance=0.1)
    process = nngp.ScaleMixtureProcess(kernel, None, noise=0.1)
    rows = []

    def record(task, implementation, dtype, fn):
        first, best = best_of(fn)
        rows.append(
            {
                "task": task,
                "implementation": implementation,
                "dtype": dtype,
                "seconds": best,
                "first_call_seconds": first,
            }
        )
        print(
            f"speed {task} {implementation} {dtype}: {best:.3f} s (first {first:.2f} s)", flush=True
        )

    for dtype in ("float32", "float64"):
        with jax.enable_x64(dtype == "float64"):
            xj, xtj, yj = (jnp.asarray(a, dtype) for a in (x, x_test, y))

            def predict(xj=xj, yj=yj, xtj=xtj):
                p = process.condition(xj, yj).predict(xtj)
                return p.mean, p.variance

            record("kernel n=4000", "probinfer", dtype, lambda xj=xj: kernel(xj))
            record("predict 4000/1000", "probinfer", dtype, predict)
        xn, xtn, yn = (a.astype(dtype) for a in (x, x_test, y))
        record("kernel n=4000", "numpy", dtype, lambda a=xn: numpy_relu_kernel(a, a, 3, 2.0, 0.1))
        record(
            "predict 4000/1000",
            "numpy",
            dtype,
            lambda a=xn, b=yn, c=xtn: numpy_predict(a, b, c, 0.1),
        )
    # Where the float32 prediction spends its time: the factorisation and the triangular
    # solve, against SciPy's LAPACK on the same float32 matrices.
    with jax.enable_x64(False):
        gram = kernel(jnp.asarray(x, "float32")) + 0.1 * jnp.eye(len(x), dtype="float32")
        cross32 = kernel(jnp.asarray(x, "float32"), jnp.asarray(x_test, "float32"))
        cholesky = jax.jit(jnp.linalg.cholesky)
        factor = cholesky(gram)
        solve = jax.jit(lambda a, b: jax.scipy.linalg.solve_triangular(a, b, lower=True))
        record("cholesky n=4000", "probinfer", "float32", lambda: cholesky(gram))
        record("solve 4000x1000", "probinfer", "float32", lambda: solve(factor, cross32))
    gram_np, cross_np, factor_np = np.asarray(gram), np.asarray(cross32), np.asarray(factor)
    record(
        "cholesky n=4000", "numpy", "float32",
        lambda: scipy.linalg.cholesky(gram_np, lower=True, check_finite=False),
    )  # fmt: skip
    record(
        "solve 4000x1000", "numpy", "float32",
        lambda: scipy.linalg.solve_triangular(factor_np, cross_np, lower=True, check_finite=False),
    )  # fmt: skip
    # Agreement of the float32 path with the float64 yardstick.
    with jax.enable_x64(False):
        p = process.condition(jnp.asarray(x, "float32"), jnp.asarray(y, "float32")).predict(
            jnp.asarray(x_test, "float32")
        )
    mean64, var64 = numpy_predict(x, y, x_test, 0.1)
    rows.append(
        {
            "task": "float32 vs numpy float64",
            "max_abs_mean_error": float(np.max(np.abs(np.asarray(p.mean) - mean64))),
            "max_rel_variance_error": float(np.max(np.abs(np.asarray(p.variance) / var64 - 1))),
        }
    )
    return rows


# ------------------------------------------------------------------------------- memory

MEMORY_SCRIPT = textwrap.dedent(
    """
    import json, re, time, numpy as np, jax, jax.numpy as jnp
    from probinfer import nngp

    def high_water_mark():
        # VmHWM belongs to this process image; ru_maxrss would include the parent's size
        # at fork, which Linux carries across exec.
        status = open("/proc/self/status").read()
        return int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) * 1024

    x = jnp.asarray(np.random.default_rng(0).normal(size=(10000, 10)), jnp.float32)
    kernel = nngp.mlp(3, weight_variance=2.0, bias_variance=0.1)
    kernel(x[:10], x).block_until_ready()
    before = high_water_mark()
    start = time.perf_counter()
    out = kernel(x).block_until_ready()
    seconds = time.perf_counter() - start
    print(json.dumps({"n": 10000, "output_bytes": out.nbytes, "rss_before_bytes": before,
                      "peak_rss_bytes": high_water_mark(), "seconds": seconds}))
    """
)


def run_memory() -> dict:
    result = subprocess.run(
        [sys.executable, "-c", MEMORY_SCRIPT], capture_output=True, text=True, check=True
    )
    row = json.loads(result.stdout.strip().splitlines()[-1])
    row["growth_over_output"] = (row["peak_rss_bytes"] - row["rss_before_bytes"]) / row[
        "output_bytes"
    ]
    print(f"memory: {row}", flush=True)
    return row


# -------------------------------------------------------------------------------- large

LARGE_KERNEL = nngp.mlp(2, weight_variance=2.0, bias_variance=0.1)
LARGE_NOISE = 0.05
LARGE_TEST = 1000
LARGE_SUBSETS = (2000, 8000)
LARGE_INDUCING = (500, 1000, 2000)
LARGE_N = 50_000
LARGE_RUNS = (("fitc", 1000), ("cg", 1000), ("cg", 2000))
# Test points whose exact predictive variance is solved by CG at n = LARGE_N.
LARGE_VARIANCE_POINTS = 50


def large_dataset(num_train: int) -> tuple[np.ndarray, ...]:
    """Friedman #1 (10 inputs, 5 used, noise sd 1), standardised with training statistics;
    the last ``LARGE_TEST`` rows are the test set."""
    from sklearn.datasets import make_friedman1

    x, y = make_friedman1(n_samples=LARGE_N + LARGE_TEST, noise=1.0, random_state=0)
    train = np.arange(num_train)
    test = np.arange(LARGE_N, LARGE_N + LARGE_TEST)
    mu, sd, y_mu, y_sd = x[train].mean(0), x[train].std(0), y[train].mean(), y[train].std()
    return (
        (x[train] - mu) / sd, (y[train] - y_mu) / y_sd,
        (x[test] - mu) / sd, (y[test] - y_mu) / y_sd,
    )  # fmt: skip


def _large_process() -> nngp.ScaleMixtureProcess:
    return nngp.ScaleMixtureProcess(LARGE_KERNEL, nngp.inverse_gamma(2.0, 2.0), LARGE_NOISE)


def run_large_accuracy() -> list[dict]:
    """Test log densities against the exact float64 Student-t predictive on subsets."""
    rows = []
    for num_train in LARGE_SUBSETS:
        x, y, x_test, y_test = large_dataset(num_train)
        with jax.enable_x64(True):
            exact = _large_process().condition(x, y)
            reference_log_prob = np.asarray(exact.predict(x_test).log_prob(y_test))
            reference_lml = float(exact.log_marginal_likelihood())
        variants = [("exact", None)] + [
            (solver, m) for m in LARGE_INDUCING if m < num_train for solver in ("fitc", "cg")
        ]
        # The whole predictive by CG (variances too): what is left is float32 rounding.
        variants.append(("cg+variance", LARGE_INDUCING[1]))
        for solver, m in variants:
            process = _large_process()
            start = time.perf_counter()
            if solver == "exact":
                posterior = process.condition(x, y)
            else:
                posterior = process.condition_inducing(
                    x, y, num_inducing=m, solver=solver.removesuffix("+variance"), progress=False
                )
            if solver == "cg+variance":
                predictive = posterior.predict(x_test, variance="cg")
            else:
                predictive = posterior.predict(x_test)
            log_prob = np.asarray(predictive.log_prob(y_test))
            seconds = time.perf_counter() - start
            gap = reference_log_prob - log_prob
            stderr = getattr(posterior, "log_det_stderr", 0.0)
            row = {
                "n": num_train, "solver": solver, "inducing": m,
                "nll_gap": float(gap.mean()),
                "nll_gap_se": float(gap.std(ddof=1) / np.sqrt(len(gap))),
                "max_abs_gap": float(np.abs(gap).max()), "seconds": seconds,
                "test_nll": float(-log_prob.mean()),
                "cg_iterations": getattr(posterior, "cg_iterations", None),
                # The log marginal likelihood against float64's exact one (its standard
                # error is the SLQ estimate's, half that of log |C|).
                "lml_gap": float(posterior.log_marginal_likelihood()) - reference_lml,
                "lml_gap_se": float(stderr) / 2,
            }  # fmt: skip
            rows.append(row)
            print(f"large accuracy: {row}", flush=True)
    return rows


# ML-II on random subsets (`fit_hyperparameters(max_points=m)`), judged by the exact test
# NLL of the fitted process conditioned on all ML2_TRAIN points.
ML2_TRAIN = 8000
ML2_SUBSETS = (500, 1000, 2000)


def run_ml2_subsets() -> list[dict]:
    """Hyperparameters fitted on subsets of the large set, each conditioned on all
    :data:`ML2_TRAIN` points (exact, float32): test NLL per point against the fixed
    hyperparameters of the ``large`` section."""
    x, y, x_test, y_test = large_dataset(ML2_TRAIN)
    rows = []
    for m in (None, *ML2_SUBSETS):
        start = time.perf_counter()
        if m is None:
            process, fitted = _large_process(), {"noise": LARGE_NOISE}
        else:
            fit = nngp.fit_hyperparameters(x, y, depths=(2,), max_points=m, seed=0, progress=False)
            process, fitted = fit.process, fit.parameters
        fit_seconds = time.perf_counter() - start
        log_prob = np.asarray(process.condition(x, y).predict(x_test).log_prob(y_test))
        row = {
            "max_points": m, "fit_seconds": fit_seconds,
            "test_nll": float(-log_prob.mean()),
            "test_nll_se": float(log_prob.std(ddof=1) / np.sqrt(len(log_prob))),
            "parameters": fitted,
        }  # fmt: skip
        rows.append(row)
        print(f"ml2 subsets: {row}", flush=True)
    return rows


LARGE_SCRIPT = textwrap.dedent(
    """
    import contextlib, json, re, sys, time, warnings, numpy as np, jax
    sys.path.insert(0, "benchmarks")
    from nngp import large_dataset, _large_process, LARGE_N, LARGE_VARIANCE_POINTS, ML2_CHECK
    from probinfer import nngp

    def high_water_mark():
        status = open("/proc/self/status").read()
        return int(re.search(r"VmHWM:\\s+(\\d+)", status).group(1)) * 1024

    solver, num_inducing, fit_points = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    x, y, x_test, y_test = large_dataset(LARGE_N)
    start = time.perf_counter()
    process, fitted = _large_process(), None
    if fit_points:
        fit = nngp.fit_hyperparameters(
            x, y, depths=(2,), max_points=fit_points, seed=0, progress=False
        )
        process, fitted = fit.process, fit.parameters
    fit_seconds = time.perf_counter() - start

    def condition(x_part, y_part, solver=solver):
        return process.condition_inducing(
            x_part, y_part, num_inducing=num_inducing, solver=solver, progress=False
        )

    precision, breakdown = contextlib.ExitStack(), None
    # CG's warnings (a residual above the tolerance) go into the row.
    caught = precision.enter_context(warnings.catch_warnings(record=True))
    warnings.simplefilter("always", UserWarning)
    labelled = []  # (the solve that raised it, message) for CG's warnings

    def label(solve):
        labelled.extend((solve, str(w.message)) for w in caught)
        caught.clear()
    start = time.perf_counter()
    try:
        posterior = condition(x, y)
    except ValueError as error:
        if "float64" not in str(error):
            raise
        # float32 was not precise enough (the CG breakdown): take the fix the error names.
        breakdown = {"seconds": time.perf_counter() - start, "error": str(error)}
        label("float32 attempt")
        precision.enter_context(jax.enable_x64(True))
        start = time.perf_counter()
        posterior = condition(x, y)
    conditioned = time.perf_counter() - start
    log_prob = np.asarray(posterior.predict(x_test).log_prob(y_test))
    label("all points")
    row = {
        "n": LARGE_N, "solver": solver, "inducing": posterior.num_inducing,
        "fit_points": fit_points, "fit_seconds": fit_seconds, "parameters": fitted,
        "dtype": str(posterior.x.dtype), "float32_breakdown": breakdown,
        "condition_seconds": conditioned, "seconds": time.perf_counter() - start,
        "test_nll": -float(np.mean(log_prob)), "cg_iterations": posterior.cg_iterations,
        "relative_residual": float(posterior.relative_residual),
        "log_marginal_likelihood": float(posterior.log_marginal_likelihood()),
        "log_marginal_likelihood_se": float(posterior.log_det_stderr) / 2,
        "max_residual_variance": float(posterior.max_residual_variance),
        "peak_rss_bytes": high_water_mark(),
    }
    if solver == "cg" and num_inducing >= 2000 and not fit_points:
        # The exact predictive (mean and variance by CG) on a few test points, against the
        # FITC-variance predictive on the same points.
        points = slice(0, LARGE_VARIANCE_POINTS)
        start = time.perf_counter()
        exact = posterior.predict(x_test[points], variance="cg")
        row["exact_variance_seconds"] = time.perf_counter() - start
        gap = np.asarray(exact.log_prob(y_test[points])) - log_prob[points]
        row["variance_gap"] = float(gap.mean())
        row["variance_gap_se"] = float(gap.std(ddof=1) / np.sqrt(len(gap)))
        row["variance_max_abs_gap"] = float(np.abs(gap).max())
        label("exact variances")
        row["peak_rss_bytes"] = high_water_mark()
    if fit_points:
        # The fitted process (a smaller noise: a harder solve) on the first ML2_CHECK points,
        # by the same solver and by the exact float64 predictive.
        part = slice(0, ML2_CHECK)
        approximate = condition(x[part], y[part])  # in the precision the full run needed
        approximate_log_prob = np.asarray(approximate.predict(x_test).log_prob(y_test))
        with jax.enable_x64(True):
            exact_posterior = process.condition(x[part], y[part])
            exact_log_prob = np.asarray(exact_posterior.predict(x_test).log_prob(y_test))
            gap = exact_log_prob - approximate_log_prob
            exact_lml = float(exact_posterior.log_marginal_likelihood())
        del exact_posterior  # its 20,000^2 factor, before the FITC runs below
        row["subset_exact_test_nll"] = -float(exact_log_prob.mean())
        # FITC (a model of its own) on the same points: does it beat the exact model there?
        fitc_part = condition(x[part], y[part], solver="fitc")
        fitc_gap = exact_log_prob - np.asarray(fitc_part.predict(x_test).log_prob(y_test))
        row["subset_fitc_inducing"] = fitc_part.num_inducing
        row["subset_fitc_gap"] = float(fitc_gap.mean())
        row["subset_fitc_gap_se"] = float(fitc_gap.std(ddof=1) / np.sqrt(len(fitc_gap)))
        row["subset_gap"] = float(gap.mean())
        row["subset_gap_se"] = float(gap.std(ddof=1) / np.sqrt(len(gap)))
        row["subset_lml_gap"] = float(approximate.log_marginal_likelihood()) - exact_lml
        row["subset_lml_gap_se"] = float(approximate.log_det_stderr) / 2
        row["subset_cg_iterations"] = approximate.cg_iterations
        row["subset_points"] = ML2_CHECK
        # FITC alone (no CG) with the fitted process on all points, for comparison.
        start = time.perf_counter()
        fitc = condition(x, y, solver="fitc")
        row["fitc_test_nll"] = -float(np.mean(np.asarray(fitc.predict(x_test).log_prob(y_test))))
        row["fitc_seconds"] = time.perf_counter() - start
    label("check subset")
    row["warnings"] = [
        f"{solve}: {message}" for solve, message in labelled if "conjugate gradients" in message
    ]
    precision.close()
    print(json.dumps(row))
    """
)


def _large_run(solver: str, num_inducing: int, fit_points: int = 0) -> dict:
    """The result row of one run of :data:`LARGE_SCRIPT` on all ``LARGE_N`` points, in a
    fresh process (peak RSS is its own), after an ML-II fit on ``fit_points`` of them when
    that is not 0."""
    result = subprocess.run(
        [sys.executable, "-c", LARGE_SCRIPT, solver, str(num_inducing), str(fit_points)],
        capture_output=True, text=True,
    )  # fmt: skip
    if result.returncode:
        raise RuntimeError(
            f"the large run (solver {solver}, {num_inducing} inducing points, ML-II on "
            f"{fit_points} points) failed:\n{result.stderr}"
        )
    row = json.loads(result.stdout.strip().splitlines()[-1])
    print(f"large run: {row}", flush=True)
    return row


def run_large() -> dict:
    accuracy = run_large_accuracy()
    scale = [_large_run(solver, num_inducing) for solver, num_inducing in LARGE_RUNS]
    return {"accuracy": accuracy, "scale": scale}


# ML-II then the large predictive: hyperparameters fitted on ML2_LARGE_FIT random points of
# all LARGE_N, then CG with ML2_LARGE_INDUCING inducing points on all of them.
ML2_LARGE_FIT = 1000
ML2_LARGE_INDUCING = 2000
# Points on which the fitted process's solve is checked against the exact float64
# posterior (a 3.2 GB matrix; about 10 GB at peak).
ML2_CHECK = 20_000


def run_ml2_large() -> dict:
    return _large_run("cg", ML2_LARGE_INDUCING, ML2_LARGE_FIT)


# ------------------------------------------------------------------------------- report


def markdown(results: dict) -> str:
    lines = ["# NNGP scale mixtures", "", f"Machine: `{json.dumps(results['machine'])}`", ""]
    for section, machine in results.get("section_machines", {}).items():
        lines.append(
            f"- `{section}`: run at commit {machine.get('commit')} on {machine.get('date')}, "
            f"load average {machine.get('load_average')}"
        )
    lines.append("")
    if "regression" in results:
        table = summarize(
            results["regression"], ("protocol", "dataset", "split", "model"), "test_nll"
        )
        lines += [
            "## Regression: test NLL per point (standardised; mean ± s.e. over splits)",
            "",
            "`ml-ii`: every hyperparameter fitted by marginal likelihood per split; `fixed`:",
            "depth 2, weight variance 2, bias variance 0.1, noise 0.1, InvGamma(2, 2) and",
            "BurrXII(2, 1, 1) for every split.",
            "",
            "| protocol | dataset | split | " + " | ".join(REGRESSION_MODELS) + " |",
            "|---|---|---|" + "---|" * len(REGRESSION_MODELS),
        ]
        for protocol in ("ml-ii", "fixed"):
            for dataset in dict.fromkeys(r["dataset"] for r in results["regression"]):
                for kind in ("random", "shifted"):
                    cells = []
                    for m in REGRESSION_MODELS:
                        mean, error = table[(protocol, dataset, kind, m)]
                        cells.append(f"{mean:.3f} ± {error:.3f}")
                    lines.append(f"| {protocol} | {dataset} | {kind} | " + " | ".join(cells) + " |")
        lines.append("")
    if "classification" in results:
        lines += [
            "## Classification: digits (1,000 train / 797 test)",
            "",
            "| model | inference | test | accuracy | NLL | E[log s] (sd) | R-hat log s | seconds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in results["classification"]:
            scale = f"{r['mean_log_scale']:.2f} ({r['sd_log_scale']:.2f})"
            lines.append(
                f"| {r['model']} | {r.get('inference', 'MCMC')} | {r['test']} | "
                f"{r['accuracy']:.3f} | {r['nll']:.3f} | {scale} | {r['rhat_log_scale']:.3f} | "
                f"{r['seconds']:.1f} |"
            )
        lines.append("")
    if "classifier_defaults" in results:
        lines += [
            "## Classifier at its defaults: breast cancer (350 points, 4 x (1,000 + 1,000))",
            "",
            "| scale prior | method | seed | R-hat log s | ESS log s | max R-hat f | "
            "min ESS f | E[log s] | warnings | seconds |",
            "|---|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["classifier_defaults"]:
            lines.append(
                f"| {r['model']} | {r['method']} | {r['seed']} | {r['rhat_log_scale']:.3f} | "
                f"{r['ess_log_scale']:.0f} | {r['max_rhat_f']:.3f} | {r['min_ess_f']:.0f} | "
                f"{r['mean_log_scale']:.2f} | {r['warnings']} | {r['seconds']:.1f} |"
            )
        lines.append("")
    if "speed" in results:
        lines += [
            "## Speed (best of 3, seconds)",
            "",
            "`cholesky` and `solve` rows: the two steps that dominate the float32 prediction,",
            "timed alone against SciPy's LAPACK (`numpy` rows) on the same float32 matrices.",
            "",
            "| task | implementation | dtype | seconds | first call |",
            "|---|---|---|---|---|",
        ]
        timed = [r for r in results["speed"] if "seconds" in r]
        for r in timed:
            lines.append(
                f"| {r['task']} | {r['implementation']} | {r['dtype']} | {r['seconds']:.3f} | "
                f"{r['first_call_seconds']:.2f} |"
            )
        by = {(r["task"], r["implementation"], r["dtype"]): r["seconds"] for r in timed}
        lines.append("")
        for task in ("kernel n=4000", "predict 4000/1000"):
            ratio = by[(task, "numpy", "float64")] / by[(task, "probinfer", "float32")]
            lines.append(
                f"- {task}: probinfer float32 is **{ratio:.1f}x** faster than NumPy float64."
            )
        lines += [f"- accuracy: {json.dumps(results['speed'][-1])}", ""]
    if "memory" in results:
        m = results["memory"]
        lines += [
            "## Memory (n = 10,000 kernel, float32)",
            "",
            f"Output {m['output_bytes'] / 2**20:.0f} MiB; peak RSS grew by "
            f"{(m['peak_rss_bytes'] - m['rss_before_bytes']) / 2**20:.0f} MiB "
            f"({m['growth_over_output']:.2f}x the output) in {m['seconds']:.1f} s.",
            "",
        ]
    if "large" in results:
        lines += [
            "## Beyond one dense Cholesky: Friedman #1, float32, Student-t predictive",
            "",
            "Test NLL gap per point to the exact float64 predictive (1,000 test points; "
            "mean ± s.e. of the paired differences):",
            "",
            "| n | solver | inducing | NLL gap | max abs gap | log ML - exact | CG iterations "
            "| seconds |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for r in results["large"]["accuracy"]:
            lml = (
                f"{r['lml_gap']:+.1f}" + (f" ± {r['lml_gap_se']:.1f}" if r["lml_gap_se"] else "")
                if "lml_gap" in r
                else "-"
            )
            lines.append(
                f"| {r['n']:,} | {r['solver']} | {r['inducing'] or '-'} | "
                f"{r['nll_gap']:+.4f} ± {r['nll_gap_se']:.4f} | {r['max_abs_gap']:.3f} | {lml} | "
                f"{r['cg_iterations'] if r['cg_iterations'] is not None else '-'} | "
                f"{r['seconds']:.1f} |"
            )
        lines += [
            "",
            f"n = {LARGE_N:,} (fresh process each; exact would need a "
            f"{LARGE_N**2 * 4 / 2**30:.0f} GiB matrix):",
            "",
            "| solver | inducing | condition s | total s | CG iterations | test NLL | "
            "log ML ± s.e. | max residual variance | peak RSS GiB |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for r in results["large"]["scale"]:
            lines.append(
                f"| {r['solver']} | {r['inducing']} | {r['condition_seconds']:.0f} | "
                f"{r['seconds']:.0f} | {r['cg_iterations']} | {r['test_nll']:.4f} | "
                f"{r['log_marginal_likelihood']:.1f} ± {r['log_marginal_likelihood_se']:.1f} | "
                f"{r['max_residual_variance']:.3f} | {r['peak_rss_bytes'] / 2**30:.2f} |"
            )
        lines.append("")
        for r in results["large"]["scale"]:
            if "variance_gap" in r:
                lines += [
                    f"Exact predictive at n = {r['n']:,} ({r['solver']}, {r['inducing']} "
                    f"inducing points) on the first {LARGE_VARIANCE_POINTS} test points, "
                    f"variances solved by CG ({r['exact_variance_seconds']:.0f} s): the "
                    f"FITC-variance predictive's NLL gap to it is "
                    f"{r['variance_gap']:+.4f} ± {r['variance_gap_se']:.4f} nats per point "
                    f"(max {r['variance_max_abs_gap']:.3f}).",
                    "",
                ]
    if "ml2_subsets" in results:
        lines += [
            f"## ML-II on random subsets (Friedman #1, n = {ML2_TRAIN:,}, depth 2, InvGamma)",
            "",
            "`fit_hyperparameters(x, y, depths=(2,), max_points=m)` (300 Adam steps), the "
            f"fitted process then conditioned on all {ML2_TRAIN:,} points (exact, float32); "
            "test NLL per point on 1,000 test points (mean ± s.e.). `fixed`: the `large` "
            "section's hyperparameters.",
            "",
            "| fitted on | fit s | test NLL | noise | weight variance | bias variance |",
            "|---|---|---|---|---|---|",
        ]
        for r in results["ml2_subsets"]:
            p = r["parameters"]
            lines.append(
                f"| {'fixed' if r['max_points'] is None else format(r['max_points'], ',')} | "
                f"{r['fit_seconds']:.0f} | {r['test_nll']:.4f} ± {r['test_nll_se']:.4f} | "
                f"{p['noise']:.4f} | {p.get('weight_variance', 2.0):.3f} | "
                f"{p.get('bias_variance', 0.1):.3f} |"
            )
        lines.append("")
    if "ml2_large" in results:
        r, p = results["ml2_large"], results["ml2_large"]["parameters"]
        breakdown = ""
        if r.get("float32_breakdown"):
            breakdown = (
                f" (float32 failed after {r['float32_breakdown']['seconds']:.0f} s: "
                f'"{r["float32_breakdown"]["error"].split(":")[0]}", and its fix is float64)'
            )
        lines += [
            f"## ML-II then the large predictive (Friedman #1, n = {r['n']:,})",
            "",
            f"`fit_hyperparameters(x, y, depths=(2,), max_points={r['fit_points']})` on all "
            f"{r['n']:,} points ({r['fit_seconds']:.0f} s; noise {p['noise']:.4f}, weight "
            f"variance {p.get('weight_variance', 2.0):.3f}, bias variance "
            f"{p.get('bias_variance', 0.1):.3f}), then `condition_inducing(solver="
            f"{r['solver']!r}, num_inducing={r['inducing']})` on all of them in {r['dtype']}"
            f"{breakdown}: {r['condition_seconds']:.0f} s, {r['cg_iterations']} CG iterations "
            f"(relative residual {r['relative_residual']:.1e}), test NLL {r['test_nll']:.4f} "
            "per point (compare the `large` table's row with this solver and inducing "
            "points, conditioned with the fixed hyperparameters), peak RSS "
            f"{r['peak_rss_bytes'] / 2**30:.2f} GiB. "
            "The same fitted process and solver, in the same precision, on the first "
            f"{r['subset_points']:,} points against the exact float64 predictive: NLL gap "
            f"{r['subset_gap']:+.4f} ± {r['subset_gap_se']:.4f} per point "
            f"({r['subset_cg_iterations']} CG iterations).",
            "",
        ]
        if "fitc_test_nll" in r:
            lines += [
                f"Log marginal likelihood on those {r['subset_points']:,} points against the "
                f"exact float64 one: {r['subset_lml_gap']:+.1f} ± {r['subset_lml_gap_se']:.1f}. "
                f"FITC alone with the fitted process on all {r['n']:,} points: test NLL "
                f"{r['fitc_test_nll']:.4f} ({r['fitc_seconds']:.0f} s).",
                "",
            ]
        if "subset_fitc_gap" in r:
            lines += [
                f"On the {r['subset_points']:,} points the exact float64 predictive's test NLL "
                f"is {r['subset_exact_test_nll']:.4f}; FITC's (same process, "
                f"{r.get('subset_fitc_inducing', r['inducing'])} inducing points) minus it: "
                f"{r['subset_fitc_gap']:+.4f} ± {r['subset_fitc_gap_se']:.4f} per point "
                "(positive: FITC worse).",
                "",
            ]
        for message in r.get("warnings", []):
            lines += [f"Warning during the run: {message}", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [k for k in ("regression", "classification", "speed") if k in results]
    if not panels:
        return
    fig, axes = plt.subplots(1, len(panels), figsize=(6 * len(panels), 4.5), squeeze=False)
    for ax, panel in zip(axes[0], panels, strict=True):
        if panel == "regression":
            table = summarize(
                results["regression"], ("protocol", "dataset", "split", "model"), "test_nll"
            )
            groups = sorted({k[:3] for k in table})
            width = 0.8 / len(REGRESSION_MODELS)
            for i, model in enumerate(REGRESSION_MODELS):
                means = [table[g + (model,)][0] for g in groups]
                errors = [table[g + (model,)][1] for g in groups]
                ax.bar(np.arange(len(groups)) + i * width, means, width, yerr=errors, label=model)
            ax.set_xticks(
                np.arange(len(groups)) + width,
                [f"{p}\n{d}\n{s}" for p, d, s in groups],
                fontsize=6,
            )
            ax.set_ylabel("test NLL per point (lower is better)")
            ax.set_title("Regression")
            ax.legend()
        elif panel == "classification":
            rows = results["classification"]
            models = list(CLASSIFICATION_PRIORS)
            bars = [
                (inference, test) for inference in ("MCMC", "VI") for test in ("clean", "corrupted")
            ]
            for j, (inference, test) in enumerate(bars):
                values = [
                    next(r["nll"] for r in rows
                         if r["model"] == m and r["test"] == test and r["inference"] == inference)
                    for m in models
                ]  # fmt: skip
                ax.bar(np.arange(len(models)) + 0.2 * j, values, 0.2, label=f"{inference} {test}")
            ax.set_xticks(np.arange(len(models)) + 0.3, models)
            ax.set_ylabel("test NLL per image")
            ax.set_title("Digits classification")
            ax.legend(fontsize=7)
        else:
            timed = [r for r in results["speed"] if "seconds" in r]
            labels = [f"{r['task']}\n{r['implementation']} {r['dtype']}" for r in timed]
            ax.barh(np.arange(len(timed)), [r["seconds"] for r in timed])
            ax.set_yticks(np.arange(len(timed)), labels, fontsize=7)
            ax.set_xlabel("seconds (best of 3)")
            ax.set_title("Kernel and prediction speed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--sections", default="regression,classification,classifier_defaults,speed,memory"
    )
    parser.add_argument("--splits", type=int, default=5)
    parser.add_argument("--out", default="benchmarks/results")
    args = parser.parse_args()
    sections = args.sections.split(",")
    out = Path(args.out)
    path = out / "nngp.json"
    # Sections not run now keep their previous results (re-run one section at a time).
    results: dict = json.loads(path.read_text()) if path.exists() else {}
    results["machine"] = machine_description()
    # Each section keeps the commit and machine state it was run at.
    sections_run = results.setdefault("section_machines", {})
    for section in sections:
        sections_run[section] = results["machine"]
    if "speed" in sections:
        results["speed"] = run_speed()
    if "memory" in sections:
        results["memory"] = run_memory()
    if "regression" in sections:
        results["regression"] = run_regression(args.splits)
    if "classification" in sections:
        results["classification"] = run_classification()
    if "classifier_defaults" in sections:
        results["classifier_defaults"] = run_classifier_defaults()
    if "large" in sections:
        results["large"] = run_large()
    if "ml2_subsets" in sections:
        results["ml2_subsets"] = run_ml2_subsets()
    if "ml2_large" in sections:
        results["ml2_large"] = run_ml2_large()
    out.mkdir(parents=True, exist_ok=True)
    (out / "nngp.json").write_text(json.dumps(results, indent=2))
    (out / "nngp.md").write_text(markdown(results))
    plot(results, out / "nngp.png")
    print(markdown(results))


if __name__ == "__main__":
    main()
