"""Peak host memory of a long run: 4 chains x 100,000 draws x 100 dimensions.

Without a progress bar the driver keeps draws on the device until 64 MiB of them are
held (``DEVICE_RECORDS_BYTES``), then copies them into host arrays allocated once for the
whole run; the run diagnostics work on blocks of components. So the peak resident memory
added by the run should stay within a small multiple of the size of the draws. This
script measures the increase of peak RSS (``ru_maxrss``) during ``pi.sample`` and compares
it with the size of the returned draws.

With ``--thin k`` the chains run ``k`` transitions per kept draw and keep only every
``k``-th, so the memory is that of the kept draws (written to ``memory-thin{k}.json``).

Run: ``python benchmarks/memory.py [--draws 100000] [--dim 100] [--chains 4] [--thin 1]``.
"""

import argparse
import json
import resource
from pathlib import Path

import jax.numpy as jnp

import probinfer as pi
from probinfer.bench import machine_description


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--draws", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--method", default="rwm")
    parser.add_argument("--thin", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results")
    arguments = parser.parse_args()

    scales = jnp.linspace(0.5, 2.0, arguments.dim)
    target = pi.LogDensity(lambda x: -0.5 * jnp.sum((x / scales) ** 2), jnp.zeros(arguments.dim))
    # Compile and touch everything once on a short run, so the baseline includes JAX itself.
    pi.sample(
        target,
        method=arguments.method,
        chains=arguments.chains,
        warmup=100,
        draws=100,
        thin=arguments.thin,
        progress=False,
    )
    baseline = peak_rss_bytes()
    idata = pi.sample(
        target,
        method=arguments.method,
        chains=arguments.chains,
        warmup=100,
        draws=arguments.draws,
        thin=arguments.thin,
        progress=False,
    )
    peak = peak_rss_bytes()
    draws_bytes = idata.posterior["x"].values.nbytes
    stats_bytes = sum(v.values.nbytes for v in idata.sample_stats.data_vars.values())
    result = {
        "machine": machine_description(),
        "chains": arguments.chains,
        "draws": arguments.draws,
        "dim": arguments.dim,
        "method": arguments.method,
        "thin": arguments.thin,
        "transitions_per_chain": arguments.draws * arguments.thin,
        "draws_mb": draws_bytes / 2**20,
        "sample_stats_mb": stats_bytes / 2**20,
        "peak_rss_increase_mb": (peak - baseline) / 2**20,
        "ratio_to_output": (peak - baseline) / (draws_bytes + stats_bytes),
    }
    print(json.dumps(result, indent=2))
    out = Path(arguments.out)
    out.mkdir(parents=True, exist_ok=True)
    name = "memory.json" if arguments.thin == 1 else f"memory-thin{arguments.thin}.json"
    (out / name).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
