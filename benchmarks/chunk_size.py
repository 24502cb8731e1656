"""Does the chunk size matter when no progress bar is shown? NUTS wall time against it.

Run::

    .venv/bin/python benchmarks/chunk_size.py [--repeats 10]

``pi.sample`` runs its steps in chunks (``probinfer.run.choose_chunk_size``: about 20 per
phase, 16 to 256 steps); without a progress bar or a checkpoint the draws stay on the
device between chunks, so a chunk costs one dispatch. For eight schools and logistic
regression (4 chains, 1,000 + 1,000, defaults) this times the warm-up and sampling phases
and the whole call with the default chunks and with the largest (256), the two
alternating per seed, and checks that the draws are the same. Prints medians.
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

import probinfer as pi
from probinfer import zoo
from probinfer.run import CHUNK_ROWS, choose_chunk_size

MODELS = ("eight_schools_noncentered", "logistic_regression")


def run(name: str, chunk: int, seed: int) -> tuple[float, float, dict[str, np.ndarray]]:
    """Seconds of the two phases, of the whole call, and the draws."""
    zoo_model = zoo.get(name)
    args, kwargs = zoo_model.data()
    start = time.perf_counter()
    idata = pi.sample(zoo_model.model, *args, chains=4, warmup=1000, draws=1000, seed=seed,
                      progress=False, chunk_size=chunk, **kwargs)  # fmt: skip
    wall = time.perf_counter() - start
    phases = idata.attrs["warmup_seconds"] + idata.attrs["sampling_seconds"]
    return phases, wall, {v: idata.posterior[v].values for v in idata.posterior}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=10)
    options = parser.parse_args()
    warnings.simplefilter("ignore")  # timing, not diagnostics
    chunks = (choose_chunk_size(1000, 1000), CHUNK_ROWS)
    for name in MODELS:
        draws = [run(name, chunk, 99)[2] for chunk in chunks]  # compiles
        same = all(np.array_equal(draws[0][v], draws[1][v]) for v in draws[0])
        times: dict[int, list[tuple[float, float]]] = {chunk: [] for chunk in chunks}
        for seed in range(options.repeats):
            for chunk in chunks:
                times[chunk].append(run(name, chunk, seed)[:2])
        for chunk in chunks:
            phases, wall = np.median(np.array(times[chunk]), axis=0)
            print(f"{name}: chunks of {chunk:>3} steps: warm-up + sampling {phases:.4f} s, "
                  f"whole call {wall:.4f} s; same draws for both sizes: {same}")  # fmt: skip


if __name__ == "__main__":
    main()
