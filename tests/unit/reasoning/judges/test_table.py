"""The step judges table (issue 32.1): `spec` asks the judge `--scorer` names, keeps a draft whose
value reaches that judge's bar, and records which judge ruled, its value and its requests' cost;
the searches ask the same table for every step's value. Hand-computed on scripted fake servers."""

import math

import pytest

from engine.reasoning.judges import JUDGES, JudgeInputs
from engine.reasoning.judges.base import ScoreQuery
from engine.reasoning.policies.spec import SpecSettings
from engine.reasoning.settings import ReasoningConfig
from engine.records import Role, StepOutcome, usage_of_costs
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import run_one_track
from tests.unit.reasoning.test_track import PROBLEM, PROMPTS, Script, by_kind, score, step


def reward(good: float) -> Reply:
    """The tag-token PRM's one token, with P("+") = `good` against P("-")."""
    return Reply(text="+", top_logprobs=[{"+": math.log(good), "-": math.log(1 - good)}])


def prm_settings(**changes) -> SpecSettings:
    return SpecSettings(scorer="prm", prm_kind="tag_token", **changes)


async def run_with_prm(make_models, small, big, rewards, settings):
    prm_replies = list(rewards)
    async with (
        FakeOpenAIServer(by_purpose=by_kind(small)) as s,
        FakeOpenAIServer(by_purpose=by_kind(big)) as b,
        FakeOpenAIServer(by_purpose={"prm": lambda body: prm_replies.pop(0)}) as p,
    ):
        models = make_models(big=b, small=s, prm=p)
        record = await run_one_track(models, PROBLEM, PROMPTS, ReasoningConfig(), policy="spec", settings=settings)
        return record, b, p


async def test_the_prm_keeps_a_draft_at_its_bar_and_the_big_model_rewrites_one_below(make_models):
    small = Script(step=[step("six times seven"), step("it is forty two")])
    big = Script(step=[step("6 * 7 = 42 so \\boxed{42}")])
    record, b, p = await run_with_prm(make_models, small, big, [reward(0.75), reward(0.25)], prm_settings())
    first, second = record.steps
    assert (first.writer, first.outcome, first.judge) == (Role.SMALL, StepOutcome.ACCEPTED, "prm")
    assert first.score == pytest.approx(0.75)
    assert (second.writer, second.outcome, second.draft) == (Role.BIG, StepOutcome.REWRITTEN, "it is forty two")
    assert second.score == pytest.approx(0.25) and record.answer == "42"
    # the big model only rewrote: it was never asked for a 0-9 score
    assert b.requests_for("score") == [] and len(b.requests_for("rewrite")) == 1
    assert len(p.requests_for("prm")) == 2
    # each step's judge entry names the judge, its value, its tokens and seconds
    for kept, value in ((first, 0.75), (second, 0.25)):
        (judged,) = [c for c in kept.costs if c.purpose == "prm"]
        assert (judged.role, judged.judge, judged.verdict) == (Role.PRM, "prm", pytest.approx(value))
        assert judged.completion_tokens == 1 and judged.ended_at >= judged.started_at
    # the track counts every request once: the PRM's two scores, two drafts, one rewrite
    assert record.usage == usage_of_costs(c for step in record.steps for c in step.costs if not c.wasted)
    assert (record.usage["prm"].requests, record.usage["small"].requests, record.usage["big"].requests) == (2, 2, 1)


async def test_the_prm_bar_is_its_own_flag(make_models):
    small = Script(step=[step("six times seven \\boxed{42}")])
    big = Script()
    record, _, _ = await run_with_prm(make_models, small, big, [reward(0.6)], prm_settings(prm_threshold=0.5))
    (only,) = record.steps
    assert only.outcome == StepOutcome.ACCEPTED and only.score == pytest.approx(0.6)


async def test_the_big_judge_is_still_specreasons_and_marks_its_entries(make_models):
    small = Script(step=[step("six times seven \\boxed{42}")])
    big = Script(score=[score("8")])
    async with (
        FakeOpenAIServer(by_purpose=by_kind(small)) as s,
        FakeOpenAIServer(by_purpose=by_kind(big)) as b,
    ):
        record = await run_one_track(make_models(big=b, small=s), PROBLEM, PROMPTS, policy="spec")
    (only,) = record.steps
    assert (only.judge, only.score, only.outcome) == ("judge", 8.0, StepOutcome.ACCEPTED)
    (judged,) = [c for c in only.costs if c.purpose == "score"]
    assert (judged.role, judged.judge, judged.verdict) == (Role.BIG, "judge", 8.0)


async def test_a_search_asks_the_same_table_for_every_steps_value(make_models):
    rewards = [reward(0.9), reward(0.2)]
    async with FakeOpenAIServer(by_purpose={"prm": lambda body: rewards.pop(0)}) as p:
        prm = make_models(prm=p)["prm"]
        scorer = JUDGES["prm"].every_step(JudgeInputs(prm, PROMPTS, "\n\n", prm_kind="tag_token"))
        verdict = await scorer.score(ScoreQuery(PROBLEM.problem, (), ("a", "b")))
    assert verdict.values == [pytest.approx(0.9), pytest.approx(0.2)]


def test_each_judge_names_the_model_it_asks_and_the_flag_of_its_bar():
    assert {name: (spec.role, spec.threshold_flag) for name, spec in JUDGES.items()} == {
        "judge": (Role.BIG, "score_threshold"),
        "prm": (Role.PRM, "prm_threshold"),
    }
    for spec in JUDGES.values():
        assert spec.threshold_flag in {f for f in SpecSettings.__dataclass_fields__}


def candidate(text: str) -> Reply:
    """A candidate of the step, a word a token, with its sampled tokens' logprobs (as `logprobs=0` gives)."""
    words = step(text).token_list()
    return Reply(text=text, tokens=words, stop_reason="\n\n", top_logprobs=[{w: -0.5} for w in words])


def drafts(*texts: str) -> Reply:
    first, *others = (candidate(t) for t in texts)
    first.others = others
    return first


@pytest.mark.parametrize(
    ("rewards", "kept", "outcome"),
    [
        # the best that passes is kept: the second (0.9) over the first (0.8), not the third (0.1)
        ([0.8, 0.9, 0.1], "b b \\boxed{42}", StepOutcome.ACCEPTED),
        # equal values: the first written
        ([0.9, 0.9, 0.2], "a \\boxed{42}", StepOutcome.ACCEPTED),
        # none passes: the big model writes the step, and the best-rated draft is the one recorded
        ([0.3, 0.6, 0.1], "6 * 7 = 42 so \\boxed{42}", StepOutcome.REWRITTEN),
    ],
)
async def test_several_drafts_a_step_keep_the_best_that_passes(make_models, rewards, kept, outcome):
    small = Script(step=[drafts("a \\boxed{42}", "b b \\boxed{42}", "c c c \\boxed{42}")])
    big = Script(step=[step("6 * 7 = 42 so \\boxed{42}")])
    settings = prm_settings(drafts_per_step=3)
    by_text = dict(zip(("a ", "b b", "c c c"), rewards, strict=True))

    def rate(body):
        text = body["prompt"]
        return reward(next(value for start, value in by_text.items() if f"{start}" in text.rsplit("<think>", 1)[-1]))

    async with (
        FakeOpenAIServer(by_purpose=by_kind(small)) as s,
        FakeOpenAIServer(by_purpose=by_kind(big)) as b,
        FakeOpenAIServer(by_purpose={"prm": rate}) as p,
    ):
        models = make_models(big=b, small=s, prm=p)
        record = await run_one_track(models, PROBLEM, PROMPTS, ReasoningConfig(), policy="spec", settings=settings)
        (asked,) = s.requests
    (only,) = record.steps
    assert asked["n"] == 3 and asked["logprobs"] == 0
    assert (only.text, only.outcome) == (kept, outcome)
    assert only.detail == {"draft_values": pytest.approx(rewards)}
    assert only.score == pytest.approx(max(rewards))
    if outcome == StepOutcome.REWRITTEN:
        assert only.draft == "b b \\boxed{42}" and only.writer == Role.BIG
    else:  # the kept candidate's own tokens, not the request's three
        assert only.tokens == len(step(kept).token_list())
    # one draft request charged once (all three candidates' tokens), three judgings
    judged = [c for c in only.costs if c.purpose == "prm"]
    assert sorted(c.verdict for c in judged) == pytest.approx(sorted(rewards))
    assert only.usage["small"].requests == 1 and only.usage["small"].completion_tokens == 2 + 3 + 4
