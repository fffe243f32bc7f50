"""What a run prints, graded from its records: the table, and the demo's lines against the big model
alone, hand-computed."""

from engine.records import ModelUsage, ProblemRecord, StepRecord, TrackRecord
from engine.run.report import COLUMNS, against_big_alone, figures, format_runs, format_summary


def record(problem: str, answer: str, *, big: int, small: int = 0, seconds: float, kept=0, rewritten=0):
    steps = [StepRecord(index=i, text="s", tokens=1, writer="small", outcome="accepted") for i in range(kept)]
    steps += [
        StepRecord(index=kept + i, text="s", tokens=1, writer="big", outcome="rewritten") for i in range(rewritten)
    ]
    usage = {"big": ModelUsage(completion_tokens=big)} | (
        {"small": ModelUsage(completion_tokens=small)} if small else {}
    )
    return ProblemRecord(
        run_id="r", dataset="toy", problem_id=problem, repeat_id=0, runner="spec", problem="p",
        reference_answer="10", answer=answer, usage=usage, latency_s=seconds,
        tracks=[TrackRecord(track_id=0, policy="spec", finish_reason="answer", answer=answer, steps=steps)],
    )  # fmt: skip


PRM = [record("0", "10", big=10, small=80, seconds=0.5, kept=8, rewritten=1), record("1", "7", big=20, seconds=1.5)]
JUDGE = [record("0", "10", big=30, small=60, seconds=2.0), record("1", "10", big=14, seconds=1.2)]
ALONE = [record("0", "10", big=60, seconds=2.0), record("1", "10", big=64, seconds=2.0)]


def test_figures_are_right_answers_and_means_a_problem():
    assert figures(PRM) == figures(PRM[::-1])
    got = figures(PRM)
    assert (got.right, got.problems, got.big_tokens, got.seconds) == (1, 2, 15.0, 1.0)


def test_each_method_gets_a_line_against_the_big_model_alone_and_the_big_model_its_own():
    lines = against_big_alone([("spec (PRM judge)", PRM), ("spec (big judge)", JUDGE)], ("big model alone", ALONE))
    assert lines == [
        # 1.0 s against 2.0 s a problem; 1.6 s against 2.0
        "spec (PRM judge): 1/2 right, 15 big-model tokens a problem, 1.00 s a problem, 0.50x the big model's latency",
        "spec (big judge): 2/2 right, 22 big-model tokens a problem, 1.60 s a problem, 0.80x the big model's latency",
        "big model alone:  2/2 right, 62 big-model tokens a problem, 2.00 s a problem",
    ]


def test_names_of_different_lengths_line_their_figures_up():
    lines = against_big_alone([("spec", PRM)], ("big model alone", ALONE))
    assert lines[0].startswith("spec:            1/2 right") and lines[1].startswith("big model alone: 2/2 right")
    assert lines[0].index("1/2") == lines[1].index("2/2")


def test_a_big_model_that_took_no_time_gives_no_ratio():
    instant = [record("0", "10", big=1, seconds=0.0)]
    (line, _) = against_big_alone([("spec", PRM[:1])], ("big", instant))
    assert line.endswith(", - the big model's latency")


def test_the_demo_table_is_one_row_per_method_and_problem_with_the_method_first():
    table = format_runs([("spec (PRM judge)", PRM), ("big model alone", ALONE)]).splitlines()
    assert table[0].split()[:2] == ["method", "problem"] and table[0].endswith(COLUMNS)
    assert len(table) == 1 + len(PRM) + len(ALONE)
    # method, problem, rep, answer, ref, ok, kept, rewritten, small tokens, big tokens, seconds
    assert table[1].split() == ["spec", "(PRM", "judge)", "0", "0", "10", "10", "yes", "8", "1", "80", "10", "0.5"]
    assert table[2].split()[3:] == ["1", "0", "7", "10", "no", "0", "0", "0", "20", "1.5"]
    assert table[3].split()[:4] == ["big", "model", "alone", "0"]
    assert len({len(line) for line in table}) == 1, "the columns line up"


def test_one_run_s_table_ends_with_its_accuracy_and_the_big_model_s_share():
    lines = format_summary(PRM).splitlines()
    assert lines[0] == COLUMNS and len(lines) == 1 + len(PRM) + 1
    # big 30 of 110 generated tokens
    assert lines[-1] == "accuracy 1/2 (50%); big model's share of tokens 27%"
