"""Two ``jax.distributed`` processes on this machine's CPU give the one-process results.

``tests/_multihost.py`` is launched twice (process 0 and 1, a coordinator on a free local
port, 2 emulated devices each) and once alone (4 emulated devices). Both processes must
get the whole results (records and draws gathered across processes), equal to each other
bit for bit; MCMC chains split over the 4 devices (checkpointed by process 0 into a shared
folder, then loaded from it when finished) and SMC (run whole in each process) equal the
one-process run bit for bit; the population step's ESS, a reduction across processes,
agrees to float32 rounding (its sums run in another order: measured 1.4e-6 absolute on
values near 8). Processes that find different progress in their checkpoint folders (not a
shared folder) all stop with an error that says so, instead of waiting for each other; so
do processes starting a run in folders that are not shared, and all processes when
process 0 fails to write a checkpoint.
"""

import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # three fresh processes (imports, compilation)

SCRIPT = Path(__file__).with_name("_multihost.py")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("localhost", 0))
        return probe.getsockname()[1]


def _launch(out: Path, *arguments: str) -> subprocess.Popen:
    environment = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    return subprocess.Popen(
        [sys.executable, str(SCRIPT), str(out), *arguments],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=environment,
    )  # fmt: skip


def _launch_two(tmp_path: Path, *folders: Path) -> list[subprocess.Popen]:
    """Processes 0 and 1 of one run, with these checkpoint folders."""
    port = str(_free_port())
    return [
        _launch(tmp_path / f"process-{i}.npz", "--processes", "2", "--process-id", str(i),
                "--port", port, "--checkpoint", str(folder))
        for i, folder in enumerate(folders)
    ]  # fmt: skip


def _wait(process: subprocess.Popen) -> str:
    """The process's output once it ends (killed after 10 minutes: a hang fails)."""
    try:
        return process.communicate(timeout=600)[0]
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def _finish(process: subprocess.Popen) -> str:
    output = _wait(process)
    assert process.returncode == 0, output[-3000:]
    return output


def test_two_processes_give_the_one_process_results(tmp_path):
    processes = _launch_two(tmp_path, tmp_path / "shared-run", tmp_path / "shared-run")
    outputs = [_finish(process) for process in processes]
    for i, output in enumerate(outputs):
        assert f"process {i} of 2: done" in output
    _finish(_launch(tmp_path / "reference.npz", "--checkpoint", str(tmp_path / "reference-run")))
    first, second, reference = (
        np.load(tmp_path / name) for name in ("process-0.npz", "process-1.npz", "reference.npz")
    )
    for name in reference.files:
        np.testing.assert_array_equal(first[name], second[name], err_msg=name)
    for name in ("draws", "loaded_draws", "step_size", "log_z"):
        np.testing.assert_array_equal(first[name], reference[name], err_msg=name)
    assert first["draws"].shape == (4, 50, 3)
    np.testing.assert_allclose(first["ess"], reference["ess"], rtol=1e-6, atol=0)


def test_processes_with_different_checkpoints_stop_with_the_reason(tmp_path):
    """Process 0 finds a finished run in its folder, process 1 an empty one."""
    finished, empty = tmp_path / "finished", tmp_path / "empty"
    _finish(_launch(tmp_path / "reference.npz", "--checkpoint", str(tmp_path / "reference")))
    shutil.copytree(tmp_path / "reference", finished)
    processes = _launch_two(tmp_path, finished, empty)
    for process in processes:
        output = _wait(process)
        assert process.returncode != 0
        assert "found different progress in the checkpoint folder" in output, output[-3000:]


def test_a_fresh_run_in_folders_that_are_not_shared_stops_at_once(tmp_path):
    """Two empty folders (the same path on two machines without a shared file system):
    every process stops at the start, naming process 1, which cannot see process 0's
    file, instead of a checkpoint that only process 0 could resume."""
    processes = _launch_two(tmp_path, tmp_path / "machine-0", tmp_path / "machine-1")
    for process in processes:
        output = _wait(process)
        assert process.returncode != 0
        assert "is not shared: process(es) [1] do not see" in output, output[-3000:]
    assert not (tmp_path / "machine-0" / "warmup" / "progress.npz").exists()  # no chunk ran


def test_a_failed_checkpoint_write_stops_every_process(tmp_path):
    """Process 0's second write fails (a full disk, simulated): process 0 raises its
    OSError and process 1 stops too, naming the folder, instead of waiting for process 0 at
    the next collective. The first chunk's checkpoint is left whole: the same command
    resumes mid-run on both processes and ends with the uninterrupted draws."""
    shared = tmp_path / "shared-run"
    port = str(_free_port())
    processes = [
        _launch(tmp_path / f"process-{i}.npz", "--processes", "2", "--process-id", str(i),
                "--port", port, "--checkpoint", str(shared), "--fail-writes")
        for i in range(2)
    ]  # fmt: skip
    first, second = (_wait(process) for process in processes)
    assert processes[0].returncode != 0 and "No space left on device (simulated)" in first, first[
        -3000:
    ]
    assert processes[1].returncode != 0, second[-3000:]
    assert f"process 0 could not write into the checkpoint folder {shared}" in second, second[
        -3000:
    ]
    assert (shared / "warmup" / "progress.npz").exists()
    # The same command resumes mid-run on both processes, to the uninterrupted draws.
    outputs = [_finish(process) for process in _launch_two(tmp_path, shared, shared)]
    assert all(f"process {i} of 2: done" in output for i, output in enumerate(outputs))
    _finish(_launch(tmp_path / "reference.npz", "--checkpoint", str(tmp_path / "reference-run")))
    reference = np.load(tmp_path / "reference.npz")
    for i in range(2):
        resumed = np.load(tmp_path / f"process-{i}.npz")
        np.testing.assert_array_equal(resumed["draws"], reference["draws"])
        assert resumed["chains_chunks"] < reference["chains_chunks"]  # resumed, not rerun
