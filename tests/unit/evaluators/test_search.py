"""Search figures (naive@k, weighted@k, maj@k, pass@k over the first k completions, and cost) on
hand-made search records; every expected figure is worked out by hand here."""

import dataclasses
import json

import pytest

from engine.records import ModelUsage, ProblemRecord, StepRecord, TrackRecord
from evaluators import summary
from evaluators.evaluate import main
from evaluators.runs import load_run
from evaluators.search import Completions, selections_at_k
from tests.unit.evaluators.test_evaluate import write_run


def completion(i: int, answer: str | None, score: float) -> TrackRecord:
    steps = [StepRecord(index=0, text="step\n\n", writer="small", tokens=7, score=score)]
    return TrackRecord(track_id=i, steps=steps, answer=answer, finish_reason="eos", score=score)


def search_record(problem: str, reference: str, answers_scores: list[tuple[str | None, float]]) -> ProblemRecord:
    tracks = [completion(i, a, s) for i, (a, s) in enumerate(answers_scores)]
    top = max(tracks, key=lambda t: t.score)
    usage = {
        "small": ModelUsage(prompt_tokens=50, completion_tokens=100, requests=8),
        "prm": ModelUsage(prompt_tokens=400, completion_tokens=0, requests=8),
    }
    return ProblemRecord(
        run_id="search-run",
        dataset="math500",
        problem_id=problem,
        repeat_id=0,
        runner="search",
        strategy="beam_search",
        problem=f"problem {problem}",
        reference_answer=reference,
        tracks=tracks,
        answer=top.answer,
        aggregation="naive",
        usage=usage,
    )


# Record 1: the answer 2 is never top-scored, but its two completions (.5 + .45) outweigh 3 (.9)
# once all four are seen. Record 2: the top-scored completion has no answer.
RECORDS = [
    search_record("p1", "2", [("3", 0.9), ("2", 0.5), ("2.0", 0.45), ("5", 0.8)]),
    search_record("p2", "7", [("7", 0.2), (None, 0.99), ("8", 0.3), ("8", 0.3)]),
]


@pytest.fixture
def search_run(tmp_path):
    return write_run(tmp_path / "search-run", RECORDS, mode="beam_search")


def test_selections_over_the_first_k_completions():
    p1 = Completions(["3", "2", "2.0", "5"], [0.9, 0.5, 0.45, 0.8], [False, True, True, False], False)
    assert selections_at_k(p1, 1) == {"naive": False, "weighted": False, "maj": False, "pass": False}
    # k=2: 3 (.9) outweighs 2 (.5); the 1-1 tie of maj goes to the answer seen first, 3.
    assert selections_at_k(p1, 2) == {"naive": False, "weighted": False, "maj": False, "pass": True}
    # k=4: 2 and 2.0 group together: weight .95 > .9 and two votes.
    assert selections_at_k(p1, 4) == {"naive": False, "weighted": True, "maj": True, "pass": True}


def test_search_summary_accuracy_and_cost(search_run):
    run = load_run(search_run)
    figures = summary.summarize_run(run, summary.grade_run(run))
    result = figures.search
    assert result is not None and result.records == 2 and result.completions_per_record == 4
    assert result.strategy == "beam_search"
    assert result.accuracy_at_k == {
        "naive": {1: 0.5, 2: 0.0, 4: 0.0},
        "weighted": {1: 0.5, 2: 0.5, 4: 0.5},
        "maj": {1: 0.5, 2: 0.5, 4: 0.5},
        "pass": {1: 0.5, 2: 1.0, 4: 1.0},
    }
    # Search steps are scored in [0, 1], not judged drafts: no acceptance rate, no 0-9 histogram.
    assert figures.steps.scored_steps == 0 and figures.steps.acceptance_rate is None
    # The policy is the writer of the steps; every other role is a scorer.
    assert (result.policy_tokens_per_record, result.scorer_tokens_per_record) == (100, 0)
    assert (result.scorer_requests_per_record, result.scorer_prompt_tokens_per_record) == (8, 400)


def test_runs_that_are_not_searches_have_no_search_figures(tmp_path):
    plain = TrackRecord(track_id=0, policy="spec", answer="2", finish_reason="answer")
    record = dataclasses.replace(RECORDS[0], tracks=[plain], strategy="vote")
    run = load_run(write_run(tmp_path / "spec", [record], mode="spec"))
    assert summary.summarize_run(run, summary.grade_run(run)).search is None


def test_cli_reports_search_tables_json_and_the_scaling_plot(search_run, tmp_path, capsys):
    out = tmp_path / "report"
    assert main([str(search_run), "--report", str(out), "--json", str(tmp_path / "s.json")]) == 0
    printed = capsys.readouterr().out
    assert "Search: accuracy against N" in printed and "Search cost per record" in printed
    weighted = next(line for line in printed.splitlines() if line.split()[1:2] == ["weighted"])
    assert weighted.split()[2:] == ["50.0%", "50.0%", "50.0%"]
    data = json.loads((tmp_path / "s.json").read_text())
    assert data["runs"][0]["search"]["accuracy_at_k"]["pass"] == {"1": 0.5, "2": 1.0, "4": 1.0}
    assert (out / "search_scaling.png").stat().st_size > 0
    assert "search_scaling.png" in (out / "report.md").read_text()
