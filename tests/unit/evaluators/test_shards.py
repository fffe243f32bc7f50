"""The shard folders of one run (`--shard I/N`) are evaluated as one run; folders of other configs are refused."""

import json
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from engine.errors import UsageError
from engine.run.store import MANIFEST_FILE, RECORDS_FILE
from evaluators import summary
from evaluators.evaluate import main
from evaluators.runs import load_runs
from tests.unit.evaluators.test_evaluate import baseline_records, spec_records, write_run


def write_shard(folder: Path, records, index: int, count: int, *, digest: str = "spec-digest", mode: str = "spec"):
    """A shard folder as `--shard index/count` leaves it: its manifest names the shard and the config digest."""
    write_run(folder, records, mode=mode)
    manifest = json.loads((folder / MANIFEST_FILE).read_text())
    manifest.update(config_digest=digest, shard={"index": index, "count": count})
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    return folder


def split(records, count: int) -> list[list]:
    """Round-robin over the work list, as engine.run.execute.Shard does."""
    return [records[i::count] for i in range(count)]


def sharded(root: Path, records, count: int, *, name: str = "spec", **kwargs) -> list[Path]:
    return [
        write_shard(root / f"{name}-shard-{i}-of-{count}", part, i, count, **kwargs)
        for i, part in enumerate(split(records, count), start=1)
    ]


def accuracy(run) -> float:
    return summary.summarize_run(run, summary.grade_run(run)).accuracy


def test_shard_folders_named_together_are_one_run_with_every_record(tmp_path):
    whole = write_run(tmp_path / "whole", spec_records(), mode="spec")
    folders = sharded(tmp_path / "results", spec_records(), 3)

    (run,) = load_runs(folders)

    assert run.name == "spec" and run.path == tmp_path / "results" / "spec"
    assert sorted(r.key for r in run.records) == sorted(r.key for r in spec_records())
    assert [s["index"] for s in run.manifest["shards"]] == [1, 2, 3]
    (alone,) = load_runs([whole])
    assert accuracy(run) == accuracy(alone) == 0.75


def test_a_folder_holding_shard_folders_is_one_run(tmp_path):
    parent = tmp_path / "spec-on-4-nodes"
    for i, part in enumerate(split(spec_records(), 2), start=1):
        write_shard(parent / f"node{i}", part, i, 2)  # folders named by the user: no -shard- suffix
    (run,) = load_runs([parent])
    assert run.name == "spec-on-4-nodes" and len(run.records) == 4
    assert accuracy(run) == 0.75


def test_two_sharded_runs_are_compared_like_two_runs(tmp_path, capsys):
    spec = sharded(tmp_path, spec_records(), 2)
    base = sharded(tmp_path, baseline_records(), 2, name="base", digest="base-digest", mode="big")
    assert main([*map(str, spec), *map(str, base), "--baseline", "base", "--json", "-"]) == 0
    data = json.loads(capsys.readouterr().out)
    assert [(r["name"], r["records"]) for r in data["runs"]] == [("spec", 4), ("base", 5)]
    assert data["baseline"] == "base" and len(data["comparisons"]) == 1
    assert data["runs"][0]["accuracy"] == 0.75


def test_a_missing_shard_is_named_and_its_records_left_out(tmp_path):
    folders = sharded(tmp_path, spec_records(), 2)
    with capture_logs() as logs:
        (run,) = load_runs(folders[1:])
    assert len(run.records) == 2
    (warning,) = [e for e in logs if e["event"] == "shards_missing"]
    assert (warning["missing"], warning["count"]) == ([1], 2)


def test_a_shard_without_records_yet_counts_as_empty(tmp_path):
    folders = sharded(tmp_path, spec_records(), 2)
    (folders[0] / RECORDS_FILE).unlink()
    (run,) = load_runs(folders)
    assert len(run.records) == 2


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda m: m.update(config_digest="other-digest"), "hold runs of different configs (digest spec-digest, "),
        (lambda m: m.update(shard={"index": 2, "count": 4}), "is one of 3 shards and"),
        (lambda m: m.update(shard={"index": 1, "count": 3}), "are both shard 1/3"),
    ],
)
def test_shards_of_different_configs_or_splits_are_refused_with_one_line(tmp_path, capsys, change, message):
    folders = sharded(tmp_path, spec_records(), 3)
    manifest = json.loads((folders[1] / MANIFEST_FILE).read_text())
    change(manifest)
    (folders[1] / MANIFEST_FILE).write_text(json.dumps(manifest))
    with pytest.raises(UsageError, match=message.replace("(", r"\(")):
        load_runs(folders)
    assert main([str(f) for f in folders]) == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert message in line and str(folders[0]) in line and str(folders[1]) in line


def test_a_parent_folder_of_shards_of_different_configs_is_refused(tmp_path, capsys):
    parent = tmp_path / "mixed"
    write_shard(parent / "a", spec_records()[:2], 1, 2)
    write_shard(parent / "b", spec_records()[2:], 2, 2, digest="other-digest")
    assert main([str(parent)]) == 2
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("error: ")]
    assert "hold runs of different configs" in line and str(parent / "b") in line
