"""The `probinfer` command line: `sample` writes NetCDF; bad inputs exit with a message."""

import json
import math
from pathlib import Path

import arviz as az
import pytest

from probinfer import cli

MODEL = """
import numpyro
import numpyro.distributions as dist

def model(y, scale):
    mu = numpyro.sample("mu", dist.Normal(0.0, scale))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
"""


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 4 x 50 draws
def test_sample_writes_netcdf(tmp_path):
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "data.json").write_text(json.dumps({"y": [0.5, 1.5, 1.0], "scale": 10.0}))
    out = tmp_path / "posterior.nc"
    status = cli.main(
        [
            "sample",
            str(tmp_path / "model.py"),
            "--data",
            str(tmp_path / "data.json"),
            "--warmup",
            "100",
            "--draws",
            "50",
            "--quiet",
            "--out",
            str(out),
        ]
    )
    assert status == 0
    assert az.from_netcdf(str(out)).posterior["mu"].shape == (4, 50)


@pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")  # 4 x 50 draws
def test_a_failed_netcdf_write_leaves_no_file(tmp_path, monkeypatch, capsys):
    """The NetCDF file is written under a temporary name and renamed: a write that fails
    part-way (here after writing some bytes) leaves neither ``--out`` nor the temporary."""
    (tmp_path / "model.py").write_text(MODEL)
    (tmp_path / "data.json").write_text(json.dumps({"y": [0.5, 1.5, 1.0], "scale": 10.0}))
    out = tmp_path / "posterior.nc"

    def half_written(self, path, *args, **kwargs):
        Path(path).write_bytes(b"CDF\x01 half")
        raise OSError("disk full")

    monkeypatch.setattr(az.InferenceData, "to_netcdf", half_written)
    arguments = ["sample", str(tmp_path / "model.py"), "--data", str(tmp_path / "data.json"),
                 "--warmup", "100", "--draws", "50", "--quiet", "--out", str(out)]  # fmt: skip
    assert cli.main(arguments) == 2
    assert "disk full" in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.glob("*.tmp")) == []


def test_sample_names_a_missing_model_function(tmp_path, capsys):
    (tmp_path / "model.py").write_text(MODEL)
    status = cli.main(["sample", str(tmp_path / "model.py"), "--model-name", "other"])
    assert status == 2
    assert "defines no function `other`" in capsys.readouterr().err
    (tmp_path / "model.txt").write_text(MODEL)
    assert cli.main(["sample", str(tmp_path / "model.txt")]) == 2
    assert "is not a Python file" in capsys.readouterr().err


def test_pfn_train_then_predict(tmp_path, capsys):
    config = {
        "prior": {"type": "gp", "kernel": "rbf", "lengthscale": 0.4, "num_features": 2},
        "training": {"num_steps": 20, "batch_size": 4, "max_train": 8, "num_test": 4,
                     "num_buckets": 16, "width": 16, "num_layers": 1, "num_heads": 2,
                     "mlp_width": 16, "steps_per_chunk": 10},
    }  # fmt: skip
    (tmp_path / "config.json").write_text(json.dumps(config))
    folder = tmp_path / "run"
    args = ["pfn", "train", "--config", str(tmp_path / "config.json"), "--out", str(folder)]
    assert cli.main([*args, "--quiet"]) == 0
    assert (folder / "model.eqx").exists()
    assert len(json.loads((folder / "training_curve.json").read_text())["loss"]) == 20
    data = {"x_train": [[0.1, 0.2], [-0.5, 0.3]], "y_train": [0.3, -0.2],
            "x_test": [[0.0, 0.0]], "y_test": [0.1]}  # fmt: skip
    (tmp_path / "data.json").write_text(json.dumps(data))
    out = tmp_path / "pred.json"
    predict = ["pfn", "predict", "--data", str(tmp_path / "data.json"), "--model", str(folder)]
    status = cli.main([*predict, "--out", str(out)])
    assert status == 0
    result = json.loads(out.read_text())
    assert set(result) == {"mean", "stddev", "quantiles", "log_prob"}
    assert len(result["mean"]) == 1
    # Refitting the tails (another seed) rewrites them in config.json, weights untouched.
    saved = json.loads((folder / "config.json").read_text())
    weights = (folder / "model.eqx").read_bytes()
    assert cli.main(["pfn", "fit-tails", "--model", str(folder), "--seed", "1"]) == 0
    assert "left tail: shape" in capsys.readouterr().out
    refitted = json.loads((folder / "config.json").read_text())
    assert refitted["tails"] != saved["tails"] and (folder / "model.eqx").read_bytes() == weights
    assert {**refitted, "tails": saved["tails"]} == saved
    # A tail too heavy for a finite variance: stddev is null in valid JSON, and said.
    (folder / "config.json").write_text(json.dumps({**saved, "tails": [[0.7, 0.3]] * 2}))
    assert cli.main([*predict, "--out", str(out)]) == 0
    assert "infinite (written as null)" in capsys.readouterr().out
    heavy = json.loads(out.read_text(), parse_constant=lambda name: pytest.fail(name))
    assert heavy["stddev"] == [None] and math.isfinite(heavy["mean"][0])
    # Bad input: more features than the model knows, and a bad config, exit with status 2.
    data["x_test"] = [[0.0, 0.0, 0.0]]
    (tmp_path / "data.json").write_text(json.dumps(data))
    assert cli.main(["pfn", "predict", "--data", str(tmp_path / "data.json"), "--model",
                     str(folder)]) == 2  # fmt: skip
    assert "at most 2" in capsys.readouterr().err
    (tmp_path / "bad.json").write_text(json.dumps({"training": {}}))
    assert cli.main(["pfn", "train", "--config", str(tmp_path / "bad.json"), "--out",
                     str(tmp_path / "bad")]) == 2  # fmt: skip


def test_user_errors_are_one_line_with_exit_2_and_debug_shows_the_traceback(tmp_path, capsys):
    """`sample` without `--data` calls the model without its arguments: the model's own
    TypeError becomes one line on stderr, exit 2; `--debug` raises it instead."""
    (tmp_path / "model.py").write_text(MODEL)
    arguments = ["sample", str(tmp_path / "model.py"), "--quiet"]
    assert cli.main(arguments) == 2
    error = capsys.readouterr().err
    assert "Traceback" not in error and "TypeError" in error and "--debug" in error
    assert len(error.strip().splitlines()) == 1, error
    with pytest.raises(TypeError):
        cli.main(["--debug", *arguments])


def test_version(capsys):
    from probinfer import __version__

    with pytest.raises(SystemExit) as exit_info:
        cli.main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"probinfer {__version__}"


def test_help_list_and_argument_errors_do_not_import_jax():
    """`--help` (of every command), `--version`, `pfn list` and argument errors return
    without importing JAX (a fresh process: this one has imported it)."""
    import subprocess
    import sys

    code = """
import contextlib, io, sys
from probinfer import cli
for argv in (["--help"], ["sample", "--help"], ["pfn", "predict", "--help"],
             ["dt", "posterior", "--help"], ["--version"], ["sample"], ["pfn", "list"],
             ["dt", "list"]):
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        try:
            cli.main(argv)
        except SystemExit:
            pass
print("jax imported:", "jax" in sys.modules)
"""
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "jax imported: False"


def _help_files(epilog: str) -> dict[str, str]:
    """The example files shown in a help epilog: ``name:`` then indented lines."""
    files, name = {}, None
    for line in epilog.splitlines():
        if line.endswith((".json:", ".py:")) and not line.startswith(" "):
            name = line[:-1]
            files[name] = ""
        elif name is not None and (line.startswith("  ") or not line.strip()):
            files[name] += line[2:] + "\n"
        else:
            name = None
    return files


def test_help_examples_are_valid(tmp_path, capsys):
    """Every example file shown by `--help` is valid: the JSON configs build, the model
    file defines `model`, and the `pfn predict` and `dt posterior` examples run."""
    from probinfer import amortize

    files = {command: _help_files(epilog) for command, (_, epilog) in cli._HELP.items()}
    assert sum(len(found) for found in files.values()) == 5, files
    namespace: dict = {}
    exec(files["sample"]["model.py"], namespace)
    assert callable(namespace["model"])
    gp = json.loads(files["pfn train"]["gp.json"])
    amortize.prior_from_spec(gp["prior"])
    amortize.TrainingConfig(**gp["training"])
    task = json.loads(files["dt train"]["task.json"])
    amortize.task_from_spec(task["task"])
    amortize.DTTrainingConfig(**task["training"])
    for command, name in (("pfn predict", "data.json"), ("dt posterior", "prior_and_data.json")):
        (tmp_path / name).write_text(files[command][name])
        out = tmp_path / f"{name}.out"
        assert cli.main([*command.split(), "--data", str(tmp_path / name), "--out", str(out)]) == 0
        assert json.loads(out.read_text())["mean"]


def test_shipped_models_by_short_name(tmp_path, capsys):
    """`pfn list` / `dt list` name the shipped models; `--model` takes those names; a name
    of the other family or an unknown one is a one-line error naming the way out."""
    assert cli.main(["pfn", "list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ("gp-scale-free", "gp-rbf", "gp-hyper", "student-t"))
    assert "dt-2d" not in listed
    assert cli.main(["dt", "list"]) == 0
    listed = capsys.readouterr().out
    assert "dt-2d" in listed and "dt-1d" in listed and "gp-rbf" not in listed
    data = {"x_train": [[0.1], [0.5], [-0.3], [0.8], [-0.6]],
            "y_train": [0.3, -0.2, 0.5, -0.4, 0.1], "x_test": [[0.3], [0.2]]}  # fmt: skip
    (tmp_path / "data.json").write_text(json.dumps(data))
    predict = ["pfn", "predict", "--data", str(tmp_path / "data.json")]
    out = tmp_path / "hyper.json"
    assert cli.main([*predict, "--model", "gp-hyper", "--out", str(out)]) == 0
    hyper = json.loads(out.read_text())["mean"]
    assert cli.main([*predict, "--out", str(out)]) == 0  # the default, gp-scale-free
    assert len(hyper) == 2 and hyper != json.loads(out.read_text())["mean"]
    capsys.readouterr()
    assert cli.main([*predict, "--model", "dt-2d"]) == 2
    assert "probinfer dt" in capsys.readouterr().err
    assert cli.main([*predict, "--model", "gp-nope"]) == 2
    assert "probinfer pfn list" in capsys.readouterr().err


@pytest.mark.filterwarnings("always::UserWarning")
def test_warnings_print_as_messages(tmp_path, capsys):
    """A warning shows its message, not the source line that raised it."""
    data = {"x_train": [[0.1], [0.5], [-0.3], [0.8], [-0.6]],
            "y_train": [0.3, -0.2, 0.5, -0.4, 0.1], "x_test": [[3.0]]}  # fmt: skip
    (tmp_path / "data.json").write_text(json.dumps(data))
    assert cli.main(["pfn", "predict", "--data", str(tmp_path / "data.json")]) == 0
    error = capsys.readouterr().err
    assert error.startswith("warning: "), error
    assert ".py:" not in error and "UserWarning" not in error
