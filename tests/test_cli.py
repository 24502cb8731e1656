"""The `probinfer` command line: `sample` writes NetCDF; bad inputs exit with a message."""

import json

import arviz as az

from probinfer import cli

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
