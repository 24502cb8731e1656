"""Digits (1,000 train images, 10 classes) with ``sample_classifier`` at its defaults.

NUTS (the default method), 4 chains x (1,000 warm-up + 1,000 draws), ``s ~ InvGamma(2, 2)``,
MLP kernel (depth 2, variances 2 and 0.1), the training split of ``benchmarks/nngp.py``.
Reports R-hat and ESS of ``log s`` and the worst over the 10,000 latents ``f``, warnings,
mean gradient steps per iteration and wall time (compilation and the mode search included).

Run::

    PYTHONPATH=. .venv/bin/python benchmarks/nngp_digits_defaults.py [seed]

Writes ``benchmarks/results/nngp_digits_defaults_<seed>.json`` (about 45 minutes on 2 CPU
cores).
"""

import json
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np
from sklearn.datasets import load_digits

from probinfer import nngp
from probinfer.bench import machine_description
from probinfer.diagnostics import convergence

digits = load_digits()
x = digits.data / 16.0
labels = digits.target
order = np.random.default_rng(0).permutation(len(x))
train = order[:1000]
kernel = nngp.mlp(2, weight_variance=2.0, bias_variance=0.1)
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
start = time.perf_counter()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    posterior = nngp.sample_classifier(
        jax.random.key(seed),
        kernel,
        x[train],
        labels[train],
        scale_prior=nngp.inverse_gamma(2.0, 2.0),
        progress=True,
    )
    jax.block_until_ready(posterior.log_scales)
seconds = time.perf_counter() - start
scale = convergence({"log_scale": np.asarray(posterior.log_scales)})
latent = convergence({"f": posterior.idata["posterior"]["f"].values})
stats = posterior.idata["sample_stats"]
row = {
    "seed": seed,
    "seconds": seconds,
    "rhat_log_scale": float(scale.rhat[0]),
    "ess_log_scale": float(scale.ess_bulk[0]),
    "ess_tail_log_scale": float(scale.ess_tail[0]),
    "max_rhat_f": float(np.nanmax(latent.rhat)),
    "min_ess_f": float(np.nanmin(latent.ess_bulk)),
    "warnings": [str(w.message)[:300] for w in caught],
    "mean_log_scale": float(np.mean(posterior.log_scales)),
    "sample_stats": sorted(stats.data_vars),
}
for name in ("diverging", "tree_depth", "n_steps", "step_size", "acceptance_rate"):
    if name in stats:
        v = stats[name].values
        row[name] = float(v.sum()) if name == "diverging" else float(v.mean())
print(json.dumps(row))
row["machine"] = machine_description()
Path(f"benchmarks/results/nngp_digits_defaults_{seed}.json").write_text(json.dumps(row, indent=1))
