"""Answer extraction and equivalence, with the real math-verify in its helper process."""

import asyncio
import threading

import pytest
from structlog.testing import capture_logs

from engine.data.answers import (
    answers_equivalent,
    choice_letter,
    extract_answer,
    group_equivalent,
    is_correct,
    normalize_answer,
)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so $\boxed{\frac{1}{2}}$", r"\frac{1}{2}"),
        (r"first \boxed{3}, finally \boxed{\frac{\sqrt{3}}{2}}.", r"\frac{\sqrt{3}}{2}"),
        (r"\boxed{\left\{1, \{2\}\right\}}", r"\left\{1, \{2\}\right\}"),
        (r"\boxed{1} and then, cut short, \boxed{\frac{2", "1"),
        (r"$\boxed 5$", "5"),
        (r"\fbox{7}", "7"),
        (r"The answer is \boxed{4}. Answer: 9", "4"),
        ("So the answer is $\\frac{1}{2}$. Done.", r"\frac{1}{2}"),
        ("The final answer is 3.5.", "3.5"),
        ("So the answer is: $-4$", "-4"),
        ("**Answer:** 42", "42"),
        ("ANSWER: 17\nmore text", "17"),
        ("Answer: 1\nno wait. Answer: 2", "2"),
        ("no answer here", None),
        (r"\boxed{}", None),
        ("", None),
    ],
)
def test_extract_answer(text, expected):
    assert extract_answer(text) == expected


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"\boxed{C}", "C"),
        (r"\boxed{(b)}", "B"),
        (r"\boxed{\text{D}}", "D"),
        (r"\boxed{\textbf{(A)} 12}", "A"),
        ("Therefore the answer is (B).", "B"),
        ("Answer: C", "C"),
        ("answer is option D", "D"),
        ("(A) looks wrong, (D) holds", "D"),
        (r"\boxed{42}, that is (A)", "A"),
        ("the answer is a function of x", None),
        ("no letter at all", None),
    ],
)
def test_extract_answer_multiple_choice(text, expected):
    assert extract_answer(text, choices=True) == expected


def test_choice_letter():
    assert choice_letter("c") == "C"
    assert choice_letter(r"$\text{(B)}$") == "B"
    assert choice_letter("Cat") is None
    assert choice_letter("E") is None
    assert choice_letter(None) is None


def test_normalize_answer_changes_spelling_only():
    assert normalize_answer(r" $\left( 1 , 2 \right)$. ") == "(1,2)"
    assert normalize_answer(r"\dfrac{1}{2}") == normalize_answer(r"\tfrac{1}{2}") == r"\frac{1}{2}"
    assert normalize_answer(r"3 \cdot x") == r"3\cdot x"
    assert normalize_answer(r"1\,000") == "1000"


@pytest.mark.parametrize(
    ("a", "b"),
    [
        (r"\frac{1}{2}", "0.5"),
        (r"\frac{1}{2}", "1/2"),
        ("0.5", "1/2"),
        (r"\dfrac12", "0.5"),
        (r"3\sqrt{3}", r"\sqrt{27}"),
        (r"\frac{\sqrt{2}}{2}", r"\sqrt{2}/2"),
        ("x^2+2x+1", "(x+1)^2"),
        ("1,000", "1000"),
        ("007", "7"),
        (r"-\frac{3}{4}", "-3/4"),
        (r"\frac{-6}{8}", "-0.75"),
        (r"\{1,2\}", r"\{2,1\}"),
    ],
)
def test_equivalent_answers(a, b):
    assert answers_equivalent(a, b)
    assert answers_equivalent(b, a)


@pytest.mark.parametrize(
    ("a", "b"),
    [
        ("1/2", r"\frac{1}{3}"),
        ("12", "13"),
        ("1/2", "2/1"),
        ("(1, 2)", "(2, 1)"),
        (r"\pi", "3.14159"),
        (r"\frac{1}{", "1"),  # malformed: unbalanced braces
        ("abc}{", "abc"),
        ("", ""),
        ("   ", "0"),
    ],
)
def test_different_or_malformed_answers(a, b):
    assert not answers_equivalent(a, b)


def test_multiple_choice_equivalence_compares_letters():
    assert answers_equivalent("(c)", "C", multiple_choice=True)
    assert not answers_equivalent("A", "B", multiple_choice=True)
    assert not answers_equivalent("not a letter", "not a letter", multiple_choice=True)


def test_is_correct():
    assert is_correct("0.5", r"\frac12")
    assert is_correct("2", "x=2")  # the reference is the gold side
    assert not is_correct("3", "x=2")
    assert not is_correct(None, "1")
    assert not is_correct("1", None)
    assert is_correct(r"\text{(B)}", "B", multiple_choice=True)
    assert not is_correct("B", "C", multiple_choice=True)


def test_group_equivalent_keeps_first_members_as_representatives():
    answers = ["0.5", "7", "1/2", r"\frac{14}{2}", "abc}{", r"\frac{1}{2}", "3"]
    assert group_equivalent(answers) == [[0, 2, 5], [1, 3], [4], [6]]
    assert group_equivalent([]) == []
    assert group_equivalent(["A", "(a)", "B"], multiple_choice=True) == [[0, 1], [2]]


def test_runaway_check_times_out_and_the_helper_recovers():
    with capture_logs() as logs:
        assert not answers_equivalent(r"9^{9^{9^{9}}}", r"9^{9^{9^{8}}}", timeout_s=1.0)
    # abandoned at its deadline (what it was checked on: never an answer), not answered
    abandoned = [e for e in logs if e["event"] == "answer_check_abandoned"]
    assert [e["reason"] for e in abandoned] == ["no answer within the deadline"]
    # The helper was killed; the next check starts a new one and works.
    assert answers_equivalent(r"\frac{3}{4}", "0.75", timeout_s=30.0)


def test_safe_from_a_worker_thread():
    results = []
    thread = threading.Thread(target=lambda: results.append(answers_equivalent(r"\frac{5}{2}", "2.5")))
    thread.start()
    thread.join(60)
    assert results == [True]


async def test_safe_from_asyncio_through_threads():
    pairs = [(f"\\frac{{{i}}}{{4}}", str(i / 4)) for i in range(1, 6)] + [("1/4", "0.3")]
    results = await asyncio.gather(*(asyncio.to_thread(answers_equivalent, a, b) for a, b in pairs))
    assert results == [True] * 5 + [False]
