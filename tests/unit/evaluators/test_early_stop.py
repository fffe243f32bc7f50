"""The offline early-stop replay (evaluators.early_stop) on hand-made vote runs; figures by hand."""

import json

import pytest

from engine.errors import UsageError
from engine.records import ModelUsage, ProblemRecord, TrackRecord
from engine.run.store import MANIFEST_FILE, RECORDS_FILE, append_record
from evaluators.early_stop import main, replay_record, replay_run
from evaluators.runs import load_run


def record(problem_id, answers, tokens, *, reference="7", finish="answer"):
    tracks = [
        TrackRecord(
            track_id=i,
            policy="small",
            answer=a,
            finish_reason=finish,
            usage={"small": ModelUsage(completion_tokens=n, requests=1)},
        )
        for i, (a, n) in enumerate(zip(answers, tokens, strict=True))
    ]
    full = max(set(answers), key=answers.count)
    return ProblemRecord(
        run_id="r", dataset="toy", problem_id=problem_id, repeat_id=0, runner="scale", problem="p",
        reference_answer=reference, tracks=tracks, answer=full, aggregation="majority",
    )  # fmt: skip


def write_run(folder, records):
    folder.mkdir()
    (folder / MANIFEST_FILE).write_text(json.dumps({"run_id": "r", "mode": "scale", "dataset": "toy"}))
    for one in records:
        append_record(folder / RECORDS_FILE, one)
    return folder


AGREE = record("a", ["7"] * 4, [100] * 4)
SPLIT = record("b", ["8", "7", "7", "7"], [10, 20, 30, 40])


@pytest.mark.parametrize(
    ("one", "window", "confidence", "answer", "tokens", "started"),
    [
        # the vote rule alone: 3 agreeing votes against 1 open track; tracks 0-2 started one at a time
        (AGREE, 1, None, "7", 300, 3),
        # P = 0.75 after one vote
        (AGREE, 1, 0.7, "7", 100, 1),
        # the whole window had started: all tokens count
        (AGREE, 4, 0.7, "7", 400, 4),
        # P = 0.875 after two votes, when tracks 0-2 had started
        (AGREE, 2, 0.8, "7", 300, 3),
        # stopped on the first, wrong, answer
        (SPLIT, 1, 0.7, "8", 10, 1),
        # (1, 1) = 0.5, (2, 1) = 0.6875: never confident, every track runs
        (SPLIT, 2, 0.8, "7", 100, 4),
        (SPLIT, 1, None, "7", 100, 4),
    ],
)
def test_replay_of_one_record(one, window, confidence, answer, tokens, started):
    outcome = replay_record(one, window, confidence, multiple_choice=False)
    assert (outcome.answer, outcome.tokens, outcome.tracks_started) == (answer, tokens, started)


def test_replay_of_a_run_against_its_full_vote(tmp_path):
    run = load_run(write_run(tmp_path / "run", [AGREE, SPLIT]))
    fast = replay_run(run, 1, 0.7)
    assert (fast.accuracy, fast.full_accuracy, fast.tokens, fast.full_tokens) == (0.5, 1.0, 110, 500)
    assert fast.tokens_saved_share == pytest.approx(1 - 110 / 500) and fast.tracks_started == 2
    careful = replay_run(run, 2, 0.8)
    assert (careful.accuracy, careful.tokens, careful.tracks_started) == (1.0, 400, 7)


def test_runs_with_tracks_stopped_early_are_refused(tmp_path):
    stopped = record("c", ["7", None], [5, 0])
    stopped.tracks[1].finish_reason = "skipped"
    run = load_run(write_run(tmp_path / "run", [AGREE, stopped]))
    with pytest.raises(UsageError, match="problem c has tracks stopped early"):
        replay_run(run, 1, 0.9)


def test_command_line_prints_one_line_per_window_and_confidence(tmp_path, capsys):
    folder = write_run(tmp_path / "run", [AGREE, SPLIT])
    assert main([str(folder), "--tracks_in_flight", "1", "2", "--confidence", "0.7", "0.8"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 2 + 4
    assert lines[2].split() == ["1", "0.7", "50.0%", "100.0%", "110", "500", "78.0%", "1.00", "4.00"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--tracks_in_flight", "0"], "--tracks_in_flight must be at least 1"),
        (["--tracks_in_flight", "2", "--confidence", "1.0"], "--confidence must be in (0.5, 1)"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(tmp_path, capsys, flags, message):
    folder = write_run(tmp_path / "run", [AGREE])
    assert main([str(folder), *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and message in err[0]
