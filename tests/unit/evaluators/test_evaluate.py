"""Evaluators on small hand-made run folders; every expected figure is worked out by hand here."""

import json
import re
from pathlib import Path

import pytest
from structlog.testing import capture_logs

from engine.errors import UsageError
from engine.records import ModelUsage, ProblemRecord, StepOutcome, StepRecord, TrackRecord
from engine.run.store import MANIFEST_FILE, RECORDS_FILE, append_record
from evaluators import compare, metrics, summary
from evaluators.evaluate import main
from evaluators.runs import load_run

ROLES = {0: "solver", 1: "critic", 2: None}


def usage(small: tuple[int, int, int], big: tuple[int, int, int]) -> dict[str, ModelUsage]:
    """(completion, prompt, requests) per model."""
    return {
        "small": ModelUsage(completion_tokens=small[0], prompt_tokens=small[1], requests=small[2]),
        "big": ModelUsage(completion_tokens=big[0], prompt_tokens=big[1], requests=big[2]),
    }


def track(track_id: int, answer: str | None, finish: str = "answer", **fields) -> TrackRecord:
    return TrackRecord(
        track_id=track_id, policy="spec", role=ROLES[track_id], answer=answer, finish_reason=finish, **fields
    )


def record(problem: str, repeat: int, reference: str | None, answer: str | None, tracks, **fields) -> ProblemRecord:
    return ProblemRecord(
        run_id=fields.pop("run_id", "spec-run"),
        dataset=fields.pop("dataset", "math500"),
        problem_id=problem,
        repeat_id=repeat,
        runner=fields.pop("runner", "spec"),
        problem=f"problem {problem}",
        reference_answer=reference,
        tracks=tracks,
        answer=answer,
        **fields,
    )


def write_run(folder: Path, records: list[ProblemRecord], *, mode: str, config: dict | None = None) -> Path:
    folder.mkdir(parents=True)
    manifest = {
        "run_id": folder.name,
        "mode": mode,
        "dataset": records[0].dataset,
        "config": config or {},
        "models": {"big": "tiny-big", "small": "tiny-small"},
    }
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest))
    for one in records:
        append_record(folder / RECORDS_FILE, one)
    return folder


def spec_records() -> list[ProblemRecord]:
    """Two problems x two repeats, three tracks each (roles solver, critic, none)."""
    steps0 = [
        StepRecord(index=0, text="s", writer="small", tokens=10, score=8.0, outcome=StepOutcome.ACCEPTED),
        StepRecord(
            index=1, text="b", writer="big", tokens=20, score=3.5, draft="rejected draft", outcome=StepOutcome.REWRITTEN
        ),
    ]
    steps1 = [StepRecord(index=0, text="s", writer="small", tokens=30, score=7.0, outcome=StepOutcome.ACCEPTED)]
    steps2 = [StepRecord(index=0, text="b", writer="big", tokens=40)]  # big-only first step: unscored
    p1r0_tracks = [
        track(
            0,
            "0.5",
            steps=steps0,
            thinking_tokens=30,
            answer_tokens=5,
            wasted={"small": ModelUsage(completion_tokens=12, requests=2)},
        ),
        track(1, "1/3", steps=steps1, thinking_tokens=30, answer_tokens=5, wasted={"big": ModelUsage(requests=1)}),
        track(2, "1/2", steps=steps2, thinking_tokens=40, answer_tokens=5),
    ]
    return [
        record("p1", 0, r"\frac{1}{2}", "0.5", p1r0_tracks, latency_s=10.0, usage=usage((100, 50, 5), (50, 200, 3))),
        record(
            "p1", 1, r"\frac{1}{2}", "1/3", [track(0, "1/3"), track(1, "1/3"), track(2, "0.5")],
            latency_s=20.0, usage=usage((200, 60, 4), (100, 300, 2)),
        ),
        record(
            "p2", 0, "7", "7", [track(0, "7"), track(1, "8"), track(2, None, "failed", error="boom")],
            latency_s=30.0, usage=usage((300, 70, 6), (150, 100, 1)),
        ),
        record(
            "p2", 1, "7", "7", [track(0, "8"), track(1, "7"), track(2, None, "cancelled")],
            latency_s=40.0, usage=usage((400, 80, 5), (200, 400, 2)), early_stopped=True, tokens_saved=120,
        ),
    ]  # fmt: skip


def baseline_records() -> list[ProblemRecord]:
    """One big-model track per record; p3 only here, so it is left out of comparisons."""

    def one(problem, repeat, reference, answer, latency, tokens):
        tracks = [TrackRecord(track_id=0, policy="big", answer=answer, finish_reason="answer")]
        big = ModelUsage(prompt_tokens=100, completion_tokens=tokens, requests=1)
        return record(
            problem, repeat, reference, answer, tracks,
            run_id="base-run", runner="big", latency_s=latency, usage={"big": big},
        )  # fmt: skip

    return [
        one("p1", 0, "1/2", "1/2", 40.0, 1000),
        one("p1", 1, "1/2", "2", 60.0, 1000),
        one("p2", 0, "7", "7", 80.0, 2000),
        one("p2", 1, "7", "8", 100.0, 2000),
        one("p3", 0, "5", "5", 1000.0, 9000),
    ]


@pytest.fixture
def spec_run(tmp_path) -> Path:
    return write_run(tmp_path / "spec-run", spec_records(), mode="spec")


@pytest.fixture
def base_run(tmp_path) -> Path:
    return write_run(tmp_path / "base-run", baseline_records(), mode="big")


def evaluate(folder: Path, **kwargs) -> summary.RunSummary:
    run = load_run(folder)
    return summary.summarize_run(run, summary.grade_run(run), **kwargs)


def test_accuracy_of_voted_answers_and_spread_over_repeats(spec_run):
    s = evaluate(spec_run)
    assert (s.records, s.problems, s.repeats, s.scored_records) == (4, 2, 2, 4)
    # repeat 0: p1 "0.5" = 1/2 right, p2 right; repeat 1: p1 "1/3" wrong, p2 right.
    assert s.accuracy == 0.75
    assert s.accuracy_by_repeat == {0: 1.0, 1: 0.5}
    assert s.accuracy_mean == 0.75
    assert s.accuracy_std == pytest.approx(0.3535534)  # stdev of (1.0, 0.5)


def test_track_accuracy_skips_cancelled_tracks_and_counts_failed_ones(spec_run):
    s = evaluate(spec_run)
    # Finished tracks: 3 + 3 + 3 + 2 (the cancelled one left out); right: 2 + 1 + 1 + 1.
    assert s.track_accuracy == pytest.approx(5 / 11)
    assert s.track_accuracy_by_label == {
        "critic": {"accuracy": 0.25, "tracks": 4},
        "solver": {"accuracy": 0.5, "tracks": 4},
        "track 2": {"accuracy": pytest.approx(2 / 3), "tracks": 3},
    }


def test_tracks_early_stop_skipped_are_no_samples(tmp_path):
    tracks = [track(0, "8"), track(1, "7"), track(2, None, "skipped")]
    one = record("p1", 0, "7", "7", tracks, early_stopped=True, cancelled_tracks=[2], tokens_saved=50)
    s = evaluate(write_run(tmp_path / "windowed", [one], mode="spec"))
    # two finished tracks, one right; the skipped one is neither a wrong track nor a sample
    assert s.track_accuracy == 0.5 and s.pass_at_k_tracks == {1: 0.5, 2: 1.0}
    assert (s.early_stopped_records, s.tokens_saved_total) == (1, 50)


def test_pass_at_k_over_tracks_and_repeats(spec_run):
    s = evaluate(spec_run)
    # (n, c) per record: (3, 2), (3, 1), (3, 1), (2, 1).
    assert s.pass_at_k_tracks[1] == pytest.approx((2 / 3 + 1 / 3 + 1 / 3 + 1 / 2) / 4)
    # k=2: 1 - C(1,2)/C(3,2) = 1; 1 - C(2,2)/C(3,2) = 2/3 (twice); 1 - C(1,2)/C(2,2) = 1.
    assert s.pass_at_k_tracks[2] == pytest.approx((1 + 2 / 3 + 2 / 3 + 1) / 4)
    assert s.pass_at_k_tracks[3] == 1.0  # the three records with n = 3 each have a right track
    assert set(s.pass_at_k_tracks) == {1, 2, 3}
    # Per problem over repeats: p1 (n=2, c=1), p2 (n=2, c=2).
    assert s.pass_at_k_repeats == {1: 0.75, 2: 1.0}


def test_maj_at_k_with_ties_going_to_the_earliest_answer(spec_run):
    s = evaluate(spec_run)
    # k=1: first tracks "0.5" right, "1/3" wrong, "7" right, "8" wrong.
    assert s.maj_at_k_tracks[1] == 0.5
    # k=2: ties everywhere but p1r1 ("1/3" twice); the first answer wins: right, wrong, right, wrong.
    assert s.maj_at_k_tracks[2] == 0.5
    # k=3 (records with 3 finished tracks): "0.5"+"1/2" beat "1/3"; "1/3" x2 wins; "7" vs "8" tie.
    assert s.maj_at_k_tracks[3] == pytest.approx(2 / 3)
    # Voted answers per problem by repeat: p1 "0.5", "1/3" (tie: "0.5"); p2 "7", "7".
    assert s.maj_at_k_repeats == {1: 1.0, 2: 1.0}


def test_explicit_ks(spec_run):
    s = evaluate(spec_run, ks=[2, 5])
    assert set(s.pass_at_k_tracks) == {2}  # no record has 5 finished tracks
    assert set(s.maj_at_k_repeats) == {2}


def test_tokens_requests_and_shares(spec_run):
    t = evaluate(spec_run).tokens
    assert t.completion_per_record == {"small": 250.0, "big": 125.0}  # 1000 / 4, 500 / 4
    assert t.prompt_per_record == {"small": 65.0, "big": 250.0}
    assert t.requests_per_record == {"small": 5.0, "big": 2.0}
    assert t.total_completion_per_record == 375.0
    assert t.total_requests_per_record == 7.0
    assert t.big_share_generated == pytest.approx(500 / 1500)
    # Kept steps: small 10 + 30, big 20 + 40.
    assert t.kept_step_tokens_by_writer == {"big": 15.0, "small": 10.0}
    assert t.big_share_kept == pytest.approx(0.6)
    assert t.thinking_per_record == 25.0  # (30 + 30 + 40) / 4
    assert t.answer_per_record == 3.75
    # thrown away: 12 small tokens in 2 requests, 1 big request cancelled before any token was known
    assert (t.wasted_completion_per_record, t.wasted_requests_per_record) == (3.0, 0.75)


def test_answer_tokens_are_split_by_the_model_that_wrote_the_answer(tmp_path):
    tracks = [
        track(0, "1", answer_tokens=12, answer_model="big"),
        track(1, "1", answer_tokens=4, answer_model="small"),
        track(2, "2", answer_tokens=0, answer_model=None),
    ]
    run = write_run(
        tmp_path / "r", [record("1", 0, "1", "1", tracks), record("2", 0, "1", "1", tracks[:1])], mode="spec"
    )
    assert evaluate(run).tokens.answer_tokens_by_model == {"big": 12.0, "small": 2.0}  # (12 + 12) / 2, 4 / 2


def test_speculative_steps_latency_and_early_stop(spec_run):
    s = evaluate(spec_run)
    # Scored steps: 8.0 kept, 3.5 rewritten, 7.0 kept.
    assert (s.steps.scored_steps, s.steps.accepted_steps) == (3, 2)
    assert s.steps.acceptance_rate == pytest.approx(2 / 3)
    assert s.steps.score_histogram == [0, 0, 0, 1, 0, 0, 0, 1, 1, 0]
    assert s.latency == {"mean": 25.0, "p50": 25.0, "p95": pytest.approx(38.5)}
    assert (s.early_stopped_records, s.tokens_saved_total, s.tokens_saved_per_record) == (1, 120, 30.0)


def test_comparison_against_a_baseline(spec_run, base_run):
    spec = compare.problem_figures(summary.grade_run(load_run(spec_run)))
    base = compare.problem_figures(summary.grade_run(load_run(base_run)))
    c = compare.compare("spec-run", spec, "base-run", base)
    # Common problems p1, p2. Latency: spec 15 + 35, base 50 + 90. Tokens: spec 225 + 525, base 1000 + 2000.
    assert c.common_problems == 2
    assert c.speedup == pytest.approx(140 / 50)
    assert c.token_ratio == pytest.approx(750 / 3000)
    # Accuracy per problem: spec p1 0.5, p2 1.0; base p1 0.5, p2 0.5. Differences 0 and 0.5.
    assert c.accuracy_diff == pytest.approx(0.25)
    # Resampled means are 0, 0.25 or 0.5; each end has probability 1/4, so the 95% interval is [0, 0.5].
    assert c.accuracy_diff_ci == (0.0, 0.5)


def test_multiple_choice_run_compares_letters(tmp_path):
    def mc(problem, reference, answer, tracks):
        return record(problem, 0, reference, answer, tracks, dataset="gpqa_diamond")

    records = [
        mc("q1", "C", "C", [track(0, "C"), track(1, "(c)")]),
        mc("q2", "B", r"\text{(B)}", [track(0, "A"), track(1, "B")]),
        mc("q3", "D", "A", [track(0, "A"), track(1, None, "failed")]),
    ]
    s = evaluate(write_run(tmp_path / "mc", records, mode="spec"))
    assert s.accuracy == pytest.approx(2 / 3)
    assert s.track_accuracy == pytest.approx(3 / 6)
    assert s.maj_at_k_tracks[2] == pytest.approx(1 / 3)  # q1: C+(c); q2: tie, "A" first; q3: "A"


def test_multiple_choice_from_the_manifest_config(tmp_path):
    records = [record("q1", 0, "C", "c", [track(0, "c")], dataset="my-mcq")]
    assert evaluate(write_run(tmp_path / "mc", records, mode="spec", config={"multiple_choice": True})).accuracy == 1.0


def test_multiple_choice_is_read_from_the_record_before_the_data_set_name(tmp_path):
    stored = [record("q1", 0, "C", "c", [track(0, "c")], dataset="my-mcq", multiple_choice=True)]
    assert evaluate(write_run(tmp_path / "stored", stored, mode="spec")).accuracy == 1.0
    rows = [
        record("q1", 0, "C", "C", [], dataset="my-mcq", multiple_choice=True),
        # a record that says it is not multiple choice is not, whatever its name
        record("q2", 0, "C", "C", [], dataset="gpqa_like", multiple_choice=False),
        # records written before the field existed fall back to the name
        record("q3", 0, "C", "C", [], dataset="gpqa_diamond"),
        record("q4", 0, "3", "3", [], dataset="math500"),
    ]
    run = load_run(write_run(tmp_path / "mixed", rows, mode="spec"))
    assert [run.multiple_choice(r) for r in run.records] == [True, False, True, False]


def test_records_without_reference_are_not_scored(tmp_path):
    records = [record("p1", 0, None, "3", [track(0, "3")]), record("p2", 0, "4", "4", [track(0, "4")])]
    s = evaluate(write_run(tmp_path / "run", records, mode="spec"))
    assert (s.records, s.scored_records, s.accuracy) == (2, 1, 1.0)


def test_a_run_without_any_reference_answer_still_reports_its_cost(tmp_path, capsys):
    records = [record("p1", 0, None, "3", [track(0, "3")], latency_s=4.0)]
    folder = write_run(tmp_path / "unscored", records, mode="spec")
    s = evaluate(folder)
    assert (s.accuracy, s.track_accuracy, s.pass_at_k_tracks, s.maj_at_k_tracks) == (None, None, {}, {})
    assert s.notes == ["no record has a reference answer: accuracy not computed"]
    assert main([str(folder), "--report", str(tmp_path / "report")]) == 0
    assert re.search(r"\nunscored +spec +math500 +1 x 1 +0/1 +n/a ", capsys.readouterr().out)
    assert "no record has a reference answer" in (tmp_path / "report" / "report.md").read_text()


def test_malformed_lines_are_reported_skipped_and_counted(spec_run, capsys):
    with (spec_run / RECORDS_FILE).open("a") as handle:
        handle.write("not json\n")
        handle.write('{"run_id": "x"}\n')
        handle.write('{"run_id": "cut')  # a write cut short: no newline
    with capture_logs() as logs:
        s = evaluate(spec_run)
    assert s.records == 4 and s.accuracy == 0.75
    assert (s.skipped_lines, s.partial_tail) == (3, True)
    skipped = [e for e in logs if e["event"] == "record_line_skipped"]
    assert [e["line"] for e in skipped] == [5, 6, 7]
    assert any(e["event"] == "record_file_cut_short" for e in logs)
    assert main([str(spec_run)]) == 0
    assert "3 (cut tail)" in capsys.readouterr().out


def test_duplicate_keys_keep_the_last_line(spec_run):
    append_record(spec_run / RECORDS_FILE, record("p1", 1, r"\frac{1}{2}", "1/2", [track(0, "1/2")], latency_s=20.0))
    run = load_run(spec_run)
    assert run.duplicates == 1 and len(run.records) == 4
    assert evaluate(spec_run).accuracy == 1.0


def test_cli_prints_tables_and_writes_json_and_report(spec_run, base_run, tmp_path, capsys):
    out = tmp_path / "report"
    code = main([str(spec_run), "--baseline", str(base_run), "--report", str(out), "--json", str(tmp_path / "s.json")])
    assert code == 0
    text = capsys.readouterr().out
    assert "Against baseline base-run" in text
    assert "2.80x" in text and "+25.0 pts" in text
    assert "wasted/record" in text and "3 (0.8 req)" in text
    data = json.loads((tmp_path / "s.json").read_text())
    assert [r["name"] for r in data["runs"]] == ["base-run", "spec-run"]  # a baseline not given as RUN_DIR is added
    assert data["baseline"] == "base-run"
    assert data["runs"][1]["accuracy"] == 0.75
    assert data["runs"][1]["pass_at_k_repeats"] == {"1": 0.75, "2": 1.0}
    assert data["comparisons"][0]["accuracy_diff_ci"] == [0.0, 0.5]
    assert json.loads((out / "summary.json").read_text()) == data
    report = (out / "report.md").read_text()
    for png in ("accuracy_latency.png", "tokens_per_model.png", "score_histogram.png"):
        assert f"]({png})" in report
        assert (out / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| spec-run | spec | math500 | 2 x 2 | 4/4 | 75.0% |" in report


def test_cli_json_to_stdout_and_seed_spellings(spec_run, base_run, capsys):
    code = main(
        ["--results_dir", str(spec_run), "--results-dir", str(base_run), "--dataset_name", "math", "--json", "-"]
    )
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert [r["name"] for r in data["runs"]] == ["spec-run", "base-run"]
    assert data["baseline"] == "spec-run"  # the first run when none is named
    assert data["runs"][1]["records"] == 5


def test_cli_usage_names_the_program(capsys):
    with pytest.raises(SystemExit) as stop:
        main(["--no-such-flag"], prog="spectra eval")
    assert stop.value.code == 2
    assert capsys.readouterr().err.startswith("usage: spectra eval")


def test_cli_baseline_by_name(spec_run, base_run, capsys):
    assert main([str(spec_run), str(base_run), "--baseline", "base-run", "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out)["baseline"] == "base-run"


@pytest.mark.parametrize(
    ("setup", "message"),
    [
        (lambda root: root.mkdir(), "the run folder is empty"),
        (lambda root: (root.mkdir(), (root / MANIFEST_FILE).write_text("{}")), "no records.jsonl"),
        (lambda root: (root.mkdir(), (root / RECORDS_FILE).write_text("garbage\n")), "no readable record"),
        (lambda root: None, "no such run folder"),
        (
            lambda root: (root.mkdir(), (root / RECORDS_FILE).write_text(""), (root / MANIFEST_FILE).write_text("{")),
            "not valid JSON",
        ),
    ],
)
def test_unusable_folders_are_usage_errors(tmp_path, capsys, setup, message):
    folder = tmp_path / "run"
    setup(folder)
    with pytest.raises(UsageError, match=message):
        load_run(folder)
    assert main([str(folder)]) == 2
    last_line = capsys.readouterr().err.strip().splitlines()[-1]
    assert last_line.startswith("error: ") and message in last_line


def test_cli_usage_errors(spec_run, capsys):
    assert main([str(spec_run), "--baseline", "nowhere"]) == 2
    assert "unknown baseline 'nowhere'" in capsys.readouterr().err
    assert main([str(spec_run), "--dataset-name", "aime"]) == 2
    assert "no record of data set 'aime'; this run holds: math500" in capsys.readouterr().err
    assert main([]) == 2
    assert "no run folder given" in capsys.readouterr().err
    assert main([str(spec_run), "--k", "0"]) == 2


def test_rast_sampled_pass_and_majority_at_k_match_a_hand_computed_average(tmp_path):
    # Two problems x 3 repeats. p1: right, wrong, wrong ("4" "5" "5"); p2: wrong, right, right ("9" "8" "8").
    answers = {"p1": ("4", ["4", "5", "5"]), "p2": ("8", ["9", "8", "8"])}
    records = [
        record(p, r, ref, given[r], [track(0, given[r])], runner="rast")
        for p, (ref, given) in answers.items()
        for r in range(3)
    ]
    s = evaluate(write_run(tmp_path / "rast", records, mode="rast"))
    picks = metrics.subsample_picks([0, 1, 2], 2)
    correct = {p: [given[r] == ref for r in range(3)] for p, (ref, given) in answers.items()}
    expected_pass = sum(sum(any(correct[p][r] for r in pick) for p in correct) / 2 for pick in picks) / len(picks)
    assert s.pass_at_k_sampled[2] == pytest.approx(expected_pass)
    # maj@3 is one pick of all three: p1 votes "5" (wrong), p2 votes "8" (right).
    assert s.maj_at_k_sampled[3] == 0.5 and s.pass_at_k_sampled[3] == 1.0
    # maj@1 and pass@1 agree: one repeat per pick.
    assert s.maj_at_k_sampled[1] == s.pass_at_k_sampled[1]
    assert s.accuracy_mean == pytest.approx(0.5)  # RAST's `average`, over all runs


def test_subsample_picks_are_distinct_reproducible_and_whole_at_k_equal_n():
    picks = metrics.subsample_picks(range(32), 4)
    assert len(picks) == metrics.SUBSAMPLE_DRAWS and all(len(set(p)) == 4 for p in picks)
    assert picks == metrics.subsample_picks(range(32), 4)
    assert metrics.subsample_picks([3, 1, 2], 3) == [[1, 2, 3]]
    with pytest.raises(ValueError):
        metrics.subsample_picks([1, 2], 3)


def with_concurrency(folder: Path, **concurrency) -> Path:
    path = folder / MANIFEST_FILE
    manifest = json.loads(path.read_text())
    manifest["concurrency"] = {
        "max_problems_in_flight": 1,
        "max_tracks_in_flight": 64,
        "max_in_flight_per_endpoint": 64,
        "replicas": {"big": 1},
        **concurrency,
    }
    path.write_text(json.dumps(manifest))
    return folder


def test_baseline_comparison_warns_when_runs_were_measured_with_other_concurrency(spec_run, base_run, capsys):
    with_concurrency(spec_run, max_problems_in_flight=8)
    with_concurrency(base_run)
    assert main([str(spec_run), "--baseline", str(base_run), "--json", "-"]) == 0
    captured = capsys.readouterr()
    note = json.loads(captured.out)["comparisons"][0]["concurrency_note"]
    assert note == "max_problems_in_flight 8 vs 1"
    assert "concurrency_differs" in captured.err
    assert main([str(spec_run), "--baseline", str(base_run)]) == 0
    assert "other concurrency: max_problems_in_flight 8 vs 1" in capsys.readouterr().out


def test_baseline_comparison_is_quiet_when_concurrency_matches(spec_run, base_run, capsys):
    with_concurrency(spec_run)
    with_concurrency(base_run)
    assert main([str(spec_run), "--baseline", str(base_run), "--json", "-"]) == 0
    captured = capsys.readouterr()
    assert json.loads(captured.out)["comparisons"][0]["concurrency_note"] is None
    assert "concurrency_differs" not in captured.err


def test_a_prm_judges_rewards_count_in_tenths_on_the_score_histogram(tmp_path):
    steps = [
        StepRecord(index=0, text="s", writer="small", tokens=5, score=0.75, judge="prm", outcome=StepOutcome.ACCEPTED),
        StepRecord(index=1, text="b", writer="big", tokens=5, score=0.31, judge="prm", outcome=StepOutcome.REWRITTEN),
        StepRecord(index=2, text="c", writer="small", tokens=5, score=1.0, judge="prm", outcome=StepOutcome.ACCEPTED),
    ]
    run = write_run(tmp_path / "r", [record("1", 0, "1", "1", [track(0, "1", steps=steps)])], mode="spec")
    assert evaluate(run).steps.score_histogram == [0, 0, 0, 1, 0, 0, 0, 1, 0, 1]
