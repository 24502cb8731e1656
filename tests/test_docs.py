"""Docs stay true: docstring examples run, public symbols are documented, README runs.

The guides' examples run twice in the slow suite: small here (with checks of their
results), at full size in the site build (tests/test_docs_site.py, every page's examples).
"""

import doctest
import importlib
import re
from pathlib import Path

import numpy as np
import pytest

import probinfer
from probinfer import amortize, mcmc, nngp

ROOT = Path(__file__).resolve().parents[1]
DOCTEST_MODULES = [
    "probinfer.model._logdensity",
    "probinfer.model._numpyro",
    "probinfer.model._target",
    "probinfer.api",
    "probinfer.mcmc._window_adaptation",
    "probinfer.mcmc._constrained",
    "probinfer.ns._nested",
    "probinfer.ns._evidence",
    "probinfer.ns._ellipsoid",
    "probinfer.model._unit_cube",
    "probinfer._predictive",
    "probinfer.driver._drive",
    "probinfer.nngp._layers",
    "probinfer.nngp._process",
    "probinfer.zoo",
]


def python_blocks(name: str) -> list[str]:
    """The python code blocks of a markdown file (README.md or docs/NAME)."""
    path = ROOT / name if name == "README.md" else ROOT / "docs" / name
    return re.findall(r"```python\n(.*?)```", path.read_text(), flags=re.DOTALL)


@pytest.mark.parametrize("module_name", DOCTEST_MODULES)
def test_docstring_examples_run(module_name):
    module = importlib.import_module(module_name)
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.attempted > 0, f"{module_name} has no docstring example"
    assert result.failed == 0


def test_every_public_symbol_is_documented():
    text = (ROOT / "README.md").read_text() + "".join(
        path.read_text() for path in sorted((ROOT / "docs").glob("*.md"))
    )
    public = (
        [f"pi.{name}" for name in probinfer.__all__]
        + list(mcmc.__all__)
        + [f"nngp.{name}" for name in nngp.__all__]
        + [f"amortize.{name}" for name in amortize.__all__]
    )
    missing = [name for name in public if name.split(".")[-1] not in text]
    assert not missing, f"not mentioned in README.md or docs/: {missing}"


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # tiny budgets
def test_readme_example_runs():
    blocks = python_blocks("README.md")
    assert blocks, "README has no python example"
    code = blocks[0].replace("seed=0)", "seed=0, warmup=100, draws=100, progress=False)")
    namespace: dict = {}
    exec(compile(code, "README.md", "exec"), namespace)
    assert namespace["idata"].posterior["mu"].shape == (4, 100)


def test_readme_nngp_example_runs():
    blocks = python_blocks("README.md")
    namespace: dict = {}
    exec(compile(blocks[2], "README.md", "exec"), namespace)
    predictive = namespace["predictive"]
    assert predictive.mean.shape == (2,)
    # The README states the fit: means within 0.005 of sin(2x), the truth inside the 90%
    # intervals (measured: errors ~1e-4, intervals +-0.005).
    truth = np.sin(2 * np.array([0.5, 1.5]))
    np.testing.assert_allclose(predictive.mean, truth, atol=0.005)
    assert np.all((predictive.quantile(0.05) < truth) & (truth < predictive.quantile(0.95)))


@pytest.mark.slow  # the site build (tests/test_docs_site.py) runs them at full size
@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # tiny budgets
def test_nngp_guide_examples_run():
    """Every python block of docs/nngp.md runs (the NUTS one at a tiny budget, on the
    first block's 50 points: the inducing-point block keeps its 3,000 to itself)."""
    blocks = python_blocks("nngp.md")
    assert len(blocks) == 4
    namespace: dict = {}
    for block in blocks:
        code = block.replace("warmup=300, draws=300", "warmup=20, draws=20")
        code = code.replace("num_steps=100", "num_steps=10")
        exec(compile(code, "docs/nngp.md", "exec"), namespace)
    assert namespace["idata"].posterior["s"].shape == (2, 20)
    assert namespace["idata"].observed_data["y"].shape == (50,)
    assert namespace["probabilities"].shape == (5, 2)


@pytest.mark.slow  # the site build (tests/test_docs_site.py) runs them at full size
def test_pfn_guide_examples_run(tmp_path, monkeypatch):
    """Every python block of docs/pfn.md runs (the pretrained models ship with the
    package): the scale-free model, the Student-t process model beside its exact
    predictive, the classifier beside NUTS, the list of shipped models and a tiny training
    run."""
    monkeypatch.chdir(tmp_path)
    blocks = python_blocks("pfn.md")
    assert len(blocks) == 5
    namespace: dict = {}
    for block in blocks:
        exec(
            compile(block.replace("num_steps=200", "num_steps=20"), "docs/pfn.md", "exec"),
            namespace,
        )
    assert namespace["predictive"].mean.shape == (200,)
    pfn, exact = namespace["pfn"], namespace["student_t"]
    np.testing.assert_allclose(pfn.mean, exact.mean, atol=0.1)
    np.testing.assert_allclose(pfn.stddev, exact.stddev, rtol=0.1)
    np.testing.assert_allclose(
        # Measured: largest difference 0.06 (0.68 against 0.72 ... 0.80 against 0.84).
        namespace["classes"].probabilities[:, 1],
        namespace["mcmc_p"][:, 1],
        atol=0.08,
    )
    assert namespace["losses"].shape == (20,)


@pytest.mark.slow  # the site build (tests/test_docs_site.py) runs them at full size
@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # tiny budgets
def test_user_guide_log_density_examples_run():
    """The plain-log-density blocks of docs/index.md run (at a tiny budget)."""
    text = (ROOT / "docs" / "index.md").read_text()
    section = text.split("## Plain log densities")[1].split("\n## ")[0]
    blocks = re.findall(r"```python\n(.*?)```", section, flags=re.DOTALL)
    assert len(blocks) == 2
    namespace: dict = {}
    for block in blocks:
        code = block.replace("seed=1)", "seed=1, warmup=50, draws=50, progress=False)")
        exec(compile(code, "docs/index.md", "exec"), namespace)
        assert namespace["idata"].posterior.sizes["draw"] == 50
    assert namespace["idata"].posterior["x"].shape == (4, 50, 2)


def test_driver_guide_example_runs():
    """The first python block of docs/driver.md runs (the multi-host one needs a cluster)."""
    blocks = python_blocks("driver.md")
    namespace: dict = {}
    exec(compile(blocks[0], "docs/driver.md", "exec"), namespace)
    assert namespace["result"].records.shape == (50,)


@pytest.mark.slow  # the site build (tests/test_docs_site.py) runs them at full size
def test_smc_guide_examples_run():
    """The python blocks of docs/smc.md run (at a small size)."""
    blocks = python_blocks("smc.md")
    assert len(blocks) == 3
    namespace: dict = {}
    for block in blocks:
        code = block.replace("particles=500", "particles=200").replace(
            "seed=", "progress=False, seed="
        )
        exec(compile(code, "docs/smc.md", "exec"), namespace)
    assert namespace["paths"].shape == (1000, 5)
    assert namespace["state"].theta.shape == ()


@pytest.mark.slow  # the site build (tests/test_docs_site.py) runs them at full size
def test_ns_guide_examples_run():
    """The python blocks of docs/ns.md run (at a small size; the last with the emulator)."""
    blocks = python_blocks("ns.md")
    assert len(blocks) == 3
    namespace: dict = {}
    for block in blocks:
        code = block.replace('method="ns"', 'method="ns", live_points=100, progress=False')
        exec(compile(code, "docs/ns.md", "exec"), namespace)
        result = namespace["result"]
        assert abs(result.log_z - (-1.328 if "model" in block else 0.0)) < 4 * result.log_z_err
