"""SpecLRM's reading of an answer (its extract_final_answer), which the `speclrm` vote counts."""

import pytest

from engine.data.answers import extract_answer
from engine.data.speclrm_answers import speclrm_answer


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("so \\boxed{042}.", "42"),  # int(): leading zeros go
        ("\\boxed{ -7 }", "-7"),
        ("first \\boxed{3}, then \\boxed{4}", "3"),  # the first box, where spectra's extraction takes the last
        ("\\boxed{\\frac{1}{2}}", "\\frac{1}{2}"),  # nested braces kept, not an integer
        ("\\boxed{12", None),  # never closed
        ("The answer is 12.", None),  # no box: no answer for math
    ],
)
def test_math_answers(text, expected):
    assert speclrm_answer(text) == expected


def test_it_differs_from_spectras_extraction_where_the_review_says():
    text = "first \\boxed{3}, then \\boxed{4}"
    assert (speclrm_answer(text), extract_answer(text)) == ("3", "4")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("\\boxed{C}", "C"),
        ("\\boxed{B) Argon}", "B"),
        ("\\boxed{Argon}", "A"),  # SpecLRM takes a leading A-D, even of a word
        ("\\boxed{Neon}", None),
        ("Answer: d", None),  # SpecLRM's fallback reads an upper-case letter only
        ("so the Answer: D", "D"),
    ],
)
def test_multiple_choice_answers(text, expected):
    assert speclrm_answer(text, choices=True) == expected
