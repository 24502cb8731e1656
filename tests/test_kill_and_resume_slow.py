"""SIGKILL mid-run, resume with the same command, get exactly the uninterrupted result.

Each case runs ``tests/_kill_and_resume.py`` in fresh processes: once uninterrupted (the
reference), once killed by SIGKILL after a few chunks (or inside a checkpoint's atomic
write, between writing the temporary file and renaming it), then again with the same
command and folder, which must run fewer chunks than the whole (it resumed: a restart
gives the same draws) and finish with draws (and ``log_z``) bit-identical to the
reference. NUTS through ``pi.sample``, SMC and nested sampling through ``pi.evidence``,
PFN and distribution-transformer training through ``amortize.train`` and
``amortize.train_dt`` (the trained model's arrays bit-identical).
"""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

pytestmark = pytest.mark.slow  # three fresh processes per case (imports, compilation)

SCRIPT = Path(__file__).with_name("_kill_and_resume.py")


def _run(*arguments: str) -> subprocess.CompletedProcess:
    # One device and the user's defaults: not the suite's four fake devices.
    environment = {key: value for key, value in os.environ.items() if key != "XLA_FLAGS"}
    return subprocess.run(
        [sys.executable, str(SCRIPT), *arguments],
        capture_output=True, text=True, timeout=600, env=environment,
    )  # fmt: skip


def _chunks(run: subprocess.CompletedProcess) -> int:
    return int(run.stdout.rsplit("chunks=", 1)[1])


@pytest.mark.parametrize(
    ("method", "kill"),
    [
        ("nuts", ["--kill-after-chunks", "6"]),  # in sampling (4 warm-up chunks of 50)
        ("nuts", ["--kill-after-chunks", "4", "--kill-in-write"]),
        ("smc", ["--kill-after-chunks", "2"]),
        ("ns", ["--kill-after-chunks", "4"]),
        ("pfn", ["--kill-after-chunks", "3"]),  # of 6 chunks of 10 training steps
        ("pfn", ["--kill-after-chunks", "3", "--kill-in-write"]),
        ("dt", ["--kill-after-chunks", "3"]),  # of 6 chunks of 10 training steps
        ("dt", ["--kill-after-chunks", "3", "--kill-in-write"]),
    ],
    ids=["nuts", "nuts-in-write", "smc", "ns", "pfn", "pfn-in-write", "dt", "dt-in-write"],
)
def test_killed_run_resumes_to_the_uninterrupted_result(tmp_path, method, kill):
    reference = _run(method, str(tmp_path / "reference"), str(tmp_path / "reference.npz"))
    assert reference.returncode == 0, reference.stderr[-2000:]
    folder, out = str(tmp_path / "run"), str(tmp_path / "run.npz")
    killed = _run(method, folder, out, *kill)
    assert killed.returncode == -signal.SIGKILL, killed.stderr[-2000:]
    assert not Path(out).exists() and any(p.is_file() for p in Path(folder).rglob("*"))
    if "--kill-in-write" in kill:
        assert any(Path(folder).rglob("*.tmp"))  # the interrupted write's leftover
    resumed = _run(method, folder, out)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    # It resumed (a restart would give the same draws, with as many chunks as the whole).
    assert _chunks(resumed) < _chunks(reference), (resumed.stdout, reference.stdout)
    with np.load(tmp_path / "reference.npz") as expected, np.load(out) as got:
        assert sorted(got.files) == sorted(expected.files)
        for name in expected.files:
            np.testing.assert_array_equal(got[name], expected[name], err_msg=name)
