"""A long run's memory is bounded by what it keeps.

4 chains x 200,000 draws of a 100-d Gaussian, thinned to every 20th (10,000 kept per
chain): the peak resident memory grows by less than ``BOUND_MIB`` over a short run of the
same program, while the unthinned draws alone would take 305 MiB. The run's transitions
never sit in memory together: each chunk keeps only its thinned records, streamed to the
host between chunks, and the run diagnostics work on blocks of components (about 25 MiB
each, ``CONVERGENCE_BLOCK_VALUES``). Measured: 45 MiB (with blocks of 2**20 values, as
before, the diagnostics alone took 95 MiB and the test failed at 153 MiB). Measured in a
fresh process, since the peak RSS of the test process only ever grows.
"""

import json
import subprocess
import sys

DIM, CHAINS, DRAWS, THIN = 100, 4, 10_000, 20
BOUND_MIB = 100  # the kept draws: 15 MiB; unthinned: 305 MiB

SCRIPT = f"""
import json, resource, warnings
import jax.numpy as jnp
import probinfer as pi

warnings.simplefilter("ignore")
target = pi.LogDensity(
    lambda x: -0.5 * jnp.sum((x / jnp.linspace(0.5, 2.0, {DIM})) ** 2), jnp.zeros({DIM})
)
settings = dict(method="rwm", chains={CHAINS}, warmup=100, thin={THIN}, progress=False)
pi.sample(target, draws=100, **settings)  # the same programs, compiled and run once
before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
idata = pi.sample(target, draws={DRAWS}, **settings)
after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({{
    "increase_mib": (after - before) / 1024,
    "draws_shape": list(idata.posterior["x"].shape),
    "kept_mib": idata.posterior["x"].values.nbytes / 2**20,
    "transitions": int(idata.attrs["thin"]) * {DRAWS},
}}))
"""


def test_a_thinned_run_of_800000_transitions_stays_within_its_memory_bound():
    result = subprocess.run(
        [sys.executable, "-c", SCRIPT], capture_output=True, text=True, check=True, timeout=600
    )
    measured = json.loads(result.stdout.strip().splitlines()[-1])
    assert measured["draws_shape"] == [CHAINS, DRAWS, DIM]
    assert measured["transitions"] == DRAWS * THIN
    unthinned_mib = CHAINS * DRAWS * THIN * DIM * 4 / 2**20
    assert measured["kept_mib"] < BOUND_MIB < unthinned_mib
    assert measured["increase_mib"] < BOUND_MIB, measured
