"""Durable records: whole lines, damaged tails set aside, resumes that refuse a changed config."""

import json

import pytest

from engine.errors import UsageError
from engine.records import (
    FinishReason,
    ModelUsage,
    ProblemRecord,
    RequestCost,
    Role,
    StepEnding,
    StepOutcome,
    StepRecord,
    TrackRecord,
    thrown_away,
)
from engine.run.store import MANIFEST_FILE, RECORDS_FILE, RunStore, append_record, read_records


def record(problem_id="1", repeat_id=0):
    step = StepRecord(
        index=0,
        text="s",
        writer="small",
        tokens=3,
        score=8.0,
        score_distribution={"8": 1.0},
        usage={"small": ModelUsage(10, 3, 1)},
        outcome=StepOutcome.ACCEPTED,
    )
    track = TrackRecord(track_id=0, policy="spec", steps=[step], answer="4", usage={"small": ModelUsage(10, 3, 1)})
    return ProblemRecord(
        run_id="r",
        dataset="demo",
        problem_id=problem_id,
        repeat_id=repeat_id,
        runner="spec",
        problem="2+2?",
        reference_answer="4",
        tracks=[track],
        answer="4",
    )


def manifest(digest="abc"):
    return {"run_id": "new", "config_digest": digest}


def test_a_record_round_trips_through_its_json_line(tmp_path):
    path = tmp_path / RECORDS_FILE
    append_record(path, record())
    read = read_records(path)
    assert read.records == [record()] and not read.bad_lines and not read.partial_tail
    assert read.records[0].tracks[0].steps[0].accepted is True


def test_records_written_before_outcomes_and_strategies_read_as_they_meant(tmp_path):
    # A line as spectra wrote it before steps had an outcome and records named their strategy.
    old_step = {"index": 0, "text": "s", "writer": "small", "tokens": 3, "score": 8.0, "draft": None}
    rewritten = {**old_step, "index": 1, "writer": "big", "score": 2.0, "draft": "wrong"}
    unscored = {"index": 2, "text": "b", "writer": "big", "tokens": 4}
    spec = {**record().to_dict(), "tracks": [{"track_id": 0, "mode": "spec", "steps": [old_step, rewritten, unscored]}]}
    for key in ("strategy",):
        spec.pop(key)
    for step in spec["tracks"][0]["steps"]:
        step.pop("outcome", None)
    scored_tracks = [{"track_id": i, "mode": "dvts", "score": 0.5, "steps": []} for i in range(2)]
    search = {**spec, "problem_id": "2", "mode": "search", "tracks": scored_tracks}
    rast = {**spec, "problem_id": "3", "mode": "rast", "tracks": [{"track_id": 0, "mode": "rast"}]}
    path = tmp_path / RECORDS_FILE
    path.write_text("".join(json.dumps(line) + "\n" for line in (spec, search, rast)))
    records = read_records(path).records
    assert [s.outcome for s in records[0].tracks[0].steps] == [
        StepOutcome.ACCEPTED,
        StepOutcome.REWRITTEN,
        StepOutcome.WRITTEN,
    ]
    assert [s.accepted for s in records[0].tracks[0].steps] == [True, False, None]
    assert [r.strategy for r in records] == ["vote", "dvts", "rast"]


# Lines as version 1 wrote them: `mode` named the runner on the record, and on a track its policy,
# or, for a search's completions and RAST's sample, the strategy; no record_version, no costs.
VERSION_1 = [
    {"run_id": "r", "dataset": "d", "problem_id": "1", "repeat_id": 0, "mode": "split", "problem": "p",
     "reference_answer": "4", "strategy": "deepconf", "usage": {"small": {"prompt_tokens": 5, "completion_tokens": 2,
     "requests": 1}}, "tracks": [{"track_id": 0, "mode": "random_switch", "finish_reason": "answer", "steps": [
     {"index": 0, "text": "so 4", "writer": "small", "tokens": 2, "ending": "eos", "outcome": "written"}]}]},
    {"run_id": "r", "dataset": "d", "problem_id": "2", "repeat_id": 0, "mode": "search", "problem": "p",
     "reference_answer": "4", "tracks": [{"track_id": 0, "mode": "beam_search", "score": 0.5, "steps": []}]},
    {"run_id": "r", "dataset": "d", "problem_id": "3", "repeat_id": 0, "mode": "rast", "problem": "p",
     "reference_answer": "4", "tracks": [{"track_id": 0, "mode": "rast", "finish_reason": "eos"}]},
]  # fmt: skip


def test_version_1_lines_read_back_with_runner_policy_and_strategy_as_they_meant(tmp_path):
    path = tmp_path / RECORDS_FILE
    path.write_text("".join(json.dumps(line) + "\n" for line in VERSION_1))
    split, search, rast = read_records(path).records
    assert [r.record_version for r in (split, search, rast)] == [1, 1, 1]
    assert [r.runner for r in (split, search, rast)] == ["split", "search", "rast"]
    assert [r.strategy for r in (split, search, rast)] == ["deepconf", "beam_search", "rast"]
    assert [r.tracks[0].policy for r in (split, search, rast)] == ["random_switch", None, None]
    step = split.tracks[0].steps[0]
    assert (step.writer, step.ending, step.outcome) == (Role.SMALL, StepEnding.EOS, StepOutcome.WRITTEN)
    assert split.tracks[0].finish_reason == FinishReason.ANSWER and split.costs == [] and step.costs == []


def test_a_new_record_names_its_version_and_keeps_each_request_s_entry_compactly(tmp_path):
    new = record()
    step = new.tracks[0].steps[0]
    step.costs = [
        RequestCost(Role.SMALL, "draft", "http://s", "m", 10, 3, client_s=0.25, started_at=1.0, ended_at=1.25)
    ]
    new.costs = [RequestCost(Role.BIG, "select", "http://b", "M", 7, 1, cached_prompt_tokens=4, attempts=2)]
    path = tmp_path / RECORDS_FILE
    append_record(path, new)
    line = json.loads(path.read_text())
    assert line["record_version"] == 2 and line["runner"] == "spec" and "mode" not in line
    assert line["tracks"][0]["policy"] == "spec" and line["tracks"][0]["costs"] == []
    assert line["tracks"][0]["steps"][0]["costs"] == [
        {"role": "small", "purpose": "draft", "server": "http://s", "model": "m", "prompt_tokens": 10,
         "completion_tokens": 3, "client_s": 0.25, "started_at": 1.0, "ended_at": 1.25},
    ]  # fmt: skip
    assert line["costs"][0]["cached_prompt_tokens"] == 4 and line["costs"][0]["attempts"] == 2
    assert read_records(path).records == [new]


def test_charged_requests_count_in_usage_or_wasted():
    step = StepRecord(index=0, text="s", writer=Role.SMALL, tokens=3)
    used = RequestCost(Role.SMALL, "draft", "u", "m", 10, 3)
    step.charge([used, *thrown_away([used]), RequestCost(Role.BIG, "score", None, "M", wasted=True, cancelled=True)])
    assert step.usage == {"small": ModelUsage(10, 3, 1)}
    assert step.wasted == {"small": ModelUsage(10, 3, 1), "big": ModelUsage(0, 0, 1)} and len(step.costs) == 3


def test_partial_last_line_and_malformed_lines_are_reported(tmp_path):
    path = tmp_path / RECORDS_FILE
    append_record(path, record("1"))
    with path.open("a") as handle:
        handle.write("not json\n")
    append_record(path, record("2"))
    with path.open("a") as handle:
        handle.write(json.dumps(record("3").to_dict())[:40])
    read = read_records(path)
    assert [r.problem_id for r in read.records] == ["1", "2"]
    assert [n for n, _ in read.bad_lines] == [2, 4]
    assert read.partial_tail


def test_opening_a_damaged_folder_keeps_good_records_and_sets_the_original_aside(tmp_path):
    RunStore.open(tmp_path, manifest())
    append_record(tmp_path / RECORDS_FILE, record("1"))
    with (tmp_path / RECORDS_FILE).open("a") as handle:
        handle.write('{"run_id": "r", "datas')
    store = RunStore.open(tmp_path, manifest())
    assert set(store.done) == {("1", 0)}
    assert read_records(tmp_path / RECORDS_FILE).partial_tail is False
    (damaged,) = tmp_path.glob(f"{RECORDS_FILE}.damaged-*")
    assert damaged.read_text().endswith('"datas')


def test_resume_keeps_the_run_id_and_finished_records(tmp_path):
    first = RunStore.open(tmp_path, {"run_id": "first", "config_digest": "abc"})
    first.append(record("1"))
    again = RunStore.open(tmp_path, manifest())
    assert again.manifest["run_id"] == "first"
    assert set(again.done) == {("1", 0)}


def test_a_changed_config_is_refused_without_overwrite(tmp_path):
    RunStore.open(tmp_path, manifest("abc")).append(record())
    with pytest.raises(UsageError, match="another config.*--overwrite"):
        RunStore.open(tmp_path, manifest("xyz"))
    assert len(read_records(tmp_path / RECORDS_FILE).records) == 1


def test_overwrite_starts_over_and_keeps_the_old_files(tmp_path):
    RunStore.open(tmp_path, manifest("abc")).append(record())
    store = RunStore.open(tmp_path, manifest("xyz"), overwrite=True)
    assert store.done == set()
    assert json.loads((tmp_path / MANIFEST_FILE).read_text())["config_digest"] == "xyz"
    assert len(list(tmp_path.glob(f"{RECORDS_FILE}.replaced-*"))) == 1


def failed_record(problem_id, tracks=2):
    failed = record(problem_id)
    failed.tracks = [
        TrackRecord(track_id=i, policy="spec", finish_reason="failed", error="boom") for i in range(tracks)
    ]
    failed.answer = None
    return failed


def test_a_record_whose_tracks_all_failed_is_not_done_and_is_redone(tmp_path):
    store = RunStore.open(tmp_path, manifest())
    store.append(record("1"))
    store.append(failed_record("2"))
    partly = failed_record("3")
    partly.tracks[1] = record("3").tracks[0]  # one track answered: the problem was solved
    store.append(partly)
    assert store.done == {("1", 0), ("3", 0)}
    assert RunStore.finished_keys(tmp_path, manifest()) == {("1", 0), ("3", 0)}
    # the redo's record supersedes the failed one
    RunStore.open(tmp_path, manifest()).append(record("2"))
    assert RunStore.finished_keys(tmp_path, manifest()) == {("1", 0), ("2", 0), ("3", 0)}
    assert RunStore.open(tmp_path, manifest()).done == {("1", 0), ("2", 0), ("3", 0)}


def test_a_step_s_detail_round_trips_and_records_written_before_it_still_read(tmp_path):
    path = tmp_path / RECORDS_FILE
    with_detail = record()
    with_detail.tracks[0].steps[0].detail = {"ended": "probe", "chunks": 2}
    append_record(path, with_detail)
    old = record().to_dict()
    del old["tracks"][0]["steps"][0]["detail"]
    with path.open("a") as handle:
        handle.write(json.dumps(old) + "\n")
    read = read_records(path)
    assert not read.bad_lines
    assert [r.tracks[0].steps[0].detail for r in read.records] == [{"ended": "probe", "chunks": 2}, None]
