"""A run whose records hold failures says so: its last line counts them and names the first error,
and its exit code is 3 (engine.errors.PROBLEMS_FAILED_EXIT), reflecting the records' final state."""

import json

import pytest

from engine.errors import EXIT_CODES_HELP, PROBLEMS_FAILED_EXIT
from engine.records import ProblemRecord, TrackRecord
from engine.run.execute import ERROR_LINE_CHARS, failure_report
from engine.run.store import RECORDS_FILE, read_records
from runners.spectra import main
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.paths import REPO_ROOT
from tests.threaded_server import served_in_a_thread

# A chat template found on disk: the fake server's model has none to download.
TOY_TOKENIZER = REPO_ROOT / "engine" / "toy" / "weights" / "tokenizer"
REFUSAL = "This model's maximum context length is 64 tokens. However, your prompt contains 90 input tokens"


def track(finish: str, error: str | None = None) -> TrackRecord:
    return TrackRecord(track_id=0, policy="big", finish_reason=finish, error=error, answer=None)


def record(problem: str, tracks: list[TrackRecord], failure: dict | None = None) -> ProblemRecord:
    return ProblemRecord(
        run_id="r", dataset="d", problem_id=problem, repeat_id=0, runner="base", problem="p", reference_answer="4",
        tracks=tracks, failure=failure,
    )  # fmt: skip


def test_problems_whose_tracks_all_failed_or_whose_strategy_failed_fail_the_run():
    records = [
        record("ok", [track("answer")]),
        record("partial", [track("answer"), track("failed", "http://b: HTTP 500: busy")]),
        record("tracks", [track("failed", "http://a: HTTP 400: too long\n  second line"), track("failed", "x")]),
        record("search", [], failure={"kind": "ValueError", "message": "the scorer rated 1 of 2 steps"}),
    ]
    report = failure_report(records)
    assert (report.failed, report.partial, report.total, report.exit_code) == (2, 1, 4, PROBLEMS_FAILED_EXIT)
    assert report.line() == (
        "spectra: 2 of 4 problems failed (1 more answered with failed tracks); "
        "first error: http://a: HTTP 400: too long second line"
    )
    assert failure_report(records[3:]).line() == (
        "spectra: 1 of 1 problems failed; first error: ValueError: the scorer rated 1 of 2 steps"
    )


def test_failed_tracks_alone_are_reported_but_fail_no_run():
    report = failure_report([record("ok", [track("answer")]), record("p", [track("answer"), track("failed", "boom")])])
    assert report.exit_code == 0
    assert report.line() == "spectra: 1 of 2 problems answered with failed tracks; first error: boom"
    clean = failure_report([record("ok", [track("answer")])])
    assert (clean.exit_code, clean.line()) == (0, None)


def test_the_first_error_is_one_line_of_bounded_length():
    long = record("p", [track("failed", "x" * 1000)])
    error = failure_report([long]).first_error
    assert len(error) == ERROR_LINE_CHARS and error.endswith("...")


def test_a_run_with_failed_problems_exits_3_with_a_last_line_and_a_rerun_that_redoes_them_exits_0(tmp_path, capsys):
    problems = tmp_path / "problems.jsonl"
    rows = [{"id": "short", "problem": "What is 2 + 2?", "answer": "4"}, {"id": "long", "problem": "Long " * 50}]
    problems.write_text("".join(json.dumps({"answer": "4", **row}) + "\n" for row in rows))
    refusing = {"on": True}

    def answer(body):  # a server that refuses the long problem's prompt, as vLLM one too long for its context
        if refusing["on"] and "Long Long" in body["prompt"]:
            return Reply(status=400, error_message=REFUSAL)
        return Reply("So \\boxed{4}", finish_reason="stop")

    out = tmp_path / "run"
    flags = ["--runner", "base", "--big_model", "fake-model", "--big_tokenizer", str(TOY_TOKENIZER)]
    flags += ["--dataset_name", str(problems), "--output_dir", str(out), "--no_progress"]
    with served_in_a_thread(FakeOpenAIServer(answer)) as url:
        code = main(["run", *flags, "--big_url", url])
        first = capsys.readouterr()
        refusing["on"] = False
        second_code = main(["run", *flags, "--big_url", url])
        second = capsys.readouterr()

    assert code == PROBLEMS_FAILED_EXIT
    assert first.err.splitlines()[-1] == f"spectra: 1 of 2 problems failed; first error: {url}: HTTP 400: {REFUSAL}"
    assert "records:" in first.out  # the summary is printed all the same
    assert second_code == 0 and "spectra:" not in second.err  # the rerun redid the failed problem
    assert "1 new, 1 already done" in second.out
    latest = {r.key: r for r in read_records(out / RECORDS_FILE).records}
    assert not any(r.failed for r in latest.values()) and len(latest) == 2


@pytest.mark.parametrize("command", [["run", "--help"], ["run", "--runner", "rast", "--help"]])
def test_help_lists_the_exit_codes(capsys, command):
    with pytest.raises(SystemExit):
        main(command)
    text = " ".join(capsys.readouterr().out.split())
    assert EXIT_CODES_HELP in text and "3 problems failed" in text
