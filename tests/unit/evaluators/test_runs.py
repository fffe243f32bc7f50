"""Evaluating runs written by different spectra versions warns once, naming each run's version."""

import json

import pytest
from structlog.testing import capture_logs

from engine.records import ProblemRecord, TrackRecord
from engine.run.store import MANIFEST_FILE, RECORDS_FILE, append_record
from evaluators.evaluate import main
from evaluators.runs import load_runs, version_difference


def write_run(folder, version: str | None, shard: dict | None = None):
    folder.mkdir(parents=True)
    manifest = {"run_id": folder.name, "mode": "spec", "dataset": "d", "config_digest": "c", "shard": shard}
    if version is not None:
        manifest["versions"] = {"spectra": version, "python": "3.11.7"}
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    track = TrackRecord(track_id=0, policy="spec", answer="4", finish_reason="answer")
    record = ProblemRecord(
        run_id=folder.name, dataset="d", problem_id="p", repeat_id=0, runner="spec", problem="2+2",
        reference_answer="4", tracks=[track], answer="4",
    )  # fmt: skip
    append_record(folder / RECORDS_FILE, record)
    return folder


@pytest.mark.parametrize(
    ("versions", "note"),
    [
        ({"a": "0.2.0", "b": "0.1.0"}, "a 0.2.0, b 0.1.0"),
        ({"a": "0.2.0", "b": None}, "a 0.2.0, b none"),
        ({"a": None, "b": None}, "a none, b none"),
        ({"a": "0.2.0", "b": "0.2.0"}, None),
        ({"a": "0.1.0"}, None),
    ],
)
def test_the_version_difference_names_each_run(versions, note):
    assert version_difference(versions) == note


def version_warnings(capsys, *folders) -> list[str]:
    """The version warnings on stderr of evaluating `folders`."""
    assert main([*map(str, folders), "--bootstrap", "10"]) == 0
    return [line for line in capsys.readouterr().err.splitlines() if "versions_differ" in line]


def test_evaluate_warns_once_on_stderr_when_the_runs_compared_are_of_different_versions(tmp_path, capsys):
    new, old = write_run(tmp_path / "new", "0.2.0"), write_run(tmp_path / "old", None)
    (warning,) = version_warnings(capsys, new, old)
    assert "spectra_versions_differ" in warning and "versions='new 0.2.0, old none'" in warning
    same = write_run(tmp_path / "same", "0.2.0")
    assert version_warnings(capsys, new, same) == []


def test_shards_of_one_run_written_by_different_versions_are_warned_about(tmp_path):
    first = write_run(tmp_path / "r-shard-1-of-2", "0.1.0", {"index": 1, "count": 2})
    second = write_run(tmp_path / "r-shard-2-of-2", "0.2.0", {"index": 2, "count": 2})
    with capture_logs() as logs:
        (run,) = load_runs([first, second])
    (warning,) = [e for e in logs if e["event"] == "shard_versions_differ"]
    assert warning["versions"] == f"{first} 0.1.0, {second} 0.2.0" and run.name == "r"
