"""What `pip install probinfer` puts on a user's path: the `probinfer` package alone."""

import os
import subprocess
import sys
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_the_wheel_ships_probinfer_alone_with_its_data(tmp_path):
    """The wheel's top level is `probinfer` and its metadata: no `models`, `tests` or
    `benchmarks` package to shadow a user's own; the zoo's references, the shipped models
    and the command ride inside the package."""
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
             "--quiet", "--wheel-dir", str(tmp_path), str(ROOT)]  # fmt: skip
    result = subprocess.run(build, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (wheel,) = tmp_path.glob("probinfer-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {name.split("/")[0] for name in names}
    assert top_level == {"probinfer", wheel.name.split("-py")[0] + ".dist-info"}, top_level
    assert not [name for name in names if name.endswith(".pth")]
    for shipped in (
        "probinfer/zoo/references/gp_poisson.json",
        "probinfer/amortize/pretrained/gp_rbf/model.eqx",
        "probinfer/amortize/pretrained/dt_linear_gaussian_2d/model.eqx",
    ):
        assert shipped in names, shipped
    entry_points = next(name for name in names if name.endswith("entry_points.txt"))
    assert "probinfer = probinfer.cli:main" in zipfile.ZipFile(wheel).read(entry_points).decode()


def test_only_probinfer_is_importable_outside_the_source_tree(tmp_path):
    """From another folder, the installed environment (editable, as `make test` installs
    it, or a wheel) resolves `probinfer` and none of the repository's other folders
    (another distribution's own top-level `docs`, as BlackJAX's wheel ships, is not ours
    to police)."""
    code = (
        "import importlib.util as u\n"
        "for name in ('probinfer', 'models', 'tests', 'benchmarks', 'docs'):\n"
        "    spec = u.find_spec(name)\n"
        "    places = [] if spec is None else list(spec.submodule_search_locations or [])\n"
        "    print(name, *places, sep='|')\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}  # the install alone
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, cwd=tmp_path, timeout=60,
        env=env,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    found = {line.split("|")[0]: line.split("|")[1:] for line in result.stdout.splitlines()}
    assert found["probinfer"], found  # this tree (editable) or site-packages (a wheel)

    def in_the_source_tree(place: str) -> bool:  # the venv may live in the tree too
        return Path(place).is_relative_to(ROOT) and not Path(place).is_relative_to(sys.prefix)

    from_here = {
        name: places
        for name, places in found.items()
        if name != "probinfer" and any(in_the_source_tree(p) for p in places)
    }
    assert not from_here, from_here


def test_the_gpu_check_refuses_to_run_without_a_gpu(tmp_path):
    """``benchmarks/gpu_check.sh`` (run in full on a GPU, or with ``--allow-cpu`` and the
    CPU sizes of its header: 157 s on this CPU) names the device and stops, saying how to
    get a GPU build, when JAX sees none; it runs nothing else."""
    script = Path(__file__).parents[1] / "benchmarks" / "gpu_check.sh"
    environment = {**os.environ, "PYTHON": sys.executable, "OUT": str(tmp_path)}
    environment.pop("XLA_FLAGS", None)
    environment["JAX_PLATFORMS"] = "cpu"  # on a GPU machine too: the refusal is the point
    result = subprocess.run(
        ["bash", str(script)], capture_output=True, text=True, env=environment, timeout=120
    )
    assert result.returncode == 2, result.stderr
    assert "JAX sees no GPU (backend: cpu)" in result.stderr
    assert "jax[cuda12]" in result.stderr
    assert (tmp_path / "device.txt").read_text().startswith("device: cpu")
    assert sorted(path.name for path in tmp_path.iterdir()) == ["device.txt"]
