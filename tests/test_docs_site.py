"""The documentation site builds (``make docs``): mkdocs in strict mode, with every example
of every page executed by ``docs/hooks/execute_examples.py``. A failing example, a broken
link or an API reference that does not resolve fails the build, and so this test."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_site_builds_with_every_example_executed(tmp_path):
    site = tmp_path / "site"
    completed = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(site)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert completed.returncode == 0, completed.stderr[-5000:]
    workflow = (site / "workflow" / "index.html").read_text()
    assert 'class="filename">Output</span>' in workflow  # the examples' output blocks
    assert "elpd_loo" in workflow  # az.loo's printed result
    assert workflow.count("data:image/png;base64,") >= 3  # trace, ppc, prior ppc figures
    assert (site / "reference" / "mcmc" / "index.html").read_text().count("nuts") > 0
