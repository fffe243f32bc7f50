"""A method's own details reach the evaluators' tables with no edit of the evaluators."""

from engine.records import StepRecord
from evaluators.details import summarize_details, summarize_values
from evaluators.evaluate import main
from tests.unit.evaluators.test_evaluate import record, track, write_run


def test_values_are_summarised_by_kind():
    assert summarize_values([0.5, 1.0, 0.75]) == "mean 0.75, min 0.5, max 1"
    assert summarize_values([True, False, False, True]) == "true in 50.0%"
    assert summarize_values([[1, 2], [3]]) == "length mean 1.50; items mean 2, min 1, max 3"
    assert summarize_values(["eos", "cap", "eos"]) == "eos x2, cap x1"
    many = summarize_values([f"v{i % 6}" for i in range(12)])
    assert many.endswith("(6 distinct)") and many.count(" x2") == 4


def test_strategy_and_policy_details_of_a_method_the_evaluators_never_heard_of(tmp_path, capsys):
    steps = [
        StepRecord(index=0, text="a", writer="small", tokens=1, detail={"cue": "Wait", "wasted": {"big": 7}}),
        StepRecord(index=1, text="b", writer="big", tokens=1, detail={"cue": "Hmm", "wasted": {"big": 3}}),
        StepRecord(index=2, text="c", writer="small", tokens=1),
    ]
    records = [
        record("1", 0, "2", "2", [track(0, "2", steps=steps)], details={"novelty": 0.25, "kept": [1, 0, 1]}),
        record("2", 0, "3", "3", [track(0, "3")], details={"novelty": 0.75, "kept": [1]}),
    ]
    figures = summarize_details(records)
    assert (
        figures["strategy: novelty"].count == 2
        and figures["strategy: novelty"].summary == "mean 0.5, min 0.25, max 0.75"
    )
    assert figures["strategy: kept"].summary == "length mean 2.00; items mean 0.75, min 0, max 1"
    assert figures["policy: cue"].count == 2 and figures["policy: cue"].summary == "Wait x1, Hmm x1"
    assert figures["policy: wasted.big"].summary == "mean 5, min 3, max 7"
    run = write_run(tmp_path / "novel", records, mode="novel")
    assert main([str(run)]) == 0
    printed = capsys.readouterr().out
    assert "Details, strategy: novelty" in printed and "Details, policy: wasted.big" in printed
    row = next(line for line in printed.splitlines() if line.startswith("novel") and "min 0.25" in line)
    assert row.split()[1] == "2"
