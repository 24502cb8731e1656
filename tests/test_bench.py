"""`probinfer bench`: failures it expects are listed with their reason; any other failure
sets the exit status."""

import json

import pytest

from probinfer import bench, cli


@pytest.fixture
def calls(monkeypatch):
    """The keywords of every `pi.sample` call the bench makes, in order."""
    from probinfer import api

    recorded = []
    real_sample = api.sample

    def recording_sample(*args, **kwargs):
        recorded.append(kwargs)
        return real_sample(*args, **kwargs)

    monkeypatch.setattr(api, "sample", recording_sample)
    return recorded


def test_expected_failures_are_listed_and_others_set_the_exit_status(tmp_path, capsys):
    """RWM on the centred funnel is expected to fail (exit 0, reason in the table); RWM on
    a conjugate model with 300 draws misses the ESS bar, which is unexpected (exit 1)."""
    settings = ["--methods", "rwm", "--chains", "2", "--warmup", "30", "--draws", "30"]
    out = tmp_path / "funnel"
    assert cli.main(["bench", "--models", "neals_funnel", *settings, "--out", str(out)]) == 0
    (row,) = json.loads((out / "bench.json").read_text())["rows"]
    assert (
        not row["passed"]
        and row["expected_failure"] == bench.EXPECTED_FAILURES[("neals_funnel", "rwm")]
    )
    assert "expected: " in (out / "bench.md").read_text()
    assert (out / "bench.png").stat().st_size > 0
    assert "1 of 1 runs expected to fail did" in capsys.readouterr().out

    out = tmp_path / "conjugate"
    assert cli.main(["bench", "--models", "normal_normal", *settings, "--out", str(out)]) == 1
    assert "unexpected failures: ['normal_normal/rwm']" in capsys.readouterr().out


def test_every_expected_failure_names_a_zoo_model_and_a_method():
    from probinfer import zoo

    for (model, method), reason in bench.EXPECTED_FAILURES.items():
        assert model in zoo.names() and method in bench.METHODS and reason


@pytest.mark.filterwarnings("ignore:invalid value:RuntimeWarning")  # ArviZ R-hat, 3 warm-up
def test_run_settings_reach_the_sampler_and_the_table(tmp_path, monkeypatch, calls):
    """A run listed in RUN_SETTINGS is sampled with its settings, which its row shows."""
    monkeypatch.setitem(bench.RUN_SETTINGS, ("normal_normal", "hmc"), {"target_acceptance": 0.3})
    rows = bench.run_bench(
        ["normal_normal"], ["hmc"], chains=2, warmup=3, draws=30, seed=0,
        out=tmp_path, echo=lambda line: None,
    )  # fmt: skip
    assert calls[0]["target_acceptance"] == 0.3
    assert rows[0]["steps"] == "3 + 30, target_acceptance=0.3"
    assert "3 + 30, target_acceptance=0.3" in (tmp_path / "bench.md").read_text()


def test_run_settings_name_zoo_mcmc_runs_and_sampler_settings():
    """Each entry names a zoo model and an MCMC method, and each key is one of
    `pi.sample`'s sampler settings and not one of the model's own keywords (where a
    misspelled setting would go unnoticed)."""
    from probinfer import api, zoo

    for (model, method), settings in bench.RUN_SETTINGS.items():
        assert model in zoo.names() and method in bench.MCMC_METHODS and settings
        assert (model, method) not in bench.EXPECTED_FAILURES
        _, model_kwargs = zoo.get(model).data()
        for key in settings:
            assert key in api.SAMPLER_SETTINGS and key not in model_kwargs


def test_matched_budget_spends_nuts_gradient_count():
    """MALA and RWM run as many sampling steps as NUTS took gradients (within one `thin`),
    and as many warm-up steps, keeping between `draws` and `2 * draws` draws."""
    for evaluations, warmup, draws in [(26_948 // 4, 9_000, 1000), (182_509 // 4, 60_000, 1000),
                                       (2_429, 3_100, 1000), (700, 2_000, 1000)]:  # fmt: skip
        run_warmup, kept, thin = bench.matched_budget(evaluations, warmup, draws)
        steps = max(evaluations, draws)
        assert steps - thin < kept * thin <= steps
        assert draws <= kept < 2 * draws
        assert run_warmup == warmup


def test_mala_gets_the_gradient_count_of_the_nuts_run_before_it(tmp_path, calls):
    """Listed after MALA, NUTS still runs first on each model, and MALA's warm-up and
    thinned draws come from NUTS's sampling gradient count, which its row states."""
    rows = bench.run_bench(
        ["normal_normal"], ["mala", "nuts"], chains=2, warmup=20, draws=10, seed=0,
        out=tmp_path, echo=lambda line: None,
    )  # fmt: skip
    assert [row["method"] for row in rows] == ["nuts", "mala"]
    expected = bench.matched_budget(
        rows[0]["num_grad_evals"] // 2, rows[0]["warmup_grad_evals"] // 2, 10
    )
    assert expected[0] > 20  # NUTS's warm-up took more than one gradient per step
    assert (calls[1]["warmup"], calls[1]["draws"], calls[1].get("thin", 1)) == expected
    assert rows[1]["num_grad_evals"] == 2 * expected[1] * expected[2]
    assert rows[1]["steps"] == (
        f"{expected[0]} + {expected[1] * expected[2]} (NUTS's gradients; thin {expected[2]})"
    )


def test_mala_asked_for_alone_still_gets_the_budget_of_a_nuts_run(tmp_path, calls):
    """Without NUTS among the methods, a NUTS run (not a row) sets MALA's budget."""
    rows = bench.run_bench(
        ["normal_normal"], ["mala"], chains=2, warmup=20, draws=10, seed=0,
        out=tmp_path, echo=lambda line: None,
    )  # fmt: skip
    assert [call["method"] for call in calls] == ["nuts", "mala"] and [
        row["method"] for row in rows
    ] == ["mala"]
    assert "(NUTS's gradients; thin" in rows[0]["steps"]
