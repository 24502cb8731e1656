"""The benchmarks' record log (``benchmarks/records.py``): a killed long run resumes from
its finished units, never from another setting's or a damaged file."""

import json

import pytest
from _benchmarks import load_benchmark

records = load_benchmark("records")
RecordLog = records.RecordLog

SETTINGS = {"model": "m", "num_datasets": 3}


def test_records_survive_reopening_and_a_cut_last_line_runs_again(tmp_path):
    path = tmp_path / "log.jsonl"
    log = RecordLog(path, SETTINGS)
    log.add(RecordLog.key(1, 5, 0), {"gap": 0.1})
    log.add(RecordLog.key(1, 5, 1), {"gap": float("nan")})
    with pytest.raises(SystemExit, match="in use by another run"):
        RecordLog(path, SETTINGS)  # while `log` holds it
    log.close()
    with pytest.raises(RuntimeError, match="was closed"):
        log.add("1/5/9", {})
    reopened = RecordLog(path, SETTINGS)
    assert reopened.get("1/5/0") == {"gap": 0.1} and reopened.get("1/5/2") is None
    assert reopened.get("1/5/1")["gap"] != reopened.get("1/5/1")["gap"]  # NaN kept
    reopened.close()
    with open(path, "a") as file:  # a kill in the middle of a write
        file.write('{"key": "1/5/2", "rec')
    with pytest.warns(UserWarning, match="cut short"):
        cut = RecordLog(path, SETTINGS)
    assert cut.get("1/5/2") is None and cut.get("1/5/0") == {"gap": 0.1}
    cut.add("1/5/2", {"gap": 0.3})  # on a line of its own
    cut.close()
    path.write_text(path.read_text().rstrip("\n"))  # a whole last line, its newline lost
    unended = RecordLog(path, SETTINGS)
    unended.add("1/5/3", {"gap": 0.4})
    unended.close()
    assert RecordLog(path, SETTINGS).records == {
        "1/5/0": {"gap": 0.1}, "1/5/1": pytest.approx({"gap": float("nan")}, nan_ok=True),
        "1/5/2": {"gap": 0.3}, "1/5/3": {"gap": 0.4},
    }  # fmt: skip


def test_other_settings_a_damaged_file_or_fresh(tmp_path):
    path = tmp_path / "log.jsonl"
    first = RecordLog(path, SETTINGS)
    first.add("a", 1)
    first.close()
    with pytest.raises(SystemExit, match=r"num_datasets: 3 on file, 4 now.*--fresh"):
        RecordLog(path, {**SETTINGS, "num_datasets": 4})
    assert RecordLog(path, {**SETTINGS, "num_datasets": 4}, fresh=True).get("a") is None
    lines = path.read_text().splitlines()
    path.write_text("\n".join([lines[0], "garbage", json.dumps({"key": "b", "record": 2})]))
    with pytest.raises(SystemExit, match="line 2: not a record"):
        RecordLog(path, {**SETTINGS, "num_datasets": 4})
    for text in ("not json\n", '{"settings": [1]}\n'):
        path.write_text(text)
        with pytest.raises(SystemExit, match="no settings header"):
            RecordLog(path, SETTINGS)
