"""The `probinfer` command line: `sample` writes NetCDF; bad inputs exit with a message."""

import json

import arviz as az
import pytest

from probinfer import cli

# Deliberately short runs: what these tests check is bookkeeping, not the quality of the
# draws, so the run diagnostics (R-hat, ESS, divergences) are expected and silenced.
pytestmark = pytest.mark.filterwarnings("ignore::probinfer.diagnostics.SamplingWarning")

MODEL = """
import numpyro
import numpyro.distributions as dist

def model(y, scale):
    mu = numpyro.sample("mu", dist.Normal(0.0, scale))
    numpyro.sample("y", dist.Normal(mu, 1.0), obs=y)
"""


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


def test_sample_names_a_missing_model_function(tmp_path, capsys):
    (tmp_path / "model.py").write_text(MODEL)
    status = cli.main(["sample", str(tmp_path / "model.py"), "--model-name", "other"])
    assert status == 2
    assert "defines no function `other`" in capsys.readouterr().out
    (tmp_path / "model.txt").write_text(MODEL)
    assert cli.main(["sample", str(tmp_path / "model.txt")]) == 2
    assert "is not a Python file" in capsys.readouterr().out


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
    data = {"x_train": [[0.1, 0.2], [-0.5, 0.3]], "y_train": [0.3, -0.2],
            "x_test": [[0.0, 0.0]], "y_test": [0.1]}  # fmt: skip
    (tmp_path / "data.json").write_text(json.dumps(data))
    out = tmp_path / "pred.json"
    status = cli.main(
        ["pfn", "predict", "--data", str(tmp_path / "data.json"), "--model", str(folder),
         "--out", str(out)]
    )  # fmt: skip
    assert status == 0
    result = json.loads(out.read_text())
    assert set(result) == {"mean", "stddev", "quantiles", "log_prob"}
    assert len(result["mean"]) == 1
    # Bad input: more features than the model knows, and a bad config, exit with status 2.
    data["x_test"] = [[0.0, 0.0, 0.0]]
    (tmp_path / "data.json").write_text(json.dumps(data))
    assert cli.main(["pfn", "predict", "--data", str(tmp_path / "data.json"), "--model",
                     str(folder)]) == 2  # fmt: skip
    assert "at most 2" in capsys.readouterr().out
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
