"""The PFN benchmark's table code (``benchmarks/pfn.py``, hours of NUTS per run, so its
table functions are tested on the committed results): they render as committed, ``--add``
refuses rows that would not make one table with a run's and keeps the others in order."""

import copy
import json
import re
from pathlib import Path

import pytest
from _benchmarks import load_benchmark

ROOT = Path(__file__).parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MIXED = RESULTS / "pfn_hyper_mixed"
MIXED_MODEL = ROOT / "probinfer" / "amortize" / "pretrained" / "gp_hyper_mixed"


@pytest.fixture(scope="module")
def pfn_benchmark():
    return load_benchmark("pfn")


def saved(folder: Path) -> dict:
    return json.loads((folder / "pfn_hyper.json").read_text())


def cell_of(row: dict) -> tuple[int, int]:
    return row["num_features"], row["num_train"]


@pytest.mark.parametrize(
    "folder", ["pfn_hyper_mixed", "pfn_hyper_mixed_100", ".", "pfn_scale_free"]
)
def test_committed_results_render_as_committed(pfn_benchmark, folder):
    """Each committed ``pfn_hyper.md`` is its ``pfn_hyper.json`` rendered by today's code
    (a change to the table code shows here, and ``--markdown-only`` rewrites them)."""
    result = saved(RESULTS / folder)
    assert pfn_benchmark.markdown_hyper(result) == (RESULTS / folder / "pfn_hyper.md").read_text()


def test_add_refuses_rows_that_would_not_make_one_table(pfn_benchmark, monkeypatch):
    monkeypatch.chdir(ROOT)  # a saved model path is relative to the repository
    result = saved(MIXED)
    cpu = result["machine"]["cpu"]
    monkeypatch.setattr(pfn_benchmark, "machine_description", lambda: {"cpu": cpu})
    pfn_benchmark.check_addable(result, MIXED_MODEL, result["num_datasets"])  # the same
    with pytest.raises(SystemExit, match="datasets per cell: 30 saved, 40 now"):
        pfn_benchmark.check_addable(result, MIXED_MODEL, 40)
    monkeypatch.setattr(pfn_benchmark, "machine_description", lambda: {"cpu": "another CPU"})
    with pytest.raises(SystemExit, match=re.escape(f"machine: '{cpu}' saved, 'another CPU'")):
        pfn_benchmark.check_addable(result, MIXED_MODEL, result["num_datasets"])
    monkeypatch.setattr(pfn_benchmark, "machine_description", lambda: {"cpu": cpu})
    other_model = {**result, "model_sha256": "0" * 16}
    with pytest.raises(SystemExit, match="model: '0000000000000000' saved"):
        pfn_benchmark.check_addable(other_model, MIXED_MODEL, result["num_datasets"])


def test_add_keeps_the_saved_rows_a_run_lacks_in_order(pfn_benchmark):
    """A run of one cell keeps every other saved row as saved, each naming the commit that
    measured it (a row saved before rows named theirs: the saved result's); the run's own
    cell replaces the saved one; a row with no converged reference (accuracy None) renders."""
    old = saved(MIXED)
    unnamed = next(r for r in old["rows"] if cell_of(r) == (1, 5))
    del unnamed["commits"]  # as rows saved before they named their commit
    cell = copy.deepcopy(next(r for r in old["rows"] if cell_of(r) == (2, 20)))
    del cell["commits"]  # measured at the run's commit
    cell.update(pfn_benchmark._accuracy_fields([]), nuts_unconverged=old["num_datasets"])
    run = {**copy.deepcopy(old), "rows": [cell], "machine": {**old["machine"], "commit": "abc1234"}}
    run.pop("note")
    merged = pfn_benchmark._with_saved_rows(run, old)
    cells = [cell_of(r) for r in merged["rows"]]
    assert cells == sorted(cell_of(r) for r in old["rows"])
    replaced = merged["rows"][cells.index((2, 20))]
    assert replaced["gap"] is None and "commits" not in replaced  # the run's own row
    kept = {cell_of(r): r for r in merged["rows"] if cell_of(r) != (2, 20)}
    assert kept[1, 5]["commits"] == [old["machine"]["commit"]]
    for row in old["rows"]:
        if cell_of(row) != (2, 20):
            assert {**row, "commits": kept[cell_of(row)]["commits"]} == kept[cell_of(row)]
            assert kept[cell_of(row)]["commits"] == row.get("commits", kept[1, 5]["commits"])
    assert merged["note"] == old["note"]
    table = pfn_benchmark.markdown_hyper(merged)
    assert "| 2 | 20 | no converged reference |" in table
    assert "| abc1234 |" in table and "| 6def545 |" in table  # each row's commit
