"""Every branch of one track, driven by scripted fake servers: kept and rewritten steps, scores,
budget, end of thinking, stop rules, failures, and the token bookkeeping."""

import math
from collections import defaultdict

import pytest

from engine.config import ReasoningConfig
from engine.datasets import Problem
from engine.policies.spec import SpecSettings
from engine.prompts import load_prompt_set
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import run_one_track

PROBLEM = Problem(id="p1", problem="What is 6 * 7?", answer="42", choices=None)
PROMPTS = load_prompt_set("default")


def kind(body):
    if body["max_tokens"] == 1 and body.get("logprobs") == 10:
        return "score"
    if "\n\n" in (body.get("stop") or []):
        return "step"
    return "answer"


class Script:
    """Replies per request kind, in order; records the prompts of each kind."""

    def __init__(self, **replies):
        self.replies = {k: list(v) for k, v in replies.items()}
        self.prompts = defaultdict(list)

    def __call__(self, body):
        k = kind(body)
        self.prompts[k].append(body["prompt"])
        if not self.replies.get(k):
            raise AssertionError(f"unexpected {k} request")
        return self.replies[k].pop(0)


def step(text, stop_reason="\n\n"):
    """A step streamed one word (a token) at a time."""
    words = text.split(" ")
    return Reply(text=text, tokens=[w + " " for w in words[:-1]] + words[-1:], stop_reason=stop_reason)


def score(digit, prob=0.9):
    rest = (1 - prob) / 2
    return Reply(text=digit, top_logprobs=[{digit: math.log(prob), "0": math.log(rest), "x": math.log(rest)}])


ANSWER = Reply(text="So the answer is \\boxed{42}.", tokens=["So", " the", " answer", " is", " \\boxed{42}."])


async def run(make_models, small, big, config=ReasoningConfig(), mode="spec", thinking=True, settings=None):
    async with FakeOpenAIServer(small) as s, FakeOpenAIServer(big) as b:
        models = make_models(big=b, small=s, thinking=thinking)
        return await run_one_track(models, PROBLEM, PROMPTS, config, policy=mode, settings=settings)


async def test_step_scoring_at_threshold_is_kept_and_one_below_is_rewritten(make_models):
    small = Script(step=[step("six times seven"), step("it is forty two", stop_reason="</think>")])
    big = Script(score=[score("7"), score("6")], step=[step("6 * 7 = 42", stop_reason="</think>")], answer=[ANSWER])
    record = await run(make_models, small, big)
    first, second = record.steps
    assert (first.writer, first.score, first.draft, first.accepted) == ("small", 7.0, None, True)
    assert (second.writer, second.score, second.draft, second.accepted) == ("big", 6.0, "it is forty two", False)
    assert second.text == "6 * 7 = 42"
    assert record.finish_reason == "think_end" and record.answer == "42" and record.answer_model == "big"
    # the rewrite continues the same prefix as the rejected draft (SpecReason)
    assert big.prompts["step"][0] == small.prompts["step"][1]
    assert big.prompts["answer"][0].endswith("six times seven\n\n6 * 7 = 42\n\n</think>\n\n")


async def test_score_prompt_holds_the_step_the_rating_request_and_the_score_prefix(make_models):
    small = Script(step=[step("draft step", stop_reason="</think>")])
    big = Script(score=[score("9")], answer=[ANSWER])
    await run(make_models, small, big)
    prompt = big.prompts["score"][0]
    assert "<think>\ndraft step" in prompt
    assert PROMPTS.render_score(PROBLEM.problem, "draft step") in prompt
    assert prompt.endswith(PROMPTS.render_score_prefix())


async def test_average_score_method_uses_the_digit_distribution(make_models):
    small = Script(step=[step("a b", stop_reason="</think>")])
    top = [{"8": math.log(0.5), "6": math.log(0.5)}]
    big = Script(score=[Reply(text="8", top_logprobs=top)], answer=[ANSWER])
    record = await run(make_models, small, big, settings=SpecSettings(score_method="average"))
    assert record.steps[0].score == pytest.approx(7.0)
    assert record.steps[0].score_distribution == pytest.approx({"6": 0.5, "8": 0.5})
    assert record.steps[0].writer == "small"


async def test_no_digit_among_top_logprobs_scores_zero_and_rewrites(make_models):
    small = Script(step=[step("bad", stop_reason="</think>")])
    big = Script(
        score=[Reply(text="x", top_logprobs=[{"x": -0.1, "y": -3.0}])],
        step=[step("good", stop_reason="</think>")],
        answer=[ANSWER],
    )
    record = await run(make_models, small, big, settings=SpecSettings(score_method="average"))
    assert record.steps[0].score == 0.0 and record.steps[0].score_distribution == {}
    assert record.steps[0].writer == "big" and record.steps[0].text == "good"


async def test_budget_exhaustion_closes_thinking_with_the_answer_template(make_models):
    small = Script(step=[step("one two three"), step("four five six")])
    big = Script(score=[score("9"), score("9")], answer=[ANSWER])
    record = await run(make_models, small, big, ReasoningConfig(token_budget=5, max_step_tokens=4))
    assert record.finish_reason == "budget"
    assert record.thinking_tokens == 6
    assert [s.tokens for s in record.steps] == [3, 3]
    # the second step may only use what the budget has left
    assert small.prompts["step"] and len(small.prompts["step"]) == 2
    assert big.prompts["answer"][0].endswith("four five six\n\n" + PROMPTS.render_answer())
    assert record.answer == "42"


async def test_step_with_boxed_answer_ends_without_an_answer_request(make_models):
    small = Script(step=[step("so \\boxed{42}")])
    big = Script(score=[score("8")])
    record = await run(make_models, small, big)
    assert record.finish_reason == "answer" and record.answer == "42" and record.answer_model == "small"
    assert record.answer_tokens == 0 and "answer" not in big.prompts


async def test_repeated_step_ends_thinking(make_models):
    small = Script(step=[step("same"), step("same")])
    big = Script(score=[score("9"), score("9")], answer=[ANSWER])
    record = await run(make_models, small, big)
    assert record.finish_reason == "repeat" and len(record.steps) == 2


async def test_first_n_steps_come_from_the_big_model(make_models):
    small = Script(step=[step("small one", stop_reason="</think>")])
    big = Script(step=[step("big one")], score=[score("9")], answer=[ANSWER])
    record = await run(make_models, small, big, settings=SpecSettings(first_n_steps_base_model=1))
    assert [s.writer for s in record.steps] == ["big", "small"]
    assert record.steps[0].score is None


@pytest.mark.parametrize("mode", ["big", "small"])
async def test_single_model_modes_use_only_their_model(make_models, mode):
    alone = Script(step=[step("x y"), step("z", stop_reason="</think>")], answer=[ANSWER])
    other = Script()
    small, big = (alone, other) if mode == "small" else (other, alone)
    record = await run(make_models, small, big, ReasoningConfig(answer_model=mode), mode=mode)
    assert {s.writer for s in record.steps} == {mode}
    assert not other.prompts
    assert set(record.usage) == {mode}


async def test_token_totals_equal_the_sums_of_steps_and_answer(make_models):
    small = Script(step=[step("a b c"), step("d e", stop_reason="</think>")])
    big = Script(score=[score("9"), score("1")], step=[step("f g h i", stop_reason="</think>")], answer=[ANSWER])
    record = await run(make_models, small, big)
    assert record.thinking_tokens == sum(s.tokens for s in record.steps) == 7
    assert record.answer_tokens == 5
    # small: two drafts (3 + 2); big: two scores (1 + 1), one rewrite (4), the answer (5)
    assert record.usage["small"].completion_tokens == 5 and record.usage["small"].requests == 2
    assert record.usage["big"].completion_tokens == 11 and record.usage["big"].requests == 4


async def test_a_server_error_fails_the_track_and_keeps_what_it_did(make_models):
    small = Script(step=[step("fine"), Reply(status=400, error_message="prompt too long")])
    big = Script(score=[score("9")])
    record = await run(make_models, small, big)
    assert record.finish_reason == "failed"
    assert "prompt too long" in record.error
    assert len(record.steps) == 1 and record.answer is None


async def test_non_thinking_model_gets_no_think_tags(make_models):
    small = Script(step=[step("one"), Reply(text="", tokens=[], stop_reason=None)])
    big = Script(score=[score("9"), score("9")], answer=[ANSWER])
    record = await run(make_models, small, big, thinking=False)
    assert record.finish_reason == "repeat"
    assert all("<think>" not in p for p in small.prompts["step"] + big.prompts["answer"])
    assert "</think>" not in big.prompts["answer"][0]
