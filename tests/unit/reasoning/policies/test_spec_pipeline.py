"""Pipelined speculation (`--pipeline_depth`) on scripted fake servers whose replies depend only on
the request, never on the order requests arrive in: the same record as the sequential loop, drafts
made ahead while the big model scores, and the work ahead cancelled and counted when it is
thrown away. What must happen before what is ordered by events (a reply held until another
request has arrived), never by sleeps."""

import asyncio
import dataclasses
import json
import re
from collections import Counter

import pytest

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.errors import UsageError
from engine.reasoning.policies import POLICIES
from engine.reasoning.policies.base import StepContext
from engine.reasoning.policies.spec import SpecSettings
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.track import track_messages
from engine.records import ModelUsage, ProblemRecord
from tests.clocks import settled
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import assert_usage_is_its_costs, run_one_track
from tests.unit.reasoning.test_track import ANSWER, by_kind, score

PROBLEM = Problem(id="p1", problem="What is 6 * 7?", answer="42", choices=None)
PROMPTS = load_prompt_set("default")
SEED = 11


def never():
    """An event nobody sets: a reply that waits for it comes only when its client goes away."""
    return asyncio.Event()


class Sim:
    """Replies from the request alone. A step's index is the number of delimiters after `<think>`;
    drafts and rewrites carry the index and the request's seed in their text, so a request sent
    with another seed or prefix writes another record; the step of index `last` states the answer,
    which ends thinking. The judge's digit is `scores[index]`.

    Orders by events: `arrivals` lists ("draft" | "score", index) as requests arrive; with `ahead`
    (the pipeline's depth) a score of index i is answered once the draft of index i + `ahead` (or
    `last`) has arrived, so every draft
    the pipeline makes ahead reaches the server before a verdict can throw it away; `holds` maps a
    (what, index) to the arrival its reply waits for instead. Drafts of `slow_drafts` indices
    written on top of a draft (not of a rewrite), and scores when `held_scores`, never answer;
    scores of `failing_scores` indices fail with HTTP 400."""

    def __init__(self, scores, *, last=5, ahead=None, holds=None, slow_drafts=(), failing_scores=(), held_scores=False):
        self.scores, self.last, self.failing_scores = scores, last, set(failing_scores)
        self.ahead, self.holds, self.slow_drafts, self.held_scores = ahead, holds or {}, set(slow_drafts), held_scores
        self.arrivals: list[tuple[str, int]] = []
        self._arrived: dict[tuple[str, int], asyncio.Event] = {}

    def arrived(self, what, index) -> asyncio.Event:
        return self._arrived.setdefault((what, index), asyncio.Event())

    def _arrive(self, what, index):
        self.arrivals.append((what, index))
        self.arrived(what, index).set()

    def small(self, body):
        index = self._index(body)
        self._arrive("draft", index)
        on_a_draft = f"draft{index - 1} " in body["prompt"]
        after = never() if index in self.slow_drafts and on_a_draft else self._held("draft", index)
        return self._step(f"draft{index} seed{body.get('seed')} words", index, after)

    def big(self, kind, body):
        if kind == "score":
            index = max(int(i) for i in re.findall(r"draft(\d+)", body["prompt"]))
            self._arrive("score", index)
            if index in self.failing_scores:
                return Reply(status=400, error_message="scripted bad request", after=self._score_after(index))
            return dataclasses.replace(score(str(self.scores[index])), after=self._score_after(index))
        if kind == "step":
            index = self._index(body)
            return self._step(f"rewrite{index} seed{body.get('seed')}", index, None)
        return ANSWER

    def _held(self, what, index):
        key = self.holds.get((what, index))
        return None if key is None else self.arrived(*key)

    def _score_after(self, index):
        if self.held_scores:
            return never()
        if self.ahead is None:
            return self._held("score", index)
        return self._held("score", index) or self.arrived("draft", min(index + self.ahead, self.last))

    def _index(self, body):
        head, found, reasoning = body["prompt"].rpartition("<think>")
        return reasoning.count("\n\n") if found else 0  # a first step has no `<think>` (SpecReason)

    def _step(self, text, index, after):
        text += " \\boxed{42}" if index >= self.last else ""
        words = text.split(" ")
        tokens = [w + " " for w in words[:-1]] + words[-1:]
        return Reply(text=text, tokens=tokens, stop_reason="\n\n", after=after)


# A bound that only a pipeline that never sends what a held reply waits for reaches (it fails
# then instead of hanging until pytest-timeout).
STUCK_S = 60


async def run(make_models, sim, depth, config=ReasoningConfig()):
    async with FakeOpenAIServer(sim.small) as s, FakeOpenAIServer(by_purpose=by_kind(sim.big)) as b:
        models = make_models(big=b, small=s)
        settings = SpecSettings(pipeline_depth=depth)
        async with asyncio.timeout(STUCK_S):
            record = await run_one_track(models, PROBLEM, PROMPTS, config, settings=settings, seed=SEED)
        # The servers have seen every request the client cancelled end (an event, not a pause).
        await s.quiet()
        await b.quiet()
        return record, s, b


def used_costs(costs):
    """The requests a record used, without their timings: who asked, why, and what they cost."""
    return sorted((c.role, c.purpose, c.prompt_tokens, c.completion_tokens) for c in costs if not c.wasted)


def without_timings_and_waste(record):
    data = dataclasses.asdict(record)
    for name in ("latency_s", "finished_at", "wasted"):
        data.pop(name)
    data["costs"] = used_costs(record.costs)
    for step, kept in zip(data["steps"], record.steps, strict=True):
        step.pop("latency_s"), step.pop("wasted")
        step["costs"] = used_costs(kept.costs)
    return data


def pipelined_record(track):
    """A problem record holding one track (what `assert_usage_is_its_costs` reads)."""
    return ProblemRecord("r", "d", "p", 0, "test", "q", None, tracks=[track], usage=track.usage)


def speculations_left():
    return [t for t in asyncio.all_tasks() if t.get_name().startswith("speculation")]


def bodies(*servers):
    return Counter(json.dumps(body, sort_keys=True) for server in servers for body in server.requests)


SCORES = {0: 9, 1: 3, 2: 8, 3: 7, 4: 2, 5: 9}


@pytest.mark.parametrize("depth", [1, 2])
async def test_a_pipelined_track_writes_the_record_of_the_sequential_one(make_models, depth):
    sequential, seq_small, seq_big = await run(make_models, Sim(SCORES), 0)
    pipelined, small, big = await run(make_models, Sim(SCORES, ahead=depth), depth)
    assert [s.writer for s in sequential.steps] == ["small", "big", "small", "small", "big", "small"]
    assert sequential.steps[1].text == f"rewrite1 seed{SEED * 7919 + 4 + 2}"
    assert without_timings_and_waste(pipelined) == without_timings_and_waste(sequential)
    # every request of the sequential loop was sent, byte for byte, by the pipelined one
    assert bodies(seq_small, seq_big) - bodies(small, big) == Counter()
    assert sequential.wasted == {} and all(s.wasted == {} for s in sequential.steps)
    # drafts made on top of the two rejected drafts were thrown away and counted with their step
    assert pipelined.steps[1].wasted["small"].requests >= 1 and pipelined.steps[4].wasted["small"].requests >= 1
    assert pipelined.wasted["small"].requests == sum(s.wasted["small"].requests for s in pipelined.steps if s.wasted)
    assert len(small.requests) - len(seq_small.requests) == pipelined.wasted["small"].requests
    # each request thrown away has its entry, counted in `wasted` where it was thrown away
    assert_usage_is_its_costs(pipelined_record(pipelined))
    # nothing was drafted past the step that states the answer
    assert max(Sim(SCORES)._index(body) for body in small.requests) == 5


async def test_the_next_draft_is_written_while_the_big_model_scores(make_models):
    scores = dict.fromkeys(range(6), 9)
    # The score of step 0 is answered only once the score of step 1 has arrived: the track ends
    # only if draft 1 and its score were sent while step 0 was being scored.
    sim = Sim(scores, holds={("score", 0): ("score", 1)})
    record, _, _ = await run(make_models, sim, 1)
    assert [s.writer for s in record.steps] == ["small"] * 6 and record.wasted == {}
    order = sim.arrivals
    # (draft 1 and score 0 are sent together when draft 0 is in: either may arrive first)
    assert order[0] == ("draft", 0) and set(order[1:4]) == {("score", 0), ("draft", 1), ("score", 1)}
    # depth 1: draft 2 waits for step 0's verdict, which came after score 1 arrived
    assert order.index(("draft", 2)) > order.index(("score", 1))


async def test_a_rejection_cancels_the_drafts_in_flight_on_top_of_it(make_models):
    # Draft 1 on top of draft 0 never answers; step 0's rejection comes once it has arrived.
    sim = Sim({0: 2, 1: 9, 2: 9, 3: 9, 4: 9, 5: 9}, slow_drafts=[1], holds={("score", 0): ("draft", 1)})
    record, small, _ = await run(make_models, sim, 2)
    assert small.disconnects == 1  # it was cut (else the track would never have ended)
    assert record.steps[0].writer == "big"
    assert record.steps[0].wasted == {"small": ModelUsage(0, 0, 1)}
    assert len(record.steps) == 6 and record.finish_reason == "answer" and record.answer == "42"


async def test_nothing_is_drafted_past_the_budget(make_models):
    # Thinking stops on the budget after step 1 (3 + 3 tokens): the pipeline foresees it.
    config = ReasoningConfig(token_budget=6, max_step_tokens=8)
    record, small, _ = await run(make_models, Sim(dict.fromkeys(range(6), 9)), 2, config)
    assert record.finish_reason == "budget" and len(record.steps) == 2
    assert len(small.requests) == 2 and record.wasted == {}


async def test_a_track_that_fails_cancels_the_work_ahead_and_counts_it(make_models):
    # The score of draft 1 fails once draft 2, made on top of draft 1 and never answered, has arrived.
    sim = Sim(dict.fromkeys(range(6), 9), slow_drafts=[2], failing_scores=[1], holds={("score", 1): ("draft", 2)})
    record, small, _ = await run(make_models, sim, 1)
    assert record.finish_reason == "failed" and "scripted bad request" in record.error
    assert len(record.steps) == 1 and small.disconnects == 1
    # the failed step's draft (5 prompt and 3 completion tokens) and score, and draft 2 cut short
    assert record.wasted == {"small": ModelUsage(5, 3, 2), "big": ModelUsage(0, 0, 1)}
    assert speculations_left() == []


async def test_a_cancelled_track_leaves_no_request_behind(make_models):
    sim = Sim(dict.fromkeys(range(6), 9), held_scores=True)
    async with FakeOpenAIServer(sim.small) as s, FakeOpenAIServer(by_purpose=by_kind(sim.big)) as b:
        models = make_models(big=b, small=s)
        task = asyncio.create_task(
            run_one_track(models, PROBLEM, PROMPTS, settings=SpecSettings(pipeline_depth=2), seed=SEED)
        )
        # the scores of drafts 0, 1 and 2, none ever answered
        await settled(lambda: len(b.requests) == 3, "three scores at the server")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await s.quiet()
        await b.quiet()
        assert speculations_left() == []
        assert len(s.requests) == 3
        assert b.disconnects == 3 and b.in_flight == 0 and s.in_flight == 0


async def test_a_step_whose_context_differs_from_the_one_drafted_for_is_drafted_afresh(make_models):
    sim = Sim(dict.fromkeys(range(6), 9))
    async with FakeOpenAIServer(sim.small) as s, FakeOpenAIServer(by_purpose=by_kind(sim.big)) as b:
        models = make_models(big=b, small=s)
        config = ReasoningConfig()
        policy = POLICIES["spec"].start(SpecSettings(pipeline_depth=1), models, PROMPTS, config)
        ctx = StepContext(
            models, track_messages(PROBLEM, PROMPTS, None), "", (), 0, config, PROMPTS, PROBLEM.problem, SEED
        )
        first = await policy.step(ctx)
        assert first.step.text.startswith("draft0")
        # steps 1 and 2 (one ahead of step 1) are drafted and being scored
        await settled(lambda: len(b.requests) == 3, "the scores of steps 0, 1 and 2 at the server")
        # step 1 comes with a context the draft made ahead did not assume (another token limit)
        clipped = dataclasses.replace(config, max_step_tokens=3)
        later = dataclasses.replace(ctx, reasoning=first.step.text + "\n\n", steps=(first.step.text,), index=1)
        second = await policy.step(dataclasses.replace(later, config=clipped))
        assert second.step.wasted["small"].requests == 2 and second.step.wasted["big"].requests == 2
        drafts_of_step_1 = [r for r in s.requests if r["prompt"].endswith(first.step.text + "\n\n")]
        assert [r["max_tokens"] for r in drafts_of_step_1] == [config.max_step_tokens, 3]
        policy.close()


def test_pipeline_depth_is_validated():
    with pytest.raises(UsageError, match="--pipeline_depth"):
        SpecSettings(pipeline_depth=-1).validate()
    with pytest.raises(UsageError, match="--pipeline_depth"):
        SpecSettings(pipeline_depth=99).validate()
