"""Every branch of one track, driven by scripted fake servers: kept and rewritten steps, scores,
budget, end of thinking, stop rules, failures, and the token bookkeeping."""

import dataclasses
import functools
import math
from collections import defaultdict

import pytest

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.errors import Terminated, UsageError
from engine.reasoning.policies import POLICIES
from engine.reasoning.policies.single import SingleModelSettings
from engine.reasoning.policies.spec import SpecSettings
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.track import Track, TrackSetup, new_track_record, track_messages, track_models
from engine.serving.chat import Message
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import run_one_track

PROBLEM = Problem(id="p1", problem="What is 6 * 7?", answer="42", choices=None)
PROMPTS = load_prompt_set("default")
AP = ReasoningConfig(answer_phase=True)


# The kinds of request a track sends, by the purpose the model handle names each with.
KINDS = {"step": "step", "draft": "step", "rewrite": "step", "score": "score", "answer": "answer"}


def by_kind(reply):
    """A fake server's scripts by purpose, each request answered by `reply(kind, body)`."""
    return {purpose: functools.partial(reply, kind) for purpose, kind in KINDS.items()}


class Script:
    """Replies per request kind, in order; records the prompts of each kind."""

    def __init__(self, **replies):
        self.replies = {k: list(v) for k, v in replies.items()}
        self.prompts = defaultdict(list)

    def __call__(self, kind, body):
        self.prompts[kind].append(body["prompt"])
        if not self.replies.get(kind):
            raise AssertionError(f"unexpected {kind} request")
        return self.replies[kind].pop(0)


def step(text, stop_reason="\n\n"):
    """A step streamed one word (a token) at a time."""
    words = text.split(" ")
    return Reply(text=text, tokens=[w + " " for w in words[:-1]] + words[-1:], stop_reason=stop_reason)


def score(digit, prob=0.9):
    rest = (1 - prob) / 2
    return Reply(text=digit, top_logprobs=[{digit: math.log(prob), "0": math.log(rest), "x": math.log(rest)}])


ANSWER = Reply(text="So the answer is \\boxed{42}.", tokens=["So", " the", " answer", " is", " \\boxed{42}."])


async def run(make_models, small, big, config=ReasoningConfig(), mode="spec", thinking=True, settings=None):
    async with FakeOpenAIServer(by_purpose=by_kind(small)) as s, FakeOpenAIServer(by_purpose=by_kind(big)) as b:
        models = make_models(big=b, small=s, thinking=thinking)
        return await run_one_track(models, PROBLEM, PROMPTS, config, policy=mode, settings=settings)


async def test_step_scoring_at_threshold_is_kept_and_one_below_is_rewritten(make_models):
    small = Script(step=[step("six times seven"), step("it is forty two")])
    big = Script(score=[score("7"), score("6")], step=[step("6 * 7 = 42 so \\boxed{42}")])
    record = await run(make_models, small, big)
    first, second = record.steps
    assert (first.writer, first.score, first.draft, first.accepted) == ("small", 7.0, None, True)
    assert (second.writer, second.score, second.draft, second.accepted) == ("big", 6.0, "it is forty two", False)
    assert record.finish_reason == "answer" and record.answer == "42" and record.answer_model == "big"
    # the rewrite continues the same prefix as the rejected draft (SpecReason); no answer request
    assert big.prompts["step"][0] == small.prompts["step"][1] and "answer" not in big.prompts


async def test_with_answer_phase_closing_thinking_ends_it_and_the_answer_model_writes(make_models):
    small = Script(step=[step("six times seven"), step("it is forty two", stop_reason="</think>")])
    big = Script(score=[score("7"), score("6")], step=[step("6 * 7 = 42", stop_reason="</think>")], answer=[ANSWER])
    record = await run(make_models, small, big, ReasoningConfig(answer_phase=True))
    first, second = record.steps
    assert (first.writer, first.score, first.draft, first.accepted) == ("small", 7.0, None, True)
    assert (second.writer, second.score, second.draft, second.accepted) == ("big", 6.0, "it is forty two", False)
    assert second.text == "6 * 7 = 42"
    assert record.finish_reason == "think_end" and record.answer == "42" and record.answer_model == "big"
    # the rewrite continues the same prefix as the rejected draft (SpecReason)
    assert big.prompts["step"][0] == small.prompts["step"][1]
    assert big.prompts["answer"][0].endswith("<think>six times seven\n\n6 * 7 = 42\n\n</think>\n\n")


async def test_score_prompt_holds_the_step_the_rating_request_and_the_score_prefix(make_models):
    small = Script(step=[step("draft step", stop_reason="</think>")])
    big = Script(score=[score("9")], answer=[ANSWER])
    await run(make_models, small, big, ReasoningConfig(answer_phase=True))
    prompt = big.prompts["score"][0]
    assert "<think>draft step\n\n<|im_end|>" in prompt
    assert PROMPTS.render_score(PROBLEM.problem, "draft step") in prompt
    assert prompt.endswith(PROMPTS.render_score_prefix())


async def test_average_score_method_uses_the_digit_distribution(make_models):
    small = Script(step=[step("a b", stop_reason="</think>")])
    top = [{"8": math.log(0.5), "6": math.log(0.5)}]
    big = Script(score=[Reply(text="8", top_logprobs=top)], answer=[ANSWER])
    record = await run(make_models, small, big, AP, settings=SpecSettings(score_method="average"))
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
    record = await run(make_models, small, big, AP, settings=SpecSettings(score_method="average"))
    assert record.steps[0].score == 0.0 and record.steps[0].score_distribution == {}
    assert record.steps[0].writer == "big" and record.steps[0].text == "good"


def honouring_max_tokens(words_per_step: list[int], asked: list[int]):
    """A step server that writes `words_per_step[i]` one-token words for step i, cut at the request's
    max_tokens (finish reason "length") as vLLM does; records the max_tokens it was asked for."""

    def respond(kind, body):
        asked.append(body["max_tokens"])
        wanted = words_per_step[len(asked) - 1]
        n = min(wanted, body["max_tokens"])
        cut = n < wanted
        return Reply(
            text=" ".join(["w"] * n),
            tokens=[w + " " for w in ["w"] * (n - 1)] + ["w"],
            finish_reason="length" if cut else "stop",
            stop_reason=None if cut else "\n\n",
        )

    return respond


async def test_budget_is_checked_after_the_step_and_the_last_step_is_not_clipped(make_models):
    asked: list[int] = []
    small = honouring_max_tokens([400, 400, 400], asked)
    big = Script(score=[score("9"), score("9")])
    record = await run(make_models, small, big, ReasoningConfig(token_budget=600))
    assert record.finish_reason == "budget"
    # SpecReason asks every step for 512 tokens: 400 kept < 600, then 800 >= 600 ends thinking
    assert asked == [512, 512]
    assert [s.tokens for s in record.steps] == [400, 400] and record.thinking_tokens == 800
    assert record.answer is None and "answer" not in big.prompts


async def test_a_step_cut_at_max_tokens_is_kept_and_reasoning_goes_on(make_models):
    asked: list[int] = []
    small = honouring_max_tokens([700, 100], asked)
    big = Script(score=[score("9"), score("9")])
    record = await run(make_models, small, big, ReasoningConfig(token_budget=612))
    assert asked == [512, 512] and [s.tokens for s in record.steps] == [512, 100]
    assert [s.ending for s in record.steps] == ["length", "delimiter"] and record.finish_reason == "budget"


async def test_with_answer_phase_budget_exhaustion_closes_thinking_with_the_answer_template(make_models):
    small = Script(step=[step("one two three"), step("four five six")])
    big = Script(score=[score("9"), score("9")], answer=[ANSWER])
    record = await run(make_models, small, big, ReasoningConfig(token_budget=5, answer_phase=True))
    assert record.finish_reason == "budget"
    assert record.thinking_tokens == 6
    assert [s.tokens for s in record.steps] == [3, 3]
    assert big.prompts["answer"][0].endswith("four five six\n\n" + PROMPTS.render_answer())
    assert record.answer == "42"


async def test_step_with_boxed_answer_ends_without_an_answer_request(make_models):
    small = Script(step=[step("so \\boxed{42}")])
    big = Script(score=[score("8")])
    record = await run(make_models, small, big)
    assert record.finish_reason == "answer" and record.answer == "42" and record.answer_model == "small"
    assert record.answer_tokens == 0 and "answer" not in big.prompts


async def test_repeated_step_ends_thinking_once_there_are_more_than_two_steps(make_models):
    # SpecReason compares a step with the previous one only when there are more than two steps
    small = Script(step=[step("same"), step("same"), step("other"), step("other")])
    big = Script(score=[score("9")] * 4)
    record = await run(make_models, small, big)
    assert record.finish_reason == "repeat" and [s.text for s in record.steps] == ["same", "same", "other", "other"]
    assert record.answer is None and "answer" not in big.prompts


async def test_a_stray_think_close_is_removed_and_reasoning_goes_on(make_models):
    small = Script(step=[step("so far so good</think>"), step("so \\boxed{42}</think>")])
    big = Script(score=[score("9"), score("9")])
    record = await run(make_models, small, big)
    # the request stops only at the delimiter; the first step loses its </think> and reasoning goes on,
    # the second states the answer (SpecReason keeps </think> there) and ends thinking
    assert [s.text for s in record.steps] == ["so far so good", "so \\boxed{42}</think>"]
    assert record.finish_reason == "answer" and record.answer == "42"
    assert small.prompts["step"][1].endswith("<think>so far so good\n\n")


async def test_the_end_of_a_sequence_does_not_end_thinking(make_models):
    small = Script(step=[step("first", stop_reason=None), step("then \\boxed{7}")])
    big = Script(score=[score("9"), score("9")])
    record = await run(make_models, small, big)
    assert [s.ending for s in record.steps] == ["eos", "delimiter"]
    assert record.finish_reason == "answer" and record.answer == "7"


RSD = ReasoningConfig(stop_rule="rsd")


async def test_under_rsds_rule_a_step_that_ends_the_sequence_ends_thinking_and_an_answer_does_not(make_models):
    # RSD ends a trace at a step whose stop_reason is not the step word; a boxed answer or a
    # repeated step does not end it
    steps = [step("so \\boxed{41}"), step("same"), step("same"), step("same"), step("so \\boxed{42}", None)]
    small = Script(step=steps)
    big = Script(score=[score("9")] * 5)
    record = await run(make_models, small, big, RSD)
    assert [s.ending for s in record.steps] == ["delimiter"] * 4 + ["eos"]
    assert record.finish_reason == "eos" and record.answer == "42" and record.answer_model == "small"
    assert "answer" not in big.prompts


async def test_under_rsds_rule_a_step_cut_at_max_tokens_ends_thinking(make_models):
    asked: list[int] = []
    small = honouring_max_tokens([700, 100], asked)
    big = Script(score=[score("9")])
    record = await run(make_models, small, big, dataclasses.replace(RSD, max_step_tokens=512))
    assert asked == [512] and [s.ending for s in record.steps] == ["length"] and record.finish_reason == "length"


@pytest.mark.parametrize("config", [ReasoningConfig(max_steps=2), dataclasses.replace(RSD, max_steps=2)])
async def test_max_steps_ends_thinking_after_that_many_steps(make_models, config):
    small = Script(step=[step("one"), step("two")])
    big = Script(score=[score("9")] * 2)
    record = await run(make_models, small, big, config)
    assert [s.text for s in record.steps] == ["one", "two"] and record.finish_reason == "max_steps"
    assert record.answer is None


async def test_a_budget_reached_with_the_last_allowed_step_is_the_budget(make_models):
    small = Script(step=[step("one two three")])
    big = Script(score=[score("9")])
    record = await run(make_models, small, big, dataclasses.replace(RSD, max_steps=1, token_budget=3))
    assert record.finish_reason == "budget"


async def test_first_n_steps_come_from_the_big_model(make_models):
    small = Script(step=[step("small one", stop_reason="</think>")])
    big = Script(step=[step("big one")], score=[score("9")], answer=[ANSWER])
    record = await run(make_models, small, big, AP, settings=SpecSettings(first_n_steps_base_model=1))
    assert [s.writer for s in record.steps] == ["big", "small"]
    assert record.steps[0].score is None


@pytest.mark.parametrize("mode", ["big", "small"])
async def test_single_model_modes_use_only_their_model(make_models, mode):
    alone = Script(step=[step("x y"), step("z", stop_reason="</think>")], answer=[ANSWER])
    other = Script()
    small, big = (alone, other) if mode == "small" else (other, alone)
    config = ReasoningConfig(answer_model=mode, answer_phase=True)
    record = await run(make_models, small, big, config, mode=mode, settings=SingleModelSettings(stepwise=True))
    assert {s.writer for s in record.steps} == {mode}
    assert not other.prompts
    assert set(record.usage) == {mode}


async def test_token_totals_equal_the_sums_of_steps_and_answer(make_models):
    small = Script(step=[step("a b c"), step("d e", stop_reason="</think>")])
    big = Script(score=[score("9"), score("1")], step=[step("f g h i", stop_reason="</think>")], answer=[ANSWER])
    record = await run(make_models, small, big, AP)
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
    empty = Reply(text="", tokens=[], stop_reason=None)
    small = Script(step=[step("one"), empty, empty])
    big = Script(score=[score("9")] * 3)
    record = await run(make_models, small, big, thinking=False)
    # empty steps are kept as the seeds keep them; the third repeats the second
    assert record.finish_reason == "repeat" and len(record.steps) == 3
    assert all("<think>" not in p for p in small.prompts["step"])
    # the score prefix is the seed's text ("<think>I think the quality score is: "); the steps are not opened
    assert all("<think>one" not in p and "assistant\none\n\n" in p for p in big.prompts["score"])


async def test_with_answer_phase_a_non_thinking_model_gets_no_think_tags(make_models):
    small = Script(step=[step("one"), Reply(text="", tokens=[], stop_reason=None)])
    big = Script(score=[score("9"), score("9")], answer=[ANSWER])
    record = await run(make_models, small, big, AP, thinking=False)
    assert record.finish_reason == "eos"
    assert all("<think>" not in p for p in small.prompts["step"] + big.prompts["answer"])
    assert "</think>" not in big.prompts["answer"][0]


class RaisingPolicy:
    def __init__(self, error):
        self.error = error

    async def step(self, ctx):
        raise self.error

    def close(self):
        return {}


async def test_any_error_inside_a_track_fails_only_that_track(make_models):
    from engine.reasoning.track import Track, TrackSetup, new_track_record

    setup = TrackSetup(track_id=0, policy="spec")
    track = Track(new_track_record(setup), setup, PROBLEM, {}, PROMPTS, ReasoningConfig(), RaisingPolicy(KeyError("x")))
    record = await track.run()
    assert record.finish_reason == "failed" and record.error == "KeyError: 'x'"
    # errors meant for the user still stop the run
    for error in (UsageError("bad flag"), Terminated("stop")):
        track = Track(new_track_record(setup), setup, PROBLEM, {}, PROMPTS, ReasoningConfig(), RaisingPolicy(error))
        with pytest.raises(type(error)):
            await track.run()


async def test_a_score_digit_outside_ascii_reads_as_no_digit(make_models):
    small = Script(step=[step("draft"), step("so \\boxed{42}")])
    big = Script(score=[Reply(text="²", top_logprobs=[{"²": -0.1, "x": -3.0}]), score("9")], step=[step("rewritten")])
    record = await run(make_models, small, big)
    assert record.steps[0].score == 0.0 and record.steps[0].writer == "big"
    assert record.finish_reason == "answer" and record.answer == "42"


async def test_the_step_observer_is_told_of_each_kept_step_as_it_is_kept(make_models):
    small = Script(step=[step("six times seven"), step("it is forty two")])
    big = Script(score=[score("9"), score("2")], step=[step("so \\boxed{42}")])
    told = []
    async with FakeOpenAIServer(by_purpose=by_kind(small)) as s, FakeOpenAIServer(by_purpose=by_kind(big)) as b:
        setup = TrackSetup(track_id=3, policy="spec")
        handles = track_models(make_models(big=b, small=s), setup)
        record = new_track_record(setup)

        def observe(track_id, kept):
            # Told before the next step is asked for: the record holds exactly the steps told so far.
            told.append((track_id, kept.text, kept.writer, len(record.steps)))

        policy = POLICIES["spec"].start(SpecSettings(), handles, PROMPTS, ReasoningConfig())
        await Track(record, setup, PROBLEM, handles, PROMPTS, ReasoningConfig(), policy, on_step=observe).run()
    assert told == [(3, "six times seven", "small", 1), (3, "so \\boxed{42}", "big", 2)]
    assert [s.text for s in record.steps] == ["six times seven", "so \\boxed{42}"]


def test_a_problems_context_comes_before_its_user_turn_and_its_system_message_replaces_the_sets():
    earlier = (Message("user", "Hi"), Message("assistant", "Hello."))
    problem = Problem(id="r", problem="What is 1 + 1?", answer=None, context=earlier)
    search = load_prompt_set("search")
    system, *rest = track_messages(problem, search, None)
    assert system.role == "system" and system.content == search.render_system()
    assert rest == [*earlier, Message("user", "What is 1 + 1?")]
    told = dataclasses.replace(problem, context=(Message("system", "Be brief."), *earlier))
    with_method = TrackSetup(track_id=0, policy="big", method="algebra", instruction="Use algebra.")
    system, *rest = track_messages(told, search, with_method)
    assert system == Message("system", "Be brief.") and rest[:-1] == list(earlier)
    assert rest[-1].role == "user" and "Use algebra." in rest[-1].content and "What is 1 + 1?" in rest[-1].content
