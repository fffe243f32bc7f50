"""Lookahead Reasoning on scripted fake servers whose replies depend only on the request: which steps
are kept or replaced, what ruled, what each cost, and which requests were sent or cancelled, computed
by hand (Speculative Thinking's tests are in test_takeover.py). Where the order of events matters (how
far the window drafts ahead, what a replaced draft cancels), replies wait until the test lets them
through."""

import asyncio
import contextlib
import re

import pytest

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.errors import UsageError
from engine.reasoning.policies.lookahead import LookaheadSettings
from engine.records import ModelUsage, ProblemRecord, StepOutcome
from evaluators.details import summarize_details
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import assert_usage_is_its_costs, run_one_track

PROBLEM = Problem(id="p1", problem="What is 6 * 7?", answer="42", choices=None)
PROMPTS = load_prompt_set("default")
SEED = 5
ACCEPTED, REPLACED = StepOutcome.ACCEPTED, StepOutcome.REPLACED
KEPT_KEPT_REPLACED_KEPT_KEPT = [ACCEPTED, ACCEPTED, REPLACED, ACCEPTED, ACCEPTED]
ANSWER = " so \\boxed{42}"


def steps_in(body) -> list[str]:
    """The steps a request continues: the text after `<think>`, split at the delimiter (a first step has none)."""
    _, found, reasoning = body["prompt"].rpartition("<think>")
    return [step for step in reasoning.split("\n\n") if step.strip()] if found else []


def step_reply(text, after=None, *, cut=False):
    """A step of one token a word; `cut`: it stopped at the token limit, not at the delimiter."""
    words = text.split(" ")
    tokens = [w + " " for w in words[:-1]] + words[-1:]
    if cut:
        return Reply(text=text, tokens=tokens, finish_reason="length", after=after)
    return Reply(text=text, tokens=tokens, stop_reason="\n\n", after=after)


def servers(small, big, **others):
    """The small model drafts; the big model writes its own steps (and, `big_rating`, rates them)."""
    return FakeOpenAIServer(by_purpose={"draft": small}), FakeOpenAIServer(by_purpose={"rewrite": big, **others})


async def run(make_models, small, big, settings, *, big_also=None, **more):
    """One track on the small and big servers (and on `more`: role -> server); its record and the
    small and big servers."""
    async with contextlib.AsyncExitStack() as stack:
        small_server, big_server = servers(small, big, **(big_also or {}))
        s = await stack.enter_async_context(small_server)
        b = await stack.enter_async_context(big_server)
        extra = {role: await stack.enter_async_context(server) for role, server in more.items()}
        models = make_models(big=b, small=s, **extra)
        record = await run_one_track(models, PROBLEM, PROMPTS, policy="lookahead", settings=settings, seed=SEED)
        await s.quiet()  # the servers have seen the closed connections
        await b.quiet()
        return record, s, b


class Conductor:
    """Step replies that wait until the test lets them through (`let`), or all of them once it
    `opens`. A request is named `writer:` and the first word of each step it continues
    ("big:d0 d1": the big model's step after d0 and d1); `seen` lists the names in arrival order.
    `texts(writer, index)` is the text a writer writes at step `index`."""

    def __init__(self, texts):
        self.texts, self.seen, self.gates, self.open = texts, [], {}, False

    def replier(self, writer):
        def reply(body):
            steps = steps_in(body)
            name = f"{writer}:" + " ".join(step.split()[0] for step in steps)
            self.seen.append(name)
            gate = self.gates.setdefault(name, asyncio.Event())
            if self.open:
                gate.set()
            return step_reply(self.texts(writer, len(steps)), after=gate)

        return reply

    def let(self, *names):
        for name in names:
            self.gates.setdefault(name, asyncio.Event()).set()

    def open_all(self):
        self.open = True
        for gate in self.gates.values():
            gate.set()

    async def arrived(self, *names):
        async with asyncio.timeout(10):
            while not all(name in self.seen for name in names):
                await asyncio.sleep(0.005)


async def test_the_window_drafts_k_ahead_rolls_and_a_replaced_draft_cancels_what_is_ahead(make_models):
    # K = 2, exact. The small model drafts "dI words"; the big model writes "b0 words" at 0, "b2
    # words" at 2, else the draft's text; step 4 answers.
    def texts(writer, index):
        own = writer == "big" and index in (0, 2)
        return f"{'b' if own else 'd'}{index} words" + (ANSWER if index >= 4 else "")

    conductor = Conductor(texts)
    settings = LookaheadSettings(lookahead_steps=2, verifier="exact")
    small_server, big_server = servers(conductor.replier("small"), conductor.replier("big"))
    async with small_server as s, big_server as b:
        models = make_models(big=b, small=s)
        track = asyncio.create_task(run_one_track(models, PROBLEM, PROMPTS, policy="lookahead", settings=settings))
        # Round 1 holds the big model's first step: d0 opens position 1 (its big step and draft),
        # d1 opens position 2, whose big step starts but whose draft waits: two drafts are ahead.
        await conductor.arrived("big:", "small:")
        conductor.let("small:")
        await conductor.arrived("big:d0", "small:d0")
        conductor.let("small:d0")
        await conductor.arrived("big:d0 d1")
        assert conductor.seen.count("small:d0 d1") == 0 and not track.done()
        # Position 0 is the first step: its prefix ends with the prompt, not "\n\n", so the
        # reference rejects d0 unjudged and keeps b0; positions 1 and 2 are cancelled.
        conductor.let("big:")
        await conductor.arrived("big:b0", "small:b0")
        assert sorted(conductor.seen) == sorted(
            ["big:", "small:", "big:d0", "small:d0", "big:d0 d1", "big:b0", "small:b0"]
        )
        conductor.open_all()
        record = await track
        await s.quiet()
        await b.quiet()
    assert [step.text for step in record.steps] == ["b0 words", "d1 words", "b2 words", "d3 words", "d4 words" + ANSWER]
    assert [step.outcome for step in record.steps] == [REPLACED, ACCEPTED, REPLACED, ACCEPTED, ACCEPTED]
    assert [step.detail for step in record.steps] == [
        {"round": 1, "position": 0, "rejected_by": "half_sentence"},
        {"round": 2, "position": 0, "kept_by": "exact"},
        {"round": 2, "position": 1, "rejected_by": "exact"},
        {"round": 3, "position": 0, "kept_by": "exact"},
        {"round": 3, "position": 1, "kept_by": "exact"},
    ]
    assert record.steps[0].draft == "d0 words" and record.finish_reason == "answer"
    # b0 is kept; d0 and d1 (written) are thrown away, the big steps of positions 1 and 2 were
    # cancelled in flight (one request each, no known tokens); position 2's draft was never sent.
    assert record.steps[0].usage == {"big": ModelUsage(5, 2, 1)}
    assert record.steps[0].wasted == {"small": ModelUsage(10, 4, 2), "big": ModelUsage(0, 0, 2)}
    cancelled = [(c.role, c.purpose, c.server) for c in record.steps[0].costs if c.cancelled]
    assert cancelled == [("big", "rewrite", None), ("big", "rewrite", None)]
    # A kept draft wastes the big model's version of it.
    assert record.steps[1].usage == {"small": ModelUsage(5, 2, 1)}
    assert record.steps[1].wasted == {"big": ModelUsage(5, 2, 1)}
    assert_usage_is_its_costs(ProblemRecord("r", "d", "p", 0, "t", "q", None, tracks=[record], usage=record.usage))


def two_writers(big_texts):
    """The small model drafts "dI words" (step 4 answers); the big model writes `big_texts[I]`,
    else the draft's text."""

    def text(writer, index):
        answer = ANSWER if index >= 4 else ""
        if writer == "big" and index in big_texts:
            return big_texts[index] + answer
        return f"d{index} words{answer}"

    return lambda writer: lambda body: step_reply(text(writer, len(steps_in(body))))


async def test_the_judge_model_sees_only_the_two_steps_after_the_free_exact_check(make_models):
    # K = 2. At 1 the big model writes "D1  Words": equal once spaces go and case is ignored, kept
    # free; at 2 and 3 it writes other words, and the judge model rules: aligned at 2, not at 3.
    texts = two_writers({0: "b0 words", 1: "D1  Words", 2: "b2 other", 3: "b3 other"})
    judged = []

    def judge(body):
        """The judge model: "aligned" for d2 (whatever the big model wrote there), "un" for the rest."""
        judged.append(body)
        said = "aligned" if "<start_s2>\nd2 " in body["prompt"] else "un"
        return Reply(text=said, tokens=[said])

    async with FakeOpenAIServer(by_purpose={"verify": judge}) as judge_server:
        small_server, big_server = servers(texts("small"), texts("big"))
        async with small_server as s, big_server as b:
            models = make_models(big=b, small=s, judge=judge_server)
            settings = LookaheadSettings(lookahead_steps=2)
            record = await run_one_track(models, PROBLEM, PROMPTS, policy="lookahead", settings=settings, seed=SEED)
    assert [step.text for step in record.steps] == ["b0 words", "d1 words", "d2 words", "b3 other", "d4 words" + ANSWER]
    assert [step.outcome for step in record.steps] == [REPLACED, ACCEPTED, ACCEPTED, REPLACED, ACCEPTED]
    rulings = [{k: v for k, v in step.detail.items() if k not in ("round", "position")} for step in record.steps]
    assert rulings == [
        {"rejected_by": "half_sentence"},
        {"kept_by": "exact"},
        {"kept_by": "judge", "judge_said": "aligned"},
        {"rejected_by": "judge", "judge_said": "un"},
        {"kept_by": "exact"},
    ]
    # Two judgements, each of the two steps alone (never the problem), one greedy token after "[".
    assert sorted(re.search(r"<start_s2>\n(.*)\n<end_s2>", j["prompt"]).group(1) for j in judged) == [
        "d2 words",
        "d3 words",
    ]
    for body in judged:
        assert body["prompt"].startswith("<|im_start|>system\nYou are Qwen, created by Alibaba Cloud.")
        assert body["prompt"].endswith("<end_s2><|im_end|>\n<|im_start|>assistant\n[")
        assert PROBLEM.problem not in body["prompt"]
        assert (body["max_tokens"], body["temperature"], body["top_p"]) == (1, 0.0, 0.95) and "seed" not in body
    assert "<start_s1>\nb2 other\n<end_s1>" in judged[0]["prompt"] + judged[1]["prompt"]
    # The step the judge kept carries its request, marked with the judge and its verdict (1: aligned).
    assert record.steps[2].usage == {"small": ModelUsage(5, 2, 1), "judge": ModelUsage(5, 1, 1)}
    assert [(c.judge, c.verdict) for c in record.steps[2].costs if c.role == "judge"] == [("judge", 1.0)]
    assert record.steps[1].usage == {"small": ModelUsage(5, 2, 1)}, "the free check asks no one"
    # The evaluators' tables count the drafts kept by the free check and by the judge apart.
    details = summarize_details([ProblemRecord("r", "d", "p", 0, "t", "q", None, tracks=[record])])
    assert details["policy: kept_by"].summary == "exact x2, judge x1"
    assert details["policy: rejected_by"].summary == "half_sentence x1, judge x1"


def same_everywhere(cut_at=()):
    """Both models write "sI words" at step I (step 3 answers); at `cut_at` both stop at the token limit."""

    def reply(body):
        index = len(steps_in(body))
        return step_reply(f"s{index} words" + (ANSWER if index >= 3 else ""), cut=index in cut_at)

    return reply


@pytest.mark.parametrize(
    ("judge_half_sentences", "outcomes"),
    [(False, [REPLACED, ACCEPTED, REPLACED, ACCEPTED]), (True, [ACCEPTED] * 4)],
)
async def test_a_draft_after_a_half_sentence_is_rejected_unjudged_unless_asked(
    make_models, judge_half_sentences, outcomes
):
    # Step 1 stops at the token limit: the reference rejects the draft after it (and the first
    # draft, after the prompt) though its text is the big model's; --judge_half_sentences keeps them.
    settings = LookaheadSettings(lookahead_steps=2, verifier="exact", judge_half_sentences=judge_half_sentences)
    reply = same_everywhere(cut_at=(1,))
    record, _, _ = await run(make_models, reply, reply, settings)
    assert [step.text for step in record.steps] == ["s0 words", "s1 words", "s2 words", "s3 words" + ANSWER]
    assert [step.outcome for step in record.steps] == outcomes
    rejected = [step.detail.get("rejected_by") for step in record.steps]
    assert rejected == ([None] * 4 if judge_half_sentences else ["half_sentence", None, "half_sentence", None])


class Rated:
    """The small model drafts `dI words` (step 4 answers), the big model writes `bI own words`.
    Requests of step 3 made on top of `d2` never answer (an event nobody sets): in flight when the
    mismatch at step 2 cancels them. The big model rates `ratings[I]` (big_rating)."""

    def __init__(self, ratings):
        self.ratings = ratings

    def step(self, writer):
        def reply(body):
            steps = steps_in(body)
            index = len(steps)
            text = (f"d{index} words" if writer == "small" else f"b{index} own words") + (ANSWER if index >= 4 else "")
            slow = index == 3 and steps[-1] == "d2 words"
            return step_reply(text, after=asyncio.Event() if slow else None)

        return reply

    def rate(self, body):
        assert body["prompt"].endswith(PROMPTS.render_equivalence_prefix())
        index = int(re.findall(r"Step A: d(\d+)", body["prompt"])[-1])
        digit = str(self.ratings[index])
        return Reply(text=digit, top_logprobs=[{digit: -0.01}])


async def test_the_big_rating_keeps_a_draft_rated_at_the_threshold_and_replaces_one_below(make_models):
    # The big model's own steps always differ in text; its rating decides: 7 keeps, 6 replaces.
    script = Rated({0: 9, 1: 7, 2: 6, 3: 9, 4: 8})
    settings = LookaheadSettings(
        lookahead_steps=3, verifier="big_rating", equivalence_threshold=7, judge_half_sentences=True
    )
    record, _, _ = await run(
        make_models, script.step("small"), script.step("big"), settings, big_also={"verify": script.rate}
    )
    assert [s.outcome for s in record.steps] == KEPT_KEPT_REPLACED_KEPT_KEPT
    assert [s.score for s in record.steps] == [9.0, 7.0, 6.0, 9.0, 8.0]
    assert [s.detail.get("kept_by", s.detail.get("rejected_by")) for s in record.steps] == ["big_rating"] * 5
    # A kept draft's cost holds the rating's request.
    assert record.steps[0].usage == {"small": ModelUsage(5, 2, 1), "big": ModelUsage(5, 1, 1)}
    assert [(c.judge, c.verdict) for c in record.steps[0].costs if c.purpose == "verify"] == [("big_rating", 9.0)]


def test_lookahead_settings_refuse_what_cannot_work():
    with pytest.raises(UsageError, match="--lookahead_steps must be at least 1"):
        LookaheadSettings(lookahead_steps=0).validate()
    with pytest.raises(UsageError, match="--equivalence_threshold must be between 0 and 9"):
        LookaheadSettings(equivalence_threshold=10).validate()
    # A verifier's bar is idle under another verifier.
    assert set(LookaheadSettings().idle_flags()) == {"equivalence_threshold", "embedding_threshold"}
    assert set(LookaheadSettings(verifier="big_rating").idle_flags()) == {"embedding_threshold"}
    assert set(LookaheadSettings(verifier="embedding").idle_flags()) == {"equivalence_threshold"}


async def test_the_embedding_verifier_keeps_drafts_whose_cosine_reaches_the_threshold(make_models):
    # Embeddings by the step's first word: each draft points the way of the big model's step at its
    # position (cosine 1), except d2, away from b2 (cosine 0.6 < 0.9): kept, kept, replaced, kept, kept.
    vectors = {"d0": [1, 0], "b0": [2, 0], "d1": [0, 1], "b1": [0, 3], "d2": [1, 0], "b2": [0.6, 0.8]}
    vectors |= {"d3": [1, 1], "b3": [1, 1], "d4": [2, 1], "b4": [4, 2]}

    def embed(body):
        return [vectors[body["input"].split()[0]]]

    script = Rated({})
    settings = LookaheadSettings(
        lookahead_steps=3, verifier="embedding", embedding_threshold=0.9, judge_half_sentences=True
    )
    embedder = FakeOpenAIServer([], pooler=embed)
    record, _, _ = await run(make_models, script.step("small"), script.step("big"), settings, embedder=embedder)
    assert [s.outcome for s in record.steps] == KEPT_KEPT_REPLACED_KEPT_KEPT
    assert record.steps[2].score == pytest.approx(0.6) and record.steps[0].score == pytest.approx(1.0)
    assert record.steps[0].usage["embedder"].requests == 2
    assert record.steps[0].detail["kept_by"] == "embedding"
