"""The benchmarks' record log (``benchmarks/records.py``): a killed long run resumes from
its finished units, never from another setting's or a damaged file."""

import json

import pytest

from benchmarks.records import RecordLog

SETTINGS = {"model": "m", "num_datasets": 3}


def test_records_survive_reopening_and_a_cut_last_line_runs_again(tmp_path):
    path = tmp_path / "log.jsonl"
    log = RecordLog(path, SETTINGS)
    log.add(RecordLog.key(1, 5, 0), {"gap": 0.1})
    log.add(RecordLog.key(1, 5, 1), {"gap": float("nan")})
    reopened = RecordLog(path, SETTINGS)
    assert reopened.get("1/5/0") == {"gap": 0.1} and reopened.get("1/5/2") is None
    assert reopened.get("1/5/1")["gap"] != reopened.get("1/5/1")["gap"]  # NaN kept
    with open(path, "a") as file:  # a kill in the middle of a write
        file.write('{"key": "1/5/2", "rec')
    with pytest.warns(UserWarning, match="cut short"):
        cut = RecordLog(path, SETTINGS)
    assert cut.get("1/5/2") is None and cut.get("1/5/0") == {"gap": 0.1}
    cut.add("1/5/2", {"gap": 0.3})  # on a line of its own
    assert RecordLog(path, SETTINGS).get("1/5/2") == {"gap": 0.3}


def test_other_settings_a_damaged_file_or_fresh(tmp_path):
    path = tmp_path / "log.jsonl"
    RecordLog(path, SETTINGS).add("a", 1)
    with pytest.raises(SystemExit, match=r"num_datasets: 3 on file, 4 now.*--fresh"):
        RecordLog(path, {**SETTINGS, "num_datasets": 4})
    assert RecordLog(path, {**SETTINGS, "num_datasets": 4}, fresh=True).get("a") is None
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage", json.dumps({"key": "b", "record": 2})]))
    with pytest.raises(SystemExit, match="line 2: not a record"):
        RecordLog(path, {**SETTINGS, "num_datasets": 4})
    path.write_text("not json\n")
    with pytest.raises(SystemExit, match="no settings header"):
        RecordLog(path, SETTINGS)
