"""benchmarks.toy_confidence's within-problem AUC, on hand-built records."""

from benchmarks.toy_confidence import within_problem_auc
from engine.records import ProblemRecord, StepRecord, TrackRecord


def track(track_id: int, answer: str | None, confidences: list[float]) -> TrackRecord:
    step = StepRecord(index=0, text="...", writer="small", tokens=len(confidences), token_confidence=confidences)
    return TrackRecord(track_id=track_id, policy="small", steps=[step], answer=answer)


def problem(problem_id: str, reference: str, tracks: list[TrackRecord]) -> ProblemRecord:
    return ProblemRecord(
        run_id="r", dataset="toy", problem_id=problem_id, repeat_id=0, runner="deepconf",
        problem="?", reference_answer=reference, tracks=tracks,
    )  # fmt: skip


def test_pairs_are_counted_within_a_problem_only_and_ties_count_half():
    records = [
        # right 12 beats wrong 10 and ties wrong 12: 1.5 of 2 pairs
        problem(
            "0", "7",
            [track(0, "7", [12.0, 12.0]), track(1, "8", [10.0]), track(2, "9", [12.0]), track(3, None, [1.0])],
        ),
        # right 5 loses to wrong 6: 0 of 1 pair; a problem's confidences are never compared with another's
        problem("1", "3", [track(0, "3", [5.0]), track(1, "4", [6.0])]),
        # all right: no pair
        problem("2", "1", [track(0, "1", [1.0]), track(1, "1", [2.0])]),
    ]  # fmt: skip
    auc, pairs = within_problem_auc(records, measure="mean")
    assert pairs == 3 and auc == 1.5 / 3


def test_no_pairs_gives_no_auc():
    assert within_problem_auc([problem("0", "1", [track(0, "2", [3.0])])]) == (None, 0)
