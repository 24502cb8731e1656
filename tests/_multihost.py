"""One process of a two-process ``jax.distributed`` run on this machine's CPU.

Usage (``tests/test_multihost_slow.py`` drives it)::

    python tests/_multihost.py OUT --checkpoint FOLDER --processes 2 --process-id I --port P
    python tests/_multihost.py OUT --checkpoint FOLDER   # one process, the reference

Each process emulates 2 CPU devices, so two processes have 4 devices between them, as one
process with 4 emulated devices has. The runs: a population step on a mesh over all
devices (``drive(..., mesh=...)``, its reduction across processes), MCMC chains split over
all devices (``pi.sample(chain_method="parallel-sequential")``, 4 chains, one per device,
checkpointed into ``FOLDER``, then loaded from the finished checkpoint) and tempered SMC
(``pi.evidence``, not split: each process runs it whole). Every process writes what it got
to ``OUT`` (``.npz``); the test compares the processes with each other and with the
one-process reference. With ``--fail-writes``, process 0's second checkpoint write fails
and the chains' run must stop on every process.
"""

from __future__ import annotations

import argparse
import os
import warnings

DEVICES_PER_PROCESS = {1: 4, 2: 2}  # 4 devices in all, in one process or two


def normal_mean(y):
    import numpyro
    import numpyro.distributions as dist

    mu = numpyro.sample("mu", dist.Normal(0.0, 10.0))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)


def _fail_second_write_on_process_zero() -> None:
    """Make process 0's second progress write raise, as a full disk would."""
    import jax

    from probinfer.driver import _drive

    if jax.process_index() != 0:
        return
    original, calls = _drive.save_progress, {"count": 0}

    def failing(*args, **kwargs):
        calls["count"] += 1
        if calls["count"] == 2:
            raise OSError(28, "No space left on device (simulated)")
        return original(*args, **kwargs)

    _drive.save_progress = failing


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("out")
    parser.add_argument("--processes", type=int, default=1)
    parser.add_argument("--process-id", type=int, default=0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--checkpoint", required=True, help="a folder every process reaches")
    parser.add_argument(
        "--fail-writes", action="store_true",
        help="process 0's second checkpoint write fails (a full disk): run the chains only",
    )  # fmt: skip
    arguments = parser.parse_args()
    devices = DEVICES_PER_PROCESS[arguments.processes]
    os.environ["XLA_FLAGS"] = f"--xla_force_host_platform_device_count={devices}"

    import jax

    if arguments.processes > 1:
        # The launch a cluster would do, with the coordinator on this machine.
        jax.distributed.initialize(
            coordinator_address=f"localhost:{arguments.port}",
            num_processes=arguments.processes,
            process_id=arguments.process_id,
        )
    import jax.numpy as jnp
    import numpy as np

    # This script's folder, tests/, is on the path.
    from _kill_and_resume import CALLS, count_chunks
    from _steps import reweight_step

    import probinfer as pi
    from probinfer.driver import drive

    assert jax.device_count() == 4 and jax.process_count() == arguments.processes
    warnings.simplefilter("ignore", pi.diagnostics.SamplingWarning)  # short runs

    mesh = jax.sharding.Mesh(np.asarray(jax.devices()), ("population",))
    population = drive(
        reweight_step, (jnp.linspace(-1.0, 1.0, 8), jnp.zeros(8)), jax.random.key(0),
        shared=jnp.asarray(0.3), num_steps=25, chunk_size=10, mesh=mesh, population_size=8,
    )  # fmt: skip
    target = pi.LogDensity(lambda x: -0.5 * jnp.sum((x / jnp.array([1.0, 2.0, 0.5])) ** 2),
                           jnp.zeros(3))  # fmt: skip
    settings = {
        "chains": 4,
        "warmup": 100,
        "draws": 50,
        "seed": 1,
        "progress": False,
        "chain_method": "parallel-sequential",
        "checkpoint": arguments.checkpoint,
    }
    if arguments.fail_writes:
        _fail_second_write_on_process_zero()
    count_chunks()
    chains = pi.sample(target, **settings)
    chains_chunks = CALLS["chunks"]  # a resumed run runs fewer than a whole one
    again = pi.sample(target, **settings)  # a finished run, loaded from its checkpoint
    smc = pi.evidence(
        normal_mean, jnp.array([0.3, -0.1, 0.8]), particles=200, replicas=2, seed=2,
        progress=False,
    )  # fmt: skip
    np.savez(
        arguments.out,
        ess=population.records["ess"],
        draws=chains.posterior["x"].values,
        loaded_draws=again.posterior["x"].values,
        step_size=chains.sample_stats["step_size"].values,
        log_z=np.asarray(smc.log_z),
        chains_chunks=chains_chunks,
    )
    print(f"process {jax.process_index()} of {jax.process_count()}: done", flush=True)


if __name__ == "__main__":
    main()
