"""Peak memory of long runs: host RSS (and device memory where the backend reports it).

Without a progress bar the driver keeps draws on the device until 64 MiB of them are
held (``DEVICE_RECORDS_BYTES``), then copies them into host arrays allocated once for the
whole run; the run diagnostics work on blocks of components. So the peak resident memory
added by the run should stay within a small multiple of the size of the draws. One
measurement is the increase of peak RSS (``ru_maxrss``) during ``pi.sample`` over a short
run of the same programs, compared with the size of the returned draws and statistics;
on a backend that reports device memory (GPUs: ``Device.memory_stats()``), the device's
peak bytes in use too.

With ``--thin k`` the chains run ``k`` transitions per kept draw and keep only every
``k``-th, so the memory is that of the kept draws (written to ``memory-thin{k}.json``).
With ``--grid`` each combination of ``--grid-chains``, ``--grid-draws`` and ``--grid-dims``
is measured in a fresh process (peak RSS only grows within a process), and the table of
peak memory against chains x draws x dimension is written to ``memory_grid.{json,md}``.

Run: ``python benchmarks/memory.py [--draws 100000] [--dim 100] [--chains 4] [--thin 1]``
or ``python benchmarks/memory.py --grid``.
"""

import argparse
import itertools
import json
import resource
import subprocess
import sys
from pathlib import Path
from typing import Any

MIB = 2**20


def peak_rss_bytes() -> int:
    """Peak resident set size of this process so far (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def device_peak_bytes() -> int | None:
    """The default device's peak bytes in use, where the backend reports it (not CPUs)."""
    import jax

    stats = jax.devices()[0].memory_stats()
    return None if not stats else stats.get("peak_bytes_in_use")


def measure(chains: int, draws: int, dim: int, method: str, thin: int) -> dict[str, Any]:
    """Peak memory added by one ``pi.sample`` run of a ``dim``-d Gaussian."""
    import jax.numpy as jnp

    import probinfer as pi

    scales = jnp.linspace(0.5, 2.0, dim)
    target = pi.LogDensity(lambda x: -0.5 * jnp.sum((x / scales) ** 2), jnp.zeros(dim))
    run = {"method": method, "chains": chains, "warmup": 100, "thin": thin, "progress": False}
    # Compile and touch everything once on a short run, so the baseline includes JAX itself.
    pi.sample(target, draws=100, **run)
    baseline, device_baseline = peak_rss_bytes(), device_peak_bytes()
    idata = pi.sample(target, draws=draws, **run)
    peak, device_peak = peak_rss_bytes(), device_peak_bytes()
    draws_bytes = idata.posterior["x"].values.nbytes
    stats_bytes = sum(v.values.nbytes for v in idata.sample_stats.data_vars.values())
    return {
        "chains": chains,
        "draws": draws,
        "dim": dim,
        "method": method,
        "thin": thin,
        "transitions_per_chain": draws * thin,
        "draws_mb": draws_bytes / MIB,
        "sample_stats_mb": stats_bytes / MIB,
        "peak_rss_increase_mb": (peak - baseline) / MIB,
        "ratio_to_output": (peak - baseline) / (draws_bytes + stats_bytes),
        "device_peak_mb": None if device_peak is None else device_peak / MIB,
        "device_peak_increase_mb": (
            None if device_peak is None else (device_peak - device_baseline) / MIB
        ),
    }


def grid(arguments: argparse.Namespace) -> list[dict[str, Any]]:
    """One fresh process per combination; its result is its last line of output."""
    rows = []
    counts = [[int(c) for c in text.split(",")] for text in
              (arguments.grid_chains, arguments.grid_draws, arguments.grid_dims)]  # fmt: skip
    for chains, draws, dim in itertools.product(*counts):
        command = [sys.executable, __file__, "--chains", str(chains), "--draws", str(draws),
                   "--dim", str(dim), "--method", arguments.method, "--print-only"]  # fmt: skip
        output = subprocess.run(command, capture_output=True, text=True, check=True).stdout
        row = json.loads(output.strip().splitlines()[-1])
        rows.append(row)
        print(f"chains {chains:>4} draws {draws:>7} dim {dim:>4}: draws {row['draws_mb']:8.1f} "
              f"MiB, peak RSS +{row['peak_rss_increase_mb']:8.1f} MiB "
              f"({row['ratio_to_output']:.2f}x)", flush=True)  # fmt: skip
    return rows


def grid_table(rows: list[dict[str, Any]], machine: dict[str, Any]) -> str:
    lines = [
        "# Peak memory against chains x draws x dimension",
        "",
        f"Machine: {machine['cpu']} ({machine['cores']} cores), backend {machine['backend']}, "
        f"jax {machine['jax']}, probinfer at commit {machine['commit']}, {machine['date']}. "
        f"Method: `benchmarks/memory.py --grid` (its docstring); {rows[0]['method'].upper()} "
        "on a Gaussian, float32, no progress bar, no thinning, one fresh process per row.",
        "",
        "| chains | draws | dimension | draws + stats (MiB) | peak RSS increase (MiB) | "
        "ratio | device peak increase (MiB) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        device = row["device_peak_increase_mb"]
        lines.append(
            f"| {row['chains']} | {row['draws']:,} | {row['dim']} | "
            f"{row['draws_mb'] + row['sample_stats_mb']:,.1f} | "
            f"{row['peak_rss_increase_mb']:,.1f} | {row['ratio_to_output']:.2f} | "
            f"{'n/a (host)' if device is None else f'{device:,.1f}'} |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--draws", type=int, default=100_000)
    parser.add_argument("--dim", type=int, default=100)
    parser.add_argument("--chains", type=int, default=4)
    parser.add_argument("--method", default="rwm")
    parser.add_argument("--thin", type=int, default=1)
    parser.add_argument("--out", default="benchmarks/results")
    parser.add_argument("--grid", action="store_true", help="measure the grid below")
    parser.add_argument("--grid-chains", default="4,16,64")
    parser.add_argument("--grid-draws", default="10000,50000")
    parser.add_argument("--grid-dims", default="10,100")
    parser.add_argument("--print-only", action="store_true", help=argparse.SUPPRESS)
    arguments = parser.parse_args()
    from probinfer.bench import machine_description

    out = Path(arguments.out)
    if arguments.grid:
        rows = grid(arguments)
        machine = machine_description()
        out.mkdir(parents=True, exist_ok=True)
        (out / "memory_grid.json").write_text(
            json.dumps({"machine": machine, "rows": rows}, indent=1) + "\n"
        )
        (out / "memory_grid.md").write_text(grid_table(rows, machine))
        return
    result = measure(arguments.chains, arguments.draws, arguments.dim, arguments.method,
                     arguments.thin)  # fmt: skip
    if arguments.print_only:
        print(json.dumps(result))
        return
    result = {"machine": machine_description(), **result}
    print(json.dumps(result, indent=2))
    out.mkdir(parents=True, exist_ok=True)
    name = "memory.json" if arguments.thin == 1 else f"memory-thin{arguments.thin}.json"
    (out / name).write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
