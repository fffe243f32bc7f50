"""Scores from the big model's top logprobs (SpecReason's greedy and average)."""

import math

import pytest

from engine.reasoning.scoring import digit_distribution, score_from_logprobs

TOP = {"7": math.log(0.5), "8": math.log(0.3), " the": math.log(0.15), "2": math.log(0.05)}


def test_greedy_takes_the_generated_digit():
    assert score_from_logprobs("7", TOP, "greedy").value == 7.0


def test_greedy_scores_a_non_digit_token_as_zero():
    assert score_from_logprobs(" the", TOP, "greedy").value == 0.0


def test_average_renormalises_digits_and_takes_the_expected_value():
    # digits hold 0.5 + 0.3 + 0.05 = 0.85 of the mass; renormalised expectation:
    expected = (7 * 0.5 + 8 * 0.3 + 2 * 0.05) / 0.85
    score = score_from_logprobs("7", TOP, "average")
    assert score.value == pytest.approx(expected)
    assert score.distribution == pytest.approx({"2": 0.05 / 0.85, "7": 0.5 / 0.85, "8": 0.3 / 0.85})


def test_average_with_no_digit_in_the_top_logprobs_is_zero_with_empty_distribution():
    score = score_from_logprobs("the", {"the": -0.1, "a": -2.0}, "average")
    assert score.value == 0.0 and score.distribution == {}


def test_digit_tokens_with_spaces_merge():
    dist = digit_distribution({" 9": math.log(0.2), "9": math.log(0.2), "1": math.log(0.1)})
    assert dist == pytest.approx({"1": 0.2, "9": 0.8})


def test_unknown_method_is_refused():
    with pytest.raises(ValueError, match="unknown score method"):
        score_from_logprobs("7", TOP, "median")
