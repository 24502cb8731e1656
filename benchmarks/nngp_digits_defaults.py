"""Digits (1,000 train images, 10 classes) with ``sample_classifier`` at its defaults.

NUTS (the default method), 4 chains x (1,000 warm-up + 1,000 draws), ``s ~ InvGamma(2, 2)``
(``student_t``, the default) or ``s ~ BurrXII(2, 1, 1)`` (``burr_xii``),
MLP kernel (depth 2, variances 2 and 0.1), the training split of ``benchmarks/nngp.py``.
Reports R-hat and ESS of ``log s`` and the worst over the 10,000 latents ``f``, warnings,
mean gradient steps per iteration and wall time (compilation and the mode search included).

Run::

    PYTHONPATH=. .venv/bin/python benchmarks/nngp_digits_defaults.py [seed] [student_t|burr_xii]

Writes ``benchmarks/results/nngp_digits_defaults_<seed>.json`` for the Student-t prior and
``nngp_digits_defaults_burr_xii_<seed>.json`` for Burr XII (about 45 minutes on 2 CPU
cores).
"""

import json
import sys
import time
import warnings
from pathlib import Path

import jax
import numpy as np

# benchmarks/nngp.py: a script's own folder is first on sys.path.
from nngp import classifier_convergence, digits_split

from probinfer import nngp
from probinfer.bench import machine_description

x, labels, train, _, _ = digits_split()
kernel = nngp.mlp(2, weight_variance=2.0, bias_variance=0.1)
SCALE_PRIORS = {"student_t": nngp.inverse_gamma(2.0, 2.0), "burr_xii": nngp.burr_xii(2.0, 1.0, 1.0)}
seed = int(sys.argv[1]) if len(sys.argv) > 1 else 0
prior_name = sys.argv[2] if len(sys.argv) > 2 else "student_t"
if prior_name not in SCALE_PRIORS:
    raise SystemExit(f"the prior must be one of {sorted(SCALE_PRIORS)}, got {prior_name!r}")
start = time.perf_counter()
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    posterior = nngp.sample_classifier(
        jax.random.key(seed), kernel, x[train], labels[train],
        scale_prior=SCALE_PRIORS[prior_name], progress=True,
    )  # fmt: skip
    jax.block_until_ready(posterior.log_scales)
row = {
    "seed": seed,
    "scale_prior": prior_name,
    "seconds": time.perf_counter() - start,
    **classifier_convergence(posterior),
    "warnings": [str(w.message)[:300] for w in caught],
    "mean_log_scale": float(np.mean(posterior.log_scales)),
    # Likelihood (= gradient) evaluations per kept iteration, averaged over chains and draws.
    "n_steps": float(posterior.idata["sample_stats"]["n_steps"].values.mean()),
}
print(json.dumps(row))
row["machine"] = machine_description()
suffix = "" if prior_name == "student_t" else f"{prior_name}_"
result_path = Path(f"benchmarks/results/nngp_digits_defaults_{suffix}{seed}.json")
result_path.write_text(json.dumps(row, indent=1))
