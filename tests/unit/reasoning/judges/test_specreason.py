"""Scores from the big model's top logprobs (SpecReason's greedy and average)."""

import asyncio
import dataclasses
import math

import pytest

from engine.data.prompts import load_prompt_set
from engine.reasoning.judges.base import ScoreQuery, aggregate_step_scores
from engine.reasoning.judges.specreason import EveryStepJudge, JudgeScorer, digit_distribution, score_from_logprobs
from engine.serving.chat import Message
from tests.fake_openai import FakeOpenAIServer, Reply

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


async def test_every_step_judge_asks_once_per_step_prefix_and_scores_every_step(make_models):
    # The judge rates step k by the steps it reads: s2 is the slip (0), the others are sound (9).
    def judge(body):
        judged = max(k for k in range(1, 5) if f"s{k}\n\n" in body["prompt"])
        digit = "0" if judged == 2 else "9"
        return Reply(text=digit, top_logprobs=[{digit: 0.0}])

    prompts = load_prompt_set("default")
    async with FakeOpenAIServer(judge) as big:
        inner = JudgeScorer(make_models(big=big)["big"], prompts, method="average", delimiter="\n\n")
        scorer = EveryStepJudge(inner)
        query = ScoreQuery("What is 1 + 1?", (Message("user", "What is 1 + 1?"),), ("s1", "s2", "s3"))
        first = await scorer.score(query)
        grown = await scorer.score(dataclasses.replace(query, steps=("s1", "s2", "s3", "s4")))
    assert first.values == [1.0, 0.0, 1.0] and grown.values == [1.0, 0.0, 1.0, 1.0]
    # min sees the slip the last step hides; the grown solution's first three steps were not asked again
    assert aggregate_step_scores(first.values, "last") == 1.0 and aggregate_step_scores(first.values, "min") == 0.0
    assert len(big.requests) == 4 and first.usage["big"].requests == 3 and grown.usage["big"].requests == 1


async def test_beams_sharing_a_prefix_at_the_same_time_ask_about_it_once(make_models):
    def judge(body):
        return Reply(text="9", top_logprobs=[{"9": 0.0}])

    prompts = load_prompt_set("default")
    async with FakeOpenAIServer(judge) as big:
        scorer = EveryStepJudge(JudgeScorer(make_models(big=big)["big"], prompts, method="average", delimiter="\n\n"))
        query = ScoreQuery("What is 1 + 1?", (Message("user", "What is 1 + 1?"),), ("s1", "s2"))
        one, other = await asyncio.gather(
            scorer.score(query), scorer.score(dataclasses.replace(query, steps=("s1", "s3")))
        )
    # s1 once, s2 and s3 once each; its cost entered once, by the beam that asked first
    assert len(big.requests) == 3
    assert one.values == other.values == [1.0, 1.0]
    assert one.usage["big"].requests + other.usage["big"].requests == 3
