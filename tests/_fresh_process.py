"""Running a snippet in a fresh one-device CPU process, as users run: for XLA:CPU deadlocks
that the suite's four fake devices (its ``XLA_FLAGS``) change the scheduling of."""

import os
import subprocess
import sys


def run_on_one_cpu_device(code: str, timeout: float) -> subprocess.CompletedProcess[str]:
    """Run ``python -c code`` without the suite's ``XLA_FLAGS``, on the CPU (the deadlocks
    are XLA:CPU's, so on a GPU machine too); a hang raises ``subprocess.TimeoutExpired``
    after ``timeout`` seconds."""
    env = {k: v for k, v in os.environ.items() if k != "XLA_FLAGS"}
    env["JAX_PLATFORMS"] = "cpu"
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout, env=env
    )
