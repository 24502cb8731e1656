"""One checkpointed run in a fresh process, optionally killed by SIGKILL part-way.

Usage (``tests/test_kill_and_resume_slow.py`` drives it)::

    python tests/_kill_and_resume.py METHOD FOLDER OUT [--kill-after-chunks N]
        [--kill-in-write]

Runs ``METHOD`` ("nuts", "smc" or "ns") on a fixed model with ``checkpoint=FOLDER`` and
writes its draws (and ``log_z``) to ``OUT`` (``.npz``), or ("pfn", "dt") trains a small
PFN on a GP prior (a distribution transformer on a linear-Gaussian task) with
``checkpoint_dir=FOLDER`` and writes the trained model's arrays; and
prints the number of chunks it ran to stdout. With ``--kill-after-chunks N`` the
process sends itself SIGKILL when the driver is about to run chunk ``N + 1``, after chunk
``N``'s checkpoint is on disk: no cleanup, no ``atexit``, as a machine that loses the
process. With ``--kill-in-write`` as well, the kill comes inside that checkpoint's atomic
write instead, after its temporary file is written and before the rename. A kill is
deterministic, so the test needs no timing.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import warnings
from pathlib import Path

import numpy as np
import numpyro
import numpyro.distributions as dist

import probinfer as pi

DATA = np.linspace(-1.0, 2.0, 20)
SETTINGS = {
    "nuts": {"chains": 2, "warmup": 200, "draws": 300, "chunk_size": 50},
    "smc": {"particles": 400, "replicas": 2, "chunk_size": 1},
    "ns": {"live_points": 200, "chunk_size": 5},
    "pfn": {"num_steps": 60, "steps_per_chunk": 10, "batch_size": 16, "max_train": 10,
            "num_test": 6, "num_buckets": 32, "width": 32, "num_layers": 2, "num_heads": 2,
            "mlp_width": 64, "warmup_steps": 20},
    "dt": {"num_steps": 60, "steps_per_chunk": 10, "batch_size": 16, "width": 16,
           "num_layers": 1, "num_heads": 2, "mlp_width": 16, "warmup_steps": 5},
}  # fmt: skip


def model(y):
    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    sigma = numpyro.sample("sigma", dist.HalfNormal(2.0))
    numpyro.sample("y", dist.Normal(mu, sigma), obs=y)


CALLS = {"chunks": 0}
"""Chunks this process ran: a resumed run prints fewer than a whole one."""


def count_chunks(
    after_chunks: int | None = None, in_write: bool = False, folder: str | None = None
) -> None:
    """Count the driver's chunks (in ``CALLS``); kill the process after ``after_chunks``
    of them, or with ``in_write`` inside the checkpoint write into ``folder`` that follows
    chunk ``after_chunks``."""
    from probinfer import checkpoint
    from probinfer.driver import _drive

    original_dispatch = _drive._dispatch

    def dispatch(*args):
        CALLS["chunks"] += 1
        if after_chunks is not None and CALLS["chunks"] > after_chunks and not in_write:
            os.kill(os.getpid(), signal.SIGKILL)
        return original_dispatch(*args)

    _drive._dispatch = dispatch
    if after_chunks is not None and in_write:
        original_replace = os.replace

        def replace(source, destination):
            # `os` is shared by every module: only renames into the checkpoint count, and
            # not a training curve's (written first): the kill is in the state's write.
            into_checkpoint = str(os.path.abspath(destination)).startswith(str(folder))
            into_checkpoint &= os.path.basename(destination) != "training_curve.json"
            if into_checkpoint and CALLS["chunks"] >= after_chunks:
                os.kill(os.getpid(), signal.SIGKILL)  # the temporary file is written
            original_replace(source, destination)

        checkpoint.os.replace = replace


def _save_model_and_curve(model, folder: str, out: str) -> None:
    """The trained model's arrays and the run's training curve (every step's loss)."""
    import equinox as eqx
    import jax

    from probinfer import amortize

    leaves = jax.tree.leaves(eqx.filter(model, eqx.is_array))
    curve = json.loads((Path(folder) / amortize.CURVE_FILE).read_text())
    np.savez(out, **{f"leaf_{i}": np.asarray(leaf) for i, leaf in enumerate(leaves)},
             curve=np.asarray(curve["loss"]), curve_first_step=curve["first_step"])  # fmt: skip


def _train_pfn(folder: str, out: str) -> None:
    from probinfer import amortize, nngp

    prior = amortize.GPPrior(nngp.rbf(0.3), 0.01, num_features=1)
    config = amortize.TrainingConfig(**SETTINGS["pfn"], seed=3)
    model, _ = amortize.train(prior, config, checkpoint_dir=folder, progress=False)
    _save_model_and_curve(model, folder, out)
    print(f"chunks={CALLS['chunks']}")


def _train_dt(folder: str, out: str) -> None:
    from probinfer import amortize

    task = amortize.LinearGaussianTask(1, max_components=2, max_observations=4)
    config = amortize.DTTrainingConfig(**SETTINGS["dt"], seed=3)
    model, _ = amortize.train_dt(task, config, checkpoint_dir=folder, progress=False)
    _save_model_and_curve(model, folder, out)
    print(f"chunks={CALLS['chunks']}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("method", choices=sorted(SETTINGS))
    parser.add_argument("folder")
    parser.add_argument("out")
    parser.add_argument("--kill-after-chunks", type=int)
    parser.add_argument("--kill-in-write", action="store_true")
    options = parser.parse_args()
    count_chunks(options.kill_after_chunks, options.kill_in_write,
                 os.path.abspath(options.folder))  # fmt: skip
    warnings.simplefilter("ignore")  # short runs: their run checks are not the point
    if options.method in ("pfn", "dt"):
        {"pfn": _train_pfn, "dt": _train_dt}[options.method](options.folder, options.out)
        return
    settings = {**SETTINGS[options.method], "seed": 3, "progress": False}
    if options.method == "nuts":
        idata = pi.sample(model, DATA, checkpoint=options.folder, **settings)
        log_z = np.nan
    else:
        result = pi.evidence(model, DATA, method=options.method, checkpoint=options.folder,
                             **settings)  # fmt: skip
        idata, log_z = result.idata, result.log_z
    posterior = idata["posterior"]
    np.savez(options.out, mu=posterior["mu"].values, sigma=posterior["sigma"].values,
             log_z=np.asarray(log_z))  # fmt: skip
    print(f"chunks={CALLS['chunks']}")


if __name__ == "__main__":
    main()
