"""Lookahead Reasoning on scripted fake servers whose replies depend only on the request: which steps
are kept or replaced, what each cost, and which requests were cancelled, computed by hand
(Speculative Thinking's tests are in test_takeover.py)."""

import asyncio
import re

import pytest

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.errors import UsageError
from engine.reasoning.policies.lookahead import LookaheadSettings
from engine.records import ModelUsage, ProblemRecord, StepOutcome
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import assert_usage_is_its_costs, run_one_track

PROBLEM = Problem(id="p1", problem="What is 6 * 7?", answer="42", choices=None)
PROMPTS = load_prompt_set("default")
SEED = 5
EQUIVALENCE_PREFIX = PROMPTS.render_equivalence_prefix()
ACCEPTED, REPLACED = StepOutcome.ACCEPTED, StepOutcome.REPLACED
KEPT_KEPT_REPLACED_KEPT_KEPT = [ACCEPTED, ACCEPTED, REPLACED, ACCEPTED, ACCEPTED]


def index_of(body):
    """A step's index: the delimiters after `<think>` (a first step has none)."""
    _, found, reasoning = body["prompt"].rpartition("<think>")
    return reasoning.count("\n\n") if found else 0


def step_reply(text, after=None):
    words = text.split(" ")
    return Reply(text=text, tokens=[w + " " for w in words[:-1]] + words[-1:], stop_reason="\n\n", after=after)


class Script:
    """The small model drafts `d{i} words` (step 4 states the answer). The big model writes the
    draft's very text at `same` positions, else `b{i} own words`. Requests of position 3 made on top
    of `d2` (round 1, K=4) never answer (an event nobody sets): in flight when the mismatch at
    position 2 cancels them.
    The equivalence judge rates `ratings[i]`."""

    def __init__(self, same, ratings=None, last=4):
        self.same, self.ratings, self.last = set(same), ratings or {}, last
        self.steps = {"small": [], "big": []}

    def text(self, index, writer):
        answer = " so \\boxed{42}" if index >= self.last else ""
        if writer == "small" or index in self.same:
            return f"d{index} words{answer}"
        return f"b{index} own words{answer}"

    def reply(self, writer, body):
        index = index_of(body)
        self.steps[writer].append(index)
        slow = index == 3 and "d2 words" in body["prompt"]
        return step_reply(self.text(index, writer), after=asyncio.Event() if slow else None)

    def small(self, body):
        return self.reply("small", body)

    def big(self, body):
        return self.reply("big", body)

    def verify(self, body):
        assert body["prompt"].endswith(EQUIVALENCE_PREFIX)
        index = int(re.findall(r"Step A: d(\d+)", body["prompt"])[-1])
        digit = str(self.ratings[index])
        return Reply(text=digit, top_logprobs=[{digit: -0.01}])


def servers(script):
    """The small model drafts; the big model writes its own steps (and, lookahead's judge, rates)."""
    rates = {"verify": script.verify} if hasattr(script, "verify") else {}
    return FakeOpenAIServer(by_purpose={"draft": script.small}), FakeOpenAIServer(
        by_purpose={"rewrite": script.big, **rates}
    )


async def run(make_models, script, settings, policy="lookahead"):
    small, big = servers(script)
    async with small as s, big as b:
        models = make_models(big=b, small=s)
        record = await run_one_track(models, PROBLEM, PROMPTS, policy=policy, settings=settings, seed=SEED)
        await s.quiet()  # the servers have seen the closed connections
        await b.quiet()
        return record, s, b


async def test_drafts_are_kept_up_to_the_first_mismatch_which_the_big_model_s_step_replaces(make_models):
    # Round 1 (K=4): positions 0, 1 match, 2 does not: d0, d1 kept, b2 replaces d2; position 3
    # (draft and big step, both slow) is cancelled. Round 2 from b2: d3, d4 match; d4 answers.
    script = Script(same={0, 1, 3, 4})
    record, small, big = await run(make_models, script, LookaheadSettings(lookahead_steps=4, verifier="exact"))
    assert [s.text for s in record.steps] == [
        "d0 words",
        "d1 words",
        "b2 own words",
        "d3 words",
        "d4 words so \\boxed{42}",
    ]
    assert [s.outcome for s in record.steps] == KEPT_KEPT_REPLACED_KEPT_KEPT
    assert [s.writer for s in record.steps] == ["small", "small", "big", "small", "small"]
    assert [(s.detail["round"], s.detail["position"]) for s in record.steps] == [(1, 0), (1, 1), (1, 2), (2, 0), (2, 1)]
    assert record.steps[2].draft == "d2 words" and record.finish_reason == "answer"
    # Requests: round 1 drafts 0-3 and big steps 0-3, round 2 drafts 3-4 and big steps 3-4.
    assert sorted(script.steps["small"]) == sorted(script.steps["big"]) == [0, 1, 2, 3, 3, 4]
    assert small.disconnects == 1 and big.disconnects == 1  # position 3 of round 1, both cancelled
    # What each step cost, and what was thrown away: a kept draft wastes the big model's version
    # (2 tokens "dN words"); the replaced step wastes its draft, and the cancelled position 3 one
    # request per model with no known tokens.
    assert record.steps[0].usage == {"small": ModelUsage(5, 2, 1)}
    assert record.steps[0].wasted == {"big": ModelUsage(5, 2, 1)}
    assert record.steps[2].usage == {"big": ModelUsage(5, 3, 1)}
    assert record.steps[2].wasted == {"small": ModelUsage(5, 2, 2), "big": ModelUsage(0, 0, 1)}
    cancelled = [c for c in record.steps[2].costs if c.cancelled]
    assert sorted((c.role, c.purpose, c.server) for c in cancelled) == [
        ("big", "rewrite", None),
        ("small", "draft", None),
    ]
    assert_usage_is_its_costs(ProblemRecord("r", "d", "p", 0, "t", "q", None, tracks=[record], usage=record.usage))


async def test_the_judge_verifier_keeps_a_draft_rated_at_the_threshold_and_replaces_one_below(make_models):
    # The big model's own steps always differ in text; the judge decides: 7 keeps, 6 replaces.
    script = Script(same=set(), ratings={0: 9, 1: 7, 2: 6, 3: 9, 4: 8})
    settings = LookaheadSettings(lookahead_steps=3, verifier="judge", equivalence_threshold=7)
    record, _, _ = await run(make_models, script, settings)
    assert [s.outcome for s in record.steps] == KEPT_KEPT_REPLACED_KEPT_KEPT
    assert [s.score for s in record.steps] == [9.0, 7.0, 6.0, 9.0, 8.0]
    # A kept draft's cost holds the judge's request; the replaced step's holds the big step and judge.
    assert record.steps[0].usage == {"small": ModelUsage(5, 2, 1), "big": ModelUsage(5, 1, 1)}
    assert record.steps[2].usage == {"big": ModelUsage(10, 4, 2)}


def test_lookahead_settings_refuse_what_cannot_work():
    with pytest.raises(UsageError, match="--lookahead_steps must be at least 1"):
        LookaheadSettings(lookahead_steps=0).validate()
    with pytest.raises(UsageError, match="--equivalence_threshold must be between 0 and 9"):
        LookaheadSettings(equivalence_threshold=10).validate()


async def test_the_embedding_verifier_keeps_drafts_whose_cosine_reaches_the_threshold(make_models):
    # Embeddings by the step's first word: d0 and d1 point the way of their big versions (cosine 1),
    # d2 away from b2 (cosine 0.6 < 0.9): kept, kept, replaced; round 2 keeps the rest.
    vectors = {"d0": [1, 0], "d1": [0, 1], "d2": [1, 0], "b2": [0.6, 0.8], "d3": [1, 1], "d4": [2, 1]}

    def embed(body):
        return [vectors[body["input"].split()[0]]]

    script = Script(same={0, 1, 3, 4})
    small, big = servers(script)
    async with small as s, big as b, FakeOpenAIServer([], pooler=embed) as e:
        models = make_models(big=b, small=s, embedder=e)
        settings = LookaheadSettings(lookahead_steps=3, verifier="embedding", embedding_threshold=0.9)
        record = await run_one_track(models, PROBLEM, PROMPTS, policy="lookahead", settings=settings, seed=SEED)
    assert [s.outcome for s in record.steps] == KEPT_KEPT_REPLACED_KEPT_KEPT
    assert record.steps[2].score == pytest.approx(0.6) and record.steps[0].score == pytest.approx(1.0)
    assert record.steps[0].usage["embedder"].requests == 2
