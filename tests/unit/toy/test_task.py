"""The toy arithmetic task: answers recomputed from the problem text, held-out split, step labels."""

import re

import pytest

from engine.data.problems import load_problems
from engine.errors import UsageError
from engine.toy.task import held_out_problems, judge_label, train_problems

SENTENCE = re.compile(r"(Add|Subtract|Multiply by|Divide by) (\d+)\.")


def recompute(text: str) -> list[int]:
    """The running values, read back from the problem's words alone."""
    start = re.match(r"Start with (\d+)\. ", text)
    assert start and text.endswith(" What is the result?")
    value, values = int(start[1]), []
    for verb, number in SENTENCE.findall(text):
        n = int(number)
        if verb == "Add":
            value += n
        elif verb == "Subtract":
            value -= n
        elif verb == "Multiply by":
            value *= n
        else:
            assert value % n == 0, f"inexact division in {text!r}"
            value //= n
        values.append(value)
    return values


def test_answers_and_steps_match_an_independent_computation():
    for problem in held_out_problems()[:200] + train_problems(200):
        values = recompute(problem.text)
        assert 3 <= len(values) <= 6
        assert all(0 <= v <= 999 for v in values)
        assert problem.answer == values[-1]
        chunks = problem.solution().split("\n\n")
        # One chunk per operation, then </think> and the boxed answer in the same chunk.
        assert len(chunks) == len(values) + 1
        assert chunks[-1] == f"</think>\n\\boxed{{{values[-1]}}}"
        for chunk, value in zip(chunks, values, strict=False):
            left, symbol, operand, result = re.fullmatch(r"(\d+) ([-+*/]) (\d+) = (\d+)", chunk).groups()
            assert int(result) == value == eval(f"{left} {symbol.replace('/', '//')} {operand}")  # noqa: S307


def test_train_and_test_never_share_a_problem_and_are_reproducible():
    test = [p.text for p in held_out_problems()]
    train = [p.text for p in train_problems(5000)]
    assert len(set(test)) == len(test) == 500
    assert len(set(train)) == len(train) == 5000
    assert not set(test) & set(train)
    assert [p.text for p in held_out_problems()] == test
    assert [p.text for p in train_problems(50)] == train[:50]


def test_the_toy_preset_is_the_held_out_split_by_default():
    problems = load_problems("toy")
    assert [p.id for p in problems] == [str(i) for i in range(500)]
    assert [(p.problem, p.answer) for p in problems] == [(t.text, str(t.answer)) for t in held_out_problems()]
    train = load_problems("toy", split="train")
    assert not {p.problem for p in train} & {p.problem for p in problems}
    with pytest.raises(UsageError, match="splits test and train"):
        load_problems("toy", split="validation")


def test_a_step_is_right_when_it_applies_the_next_operation_to_the_last_value_written():
    problem = held_out_problems()[0]
    steps = problem.steps()
    final = f"</think>\n\\boxed{{{problem.answer}}}"
    assert all(judge_label(problem, steps[:i], s) for i, s in enumerate([*steps, final]))
    left, rest = steps[0].split(" ", 1)
    wrong_result = steps[0].rsplit(" ", 1)[0] + f" {problem.values()[0] + 1}"
    assert not judge_label(problem, [], wrong_result)
    assert not judge_label(problem, [], f"{int(left) + 1} {rest}")
    assert not judge_label(problem, steps, f"</think>\n\\boxed{{{problem.answer + 10}}}")
    assert not judge_label(problem, steps[:1], final)  # the answer given too early
