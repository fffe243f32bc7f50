"""SplitReason's modes as policies, every branch driven by scripted fake servers: random switching,
logprob sub-selection (the best candidate wins), and the learned <bigmodel> offload with its
probes, cap and budget; the continuous track's stop rules (EOS or budget, never "\\n\\n")."""

import random
import re

import pytest

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.errors import ServerError, UsageError
from engine.reasoning.policies.splitreason.logprob_subselect import SubselectSettings, mean_logprob
from engine.reasoning.policies.splitreason.random_switch import RandomSwitchPolicy, RandomSwitchSettings
from engine.reasoning.policies.splitreason.spec_reason import _token_prefixes
from engine.reasoning.seeds import track_seed
from engine.reasoning.settings import ReasoningConfig
from engine.records import RequestCost
from engine.serving.client import Choice, Completion
from engine.serving.models import Reply as HandleReply
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import run_one_track

PROBLEM = Problem(id="p1", problem="What is 6 * 7?", answer="42", choices=None)
PROMPTS = load_prompt_set("default")
HINT = PROMPTS.render_offload_hint()
ANSWER_TEXT = "So the answer is \\boxed{42}."


def is_answer_request(body):
    return body["max_tokens"] == ReasoningConfig().answer_max_tokens


def tokens_reply(tokens, finish_reason="length", stop_reason=None, logprob=None):
    tops = None if logprob is None else [{t: logprob} for t in tokens]
    return Reply(
        text="".join(tokens),
        tokens=list(tokens),
        finish_reason=finish_reason,
        stop_reason=stop_reason,
        top_logprobs=tops,
    )


class Log:
    """A responder that records every request body and answers with `respond(body)`."""

    def __init__(self, respond):
        self.respond, self.bodies = respond, []

    def __call__(self, body):
        self.bodies.append(body)
        if is_answer_request(body):
            return Reply(text=ANSWER_TEXT)
        return self.respond(body)

    def steps(self):
        return [b for b in self.bodies if not is_answer_request(b)]


async def run(make_models, small, big, policy, settings=None, config=ReasoningConfig(), seed=5):
    async with FakeOpenAIServer(small) as s, FakeOpenAIServer(big) as b:
        models = make_models(big=b, small=s)
        return await run_one_track(models, PROBLEM, PROMPTS, config, policy=policy, settings=settings, seed=seed)


# random_switch


def chunk_of(role):
    return lambda body: tokens_reply([f"{role}{i}\n\n" for i in range(body["max_tokens"])])


async def test_random_switch_draws_each_chunk_writer_from_the_track_seed_until_the_budget(make_models):
    small, big = Log(chunk_of("s")), Log(chunk_of("b"))
    settings = RandomSwitchSettings(switch_ratio=2, switch_chunk=4)
    record = await run(make_models, small, big, "random_switch", settings, ReasoningConfig(token_budget=10), seed=5)
    rng = random.Random(5)
    expected = ["big" if rng.random() < 1 / 3 else "small" for _ in range(3)]
    assert [s.writer for s in record.steps] == expected
    # chunks of 4 tokens, the last cut to the 2 left of the budget; "\n\n" does not end a step
    assert [s.tokens for s in record.steps] == [4, 4, 2]
    assert sorted(b["max_tokens"] for b in small.steps() + big.steps()) == [2, 4, 4]
    assert record.finish_reason == "budget" and record.thinking_tokens == 10
    # the chunks are joined as written: the third request continues the first two as they are
    third = next(b for b in small.steps() + big.steps() if b["max_tokens"] == 2)
    assert third["prompt"].endswith("<think>\n" + record.steps[0].text + record.steps[1].text)
    assert not [b for b in small.steps() + big.steps() if "stop" in b]


def switch_writers(problem_id, chunks, ratio=3, seed=7):
    policy = RandomSwitchPolicy(RandomSwitchSettings(switch_ratio=ratio, switch_chunk=8))
    return [policy.draw_writer(track_seed(seed, problem_id, 0, 0)) for _ in range(chunks)]


def test_random_switch_draws_other_coins_on_every_problem_and_the_big_share_is_one_in_ratio_plus_one():
    # The run `--random_switch --switch_ratio 3 --seed 7` once gave every problem one writer pattern.
    patterns = {tuple(switch_writers(str(p), 12)) for p in range(40)}
    assert len(patterns) > 30
    chunks = [w for p in range(400) for w in switch_writers(str(p), 16)]
    share, expected = chunks.count("big") / len(chunks), 1 / (3 + 1)
    # 6400 draws: the standard error is sqrt(0.25 * 0.75 / 6400) = 0.0054; 4 of them is 0.022.
    assert abs(share - expected) < 4 * (expected * (1 - expected) / len(chunks)) ** 0.5
    assert switch_writers("5", 12) == switch_writers("5", 12), "a run is still reproducible"


async def test_random_switch_is_reproducible_and_ratio_zero_is_big_only(make_models):
    writers = []
    for _ in range(2):
        small, big = Log(chunk_of("s")), Log(chunk_of("b"))
        record = await run(
            make_models,
            small,
            big,
            "random_switch",
            RandomSwitchSettings(switch_chunk=2),
            ReasoningConfig(token_budget=16),
        )
        writers.append([s.writer for s in record.steps])
    assert writers[0] == writers[1] and set(writers[0]) == {"big", "small"}
    small, big = Log(chunk_of("s")), Log(chunk_of("b"))
    settings = RandomSwitchSettings(switch_ratio=0, switch_chunk=4)
    record = await run(make_models, small, big, "random_switch", settings, ReasoningConfig(token_budget=8))
    assert [s.writer for s in record.steps] == ["big", "big"] and not small.bodies


async def test_random_switch_ends_at_eos_counting_real_tokens_and_reads_the_answer_from_the_text(make_models):
    # a chunk that states an answer but is cut by length does not end the track; EOS does
    replies = iter([["x \\boxed{1}", " y"], ["so", " \\boxed{42}"]])

    def respond(body):
        tokens = next(replies)
        return tokens_reply(tokens, finish_reason="length" if "x \\boxed{1}" in tokens else "stop")

    both = Log(respond)
    settings = RandomSwitchSettings(switch_chunk=8)
    record = await run(make_models, both, both, "random_switch", settings)
    assert [s.text for s in record.steps] == ["x \\boxed{1} y", "so \\boxed{42}"]
    assert record.finish_reason == "answer" and record.answer == "42"
    assert record.answer_model == record.steps[-1].writer
    assert record.thinking_tokens == 4  # the tokens generated, not 2 chunks of 8 asked for
    assert not [b for b in both.bodies if is_answer_request(b)]


async def test_random_switch_eos_without_an_answer_has_no_answer_as_in_splitreason(make_models):
    both = Log(lambda body: tokens_reply(["no", " answer"], finish_reason="stop"))
    record = await run(make_models, both, both, "random_switch")
    # SplitReason reads the answer from the text and asks for none (spectra's --answer_phase would)
    assert record.finish_reason == "eos" and record.answer is None
    assert not [b for b in both.bodies if is_answer_request(b)]


@pytest.mark.parametrize(
    "settings, flag",
    [
        (RandomSwitchSettings(switch_ratio=-1), "--switch_ratio"),
        (RandomSwitchSettings(switch_chunk=0), "--switch_chunk"),
    ],
)
def test_random_switch_settings_are_checked(settings, flag):
    with pytest.raises(UsageError, match=flag):
        settings.validate()


# logprob_subselect

# The big model's mean logprob of a candidate, by the small model's first draft in it: the drafts
# are numbered in request order, so the test knows which candidate must win.
FIRST_DRAFT_LOGPROB = {0: -3.0, 1: -0.5, 2: -2.0, 3: -1.0}


STOK = 2


class Subselect:
    """Small drafts `w<k> ` (k counts the drafts) of STOK tokens; the big model writes ` x y` whose
    logprob is FIRST_DRAFT_LOGPROB of the candidate's first draft; the final continuation is
    `final` (a Reply, or a function of the request)."""

    def __init__(self, final, close_thinking=False):
        self.drafts, self.final, self.close_thinking = 0, final, close_thinking
        self.small, self.big = Log(self.small_reply), Log(self.big_reply)

    def small_reply(self, body):
        if body["max_tokens"] != STOK:
            return self.final(body) if callable(self.final) else self.final
        k, self.drafts = self.drafts, self.drafts + 1
        return tokens_reply([f"w{k} ", "</think>" if self.close_thinking else "z "])

    def big_reply(self, body):
        first = int(re.search(r"w(\d+) ", body["prompt"]).group(1))
        return tokens_reply([" x", " y"], logprob=FIRST_DRAFT_LOGPROB.get(first, -5.0))


async def test_logprob_subselect_keeps_the_best_candidates_and_the_winner_s_pieces(make_models):
    script = Subselect(final=tokens_reply(["so ", "\\boxed{42}"], finish_reason="stop"))
    settings = SubselectSettings(sgen=4, stok=2, sdecay=2, ltok=2, lbound=0)
    record = await run(make_models, script.small, script.big, "logprob_subselect", settings)
    # round 0 keeps w1 (-0.5) and w3 (-1.0), round 1 keeps w1's line; the seed would keep w0 and w2
    first, *_ = record.steps
    assert first.text == "w1 z "
    assert [s.writer for s in record.steps] == ["small", "big", "small", "big", "small"]
    rounds = first.detail["rounds"]
    assert sorted(rounds[0]["scores"]) == [-3.0, -2.0, -1.0, -0.5] and rounds[0]["kept"] == 2
    assert sorted(rounds[1]["scores"]) == [-1.0, -0.5] and rounds[1]["kept"] == 1
    assert first.usage["small"].requests == 6 and first.usage["big"].requests == 6
    assert all(not s.usage for s in record.steps[1:4])
    assert record.steps[-1].detail == {"phase": "continue", "ended": "eos"}
    # The continuation stated an answer and ended the sequence; as in the seed, the answer is
    # still asked for after it (`</think>` closes thinking, once).
    assert record.finish_reason == "think_end" and record.answer == "42"
    (answer,) = [b for b in script.big.bodies if is_answer_request(b)]
    assert answer["prompt"].endswith("so \\boxed{42}</think>\n\n") and answer["prompt"].count("</think>") == 1
    assert record.thinking_tokens == sum(s.tokens for s in record.steps) == 10
    big_bodies = script.big.steps()
    assert {(b["temperature"], b["logprobs"], b["max_tokens"]) for b in big_bodies} == {(0.0, 1, 2)}
    assert all(b["return_tokens_as_token_ids"] for b in big_bodies)
    assert script.small.steps()[-1]["prompt"].endswith("".join(s.text for s in record.steps[:4]))


async def test_logprob_subselect_stops_when_most_candidates_closed_thinking_and_rescoring_picks_one(make_models):
    script = Subselect(final=tokens_reply(["done"], finish_reason="stop"), close_thinking=True)
    settings = SubselectSettings(sgen=2, stok=2, sdecay=1, ltok=2, lbound=2)
    record = await run(make_models, script.small, script.big, "logprob_subselect", settings)
    (only_round,) = record.steps[0].detail["rounds"]
    assert only_round["ended"] == "think_closed" and sorted(only_round["rescores"]) == [-3.0, -0.5]
    # the winner (w1) with its first big continuation and the rescoring one
    assert [s.text for s in record.steps[:3]] == ["w1 </think>", " x y", " x y"]
    assert len(script.big.steps()) == 4
    # Thinking was closed by the candidates: the answer is asked for, with no second `</think>`.
    assert record.finish_reason == "think_end" and record.answer == "42"
    (answer,) = [b for b in script.big.bodies if is_answer_request(b)]
    assert answer["prompt"].endswith("w1 </think> x y x ydone\n\n") and answer["prompt"].count("</think>") == 1


async def test_logprob_subselect_duplicates_under_lbound_and_ends_thinking_after_the_final_continuation(make_models):
    script = Subselect(final=tokens_reply(["more"] * 3))  # cut by length, budget left: thinking is over
    settings = SubselectSettings(sgen=2, stok=2, sdecay=1, ltok=2, lbound=2, max_iterations=2)
    record = await run(make_models, script.small, script.big, "logprob_subselect", settings)
    first, second = record.steps[0].detail["rounds"]
    assert first["duplicated"] and first["kept"] == 2 and len(second["scores"]) == 4
    assert record.finish_reason == "think_end" and record.answer == "42"
    final = [b for b in script.small.steps() if b["max_tokens"] != STOK]
    assert [b["max_tokens"] for b in final] == [4096]


async def test_logprob_subselect_stops_selecting_before_the_budget(make_models):
    script = Subselect(final=lambda body: tokens_reply(["t"] * body["max_tokens"]))
    settings = SubselectSettings(sgen=4, stok=2, sdecay=2, ltok=2, lbound=0)
    # a round may add 6 tokens (with a rescore): after one round (4 tokens) 5 are left, too few
    config = ReasoningConfig(token_budget=9)
    record = await run(make_models, script.small, script.big, "logprob_subselect", settings, config)
    assert len(record.steps[0].detail["rounds"]) == 1
    assert record.steps[-1].tokens == 5 and record.thinking_tokens == 9
    # the budget is spent by the final continuation, and the answer is still asked for after it
    assert record.finish_reason == "think_end" and record.answer == "42"


async def test_logprob_subselect_fails_the_track_when_the_big_model_sends_no_logprobs(make_models):
    small = Log(lambda body: tokens_reply(["a", "b"]))
    big = Log(lambda body: tokens_reply(["c", "d"]))
    record = await run(make_models, small, big, "logprob_subselect", SubselectSettings(sgen=2))
    assert record.finish_reason == "failed" and "logprobs" in record.error


def test_logprob_subselect_needs_ltok():
    with pytest.raises(UsageError, match="--ltok must be at least 1"):
        SubselectSettings(ltok=0).validate()
    assert SubselectSettings().rounds == 32768 // (16 * 16) and SubselectSettings(max_iterations=3).rounds == 3


# spec_reason


class Offload:
    """The small model writes `opening` and opens a span, then `after`; the big model writes
    `chunks` (token lists, the last ending the sequence when `eos`); a probe closes the span after
    the big tokens listed in `closes_after` (by prefix text)."""

    def __init__(self, opening, chunks, closes_after=(), after="so \\boxed{42}", eos=False):
        self.opening, self.after, self.closes_after = opening, after, closes_after
        self.chunks, self.eos = list(chunks), eos
        self.small, self.big = Log(self.small_reply), Log(self.big_reply)

    def small_reply(self, body):
        if body["max_tokens"] == 8:
            closes = any(body["prompt"].endswith(prefix) for prefix in self.closes_after)
            return tokens_reply([" </bigmodel>", " ok"] if closes else [" hmm"])
        if "<bigmodel>" not in body["prompt"].split(HINT)[-1]:
            return tokens_reply(self.opening, finish_reason="stop", stop_reason="<bigmodel>")
        return tokens_reply([self.after], finish_reason="stop")

    def big_reply(self, body):
        tokens = self.chunks.pop(0)
        last = not self.chunks and self.eos
        return tokens_reply(tokens, finish_reason="stop" if last else "length", logprob=-0.1)

    def probes(self):
        return [b for b in self.small.steps() if b["max_tokens"] == 8]


async def test_spec_reason_closes_the_span_after_the_longest_prefix_the_small_model_would_close(make_models):
    script = Offload(["Let me ", "think. "], [[" A", " B", " C", " D"]], closes_after=(" A B", " A B C"))
    record = await run(make_models, script.small, script.big, "spec_reason")
    assert [(s.writer, s.text) for s in record.steps] == [
        ("small", "Let me think. <bigmodel>"),
        ("big", " A B C</bigmodel>"),
        ("small", "so \\boxed{42}"),
    ]
    span = record.steps[1]
    assert span.detail == {"ended": "probe", "chunks": 1} and span.tokens == 3
    assert span.usage["big"].requests == 1 and span.usage["small"].requests == 4
    assert record.steps[0].detail == {"ended": "open_tag"}
    assert record.finish_reason == "answer" and record.answer == "42"
    (chunk_body,) = script.big.steps()
    assert chunk_body["prompt"].endswith("Let me think. ") and "bigmodel" not in chunk_body["prompt"]
    assert HINT not in chunk_body["prompt"] and chunk_body["max_tokens"] == 64 and chunk_body["logprobs"] == 1
    assert all(HINT in b["prompt"] for b in script.small.steps())
    assert {b["prompt"].split("<bigmodel>")[-1] for b in script.probes()} == {" A", " A B", " A B C", " A B C D"}
    assert all(b["temperature"] == 0.0 and "seed" not in b for b in script.probes())
    assert script.small.steps()[0]["stop"] == ["<bigmodel>"]
    assert script.small.steps()[-1]["prompt"].endswith("<bigmodel> A B C</bigmodel>")


async def test_spec_reason_span_runs_over_chunks_until_the_big_model_ends_the_sequence(make_models):
    script = Offload(["Hi "], [[" A", " B"], [" end"]], eos=True)
    record = await run(make_models, script.small, script.big, "spec_reason")
    span = record.steps[1]
    assert span.text == " A B end" and span.detail == {"ended": "eos", "chunks": 2} and span.tokens == 3
    assert script.big.steps()[1]["prompt"].endswith("Hi  A B")
    # every chunk of the span samples with a seed of its own
    seeds = [b["seed"] for b in script.big.steps()]
    assert len(set(seeds)) == 2 and None not in seeds
    assert len(script.probes()) == 2  # the first chunk's two prefixes; none after EOS
    assert record.finish_reason == "eos" and len(record.steps) == 2


async def test_spec_reason_closes_the_span_on_its_ninth_chunk_unprobed(make_models):
    # SplitReason counts chunks from 1 and closes once the count exceeds 512 // 64 = 8: eight
    # chunks are probed, the ninth is kept whole, 9 * 64 = 576 tokens.
    chunks = [[f" t{c}.{i}" for i in range(64)] for c in range(9)]
    script = Offload(["Hi "], chunks)
    record = await run(make_models, script.small, script.big, "spec_reason")
    span = record.steps[1]
    assert span.detail == {"ended": "cap", "chunks": 9} and span.tokens == 576
    assert span.text.endswith(" t8.63</bigmodel>")
    assert len(script.probes()) == 8 * 64
    assert record.steps[2].writer == "small" and record.answer == "42"


async def test_spec_reason_span_stops_at_the_budget(make_models):
    script = Offload(["a ", "b ", "c ", "d "], [[" A", " B", " C", " D", " E", " F"]])
    record = await run(make_models, script.small, script.big, "spec_reason", config=ReasoningConfig(token_budget=10))
    assert script.big.steps()[0]["max_tokens"] == 6
    span = record.steps[1]
    assert span.detail == {"ended": "budget", "chunks": 1} and span.text == " A B C D E F"
    assert record.finish_reason == "budget" and record.thinking_tokens == 10


# SplitReason's terminating string as its test_spec.py and lm-eval wrapper pass it: a raw string,
# so "\\n" is a backslash and an n.
TERMINATING = r"\n Put your final answer within \boxed{}."


async def test_prompt_set_splitreason_sends_the_question_hint_and_terminating_string_as_splitreason(make_models):
    # modes/speculative_reasoning.py: f"{question}\n{hint}\n{terminating_string}" to the small model,
    # the hint removed for the big model; random_switch_flow.py: f"{question}\n{terminating_string}".
    prompts = load_prompt_set("splitreason")
    script = Offload(["Hi "], [[" A"]], eos=True)
    async with FakeOpenAIServer(script.small) as s, FakeOpenAIServer(script.big) as b:
        await run_one_track(make_models(big=b, small=s), PROBLEM, prompts, policy="spec_reason")
    question = PROBLEM.problem
    assert f"{question}\n{HINT}\n{TERMINATING}<|im_end|>" in script.small.steps()[0]["prompt"]
    (big_body,) = script.big.steps()
    assert f"{question}\n{TERMINATING}<|im_end|>" in big_body["prompt"] and HINT not in big_body["prompt"]
    small, big = Log(chunk_of("s")), Log(chunk_of("b"))
    async with FakeOpenAIServer(small) as s, FakeOpenAIServer(big) as b:
        config = ReasoningConfig(token_budget=8)
        await run_one_track(make_models(big=b, small=s), PROBLEM, prompts, config, policy="random_switch", seed=1)
    assert all(f"{question}\n{TERMINATING}<|im_end|>" in b["prompt"] for b in small.steps() + big.steps())


def replied(completion):
    """`completion` as the model handle returns it."""
    return HandleReply(completion, RequestCost("big", "rewrite", completion.endpoint, completion.model))


@pytest.mark.parametrize(
    ("text", "tokens", "prefixes"),
    [
        # bytes held back by vLLM ("") that never formed a character reach the text as U+FFFD
        ("ab\ufffdcd", ["a", "b", "", "c", "d"], {1: "a", 2: "ab", 4: "ab\ufffdc", 5: "ab\ufffdcd"}),
        # a held-back token that completes a character: the next token carries it
        ("a€b", ["a", "", "€", "b"], {1: "a", 3: "a€", 4: "a€b"}),
        # a token string not in the text (the EOS token's, or a mismatch) ends the cut points
        ("ab", ["a", "b", "<|im_end|>"], {1: "a", 2: "ab"}),
        ("abc", ["a", "x", "c"], {1: "a"}),
    ],
)
def test_probe_cut_points_follow_the_text_through_vllm_s_token_strings(text, tokens, prefixes):
    completion = Completion([Choice(text=text, tokens=tokens)], "m", "u", 1, len(tokens), 0.0, None)
    assert _token_prefixes(replied(completion)) == prefixes


def test_subselect_reads_logprobs_by_token_id():
    # two tokens that decode to the same string: only their ids tell their logprobs apart
    tops = [{"token_id:5": -1.0, "token_id:9": -0.1}, {"token_id:7": -3.0}]
    completion = Completion(
        [Choice(text="aa", tokens=["token_id:5", "token_id:7"], top_logprobs=tops)], "m", "u", 1, 2, 0.0, None
    )
    assert mean_logprob(replied(completion)) == -2.0
    lost = Completion(
        [Choice(text="a", tokens=["token_id:5"], top_logprobs=[{"token_id:9": -0.1}])], "m", "u", 1, 1, 0.0, None
    )
    with pytest.raises(ServerError, match="do not list the token"):
        mean_logprob(replied(lost))
