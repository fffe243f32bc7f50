"""The pair judges (Lookahead Reasoning's `--verifier`, issue 33.4): the reference's free check and its
reading of the judge's token, the judge's request as the reference sends it, and the table the
lookahead policy asks."""

import dataclasses

import pytest

from engine.data.prompts import load_prompt_set
from engine.reasoning.judges import PAIR_JUDGES
from engine.reasoning.judges.aligned import AlignedJudge, is_aligned, same_text
from engine.reasoning.judges.base import StepPair
from engine.reasoning.policies.lookahead import LOOKAHEAD, VERIFIERS, LookaheadSettings
from engine.serving.client import ModelClient
from engine.serving.models import Model
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import FAST_LIMITS
from tests.unit.serving.test_chat_templates import FORMS, chat_format

# hao-ai-lab/LookaheadReasoning src/lr.py `equal_prompt` (c826d03), written out: Qwen's chat format by
# hand, its `{}`s filled with the big model's step (s1) and the draft (s2), both stripped.
REFERENCE_PROMPT = (
    "<|im_start|>system\nYou are Qwen, created by Alibaba Cloud. You are a helpful assistant.<|im_end|>\n"
    "<|im_start|>user\nEvaluate whether the following two reasoning steps (s1 and s2) convey exactly the same "
    "meaning. Focus on semantic similarity rather than exact wording. \n\nCompare the main ideas, key points, "
    "overall message, logical structure, and numerical calculations/results of both reasoning steps.\n\n"
    "If the reasoning steps convey essentially the same meaning and generate same calculation results, respond "
    "with [aligned].\nIf the reasoning steps express different meanings, respond with [unaligned]. If it is too "
    "hard to determine, respond with [unaligned]\n\nPlease directly provide the final result in [aligned] or "
    "[unaligned].\n\nReasoning step 1 (s1):\n<start_s1>\n{}\n<end_s1>\n\nReasoning step 2 (s2):\n<start_s2>\n{}\n"
    "<end_s2><|im_end|>\n<|im_start|>assistant\n["
)


@pytest.mark.parametrize(
    ("first", "second", "same"),
    [
        ("So x = 4.", "so  X =\n4.", True),  # spaces and newlines removed, case ignored
        ("x = 4", "x\t= 4", False),  # a tab is not a space
        ("x = 4", "x = 5", False),
    ],
)
def test_the_free_check_removes_spaces_and_newlines_and_ignores_case(first, second, same):
    assert same_text(first, second) is same


@pytest.mark.parametrize(
    ("token", "aligned"),
    [("aligned", True), ("Aligned", True), ("ali", True), ("al", False), ("un", False), ("unaligned", False)],
)
def test_the_judge_s_token_is_read_as_the_reference_reads_it(token, aligned):
    # "ali" in it and no "un": a judge whose tokenizer splits "aligned" after "al" never keeps a draft.
    assert is_aligned(token) is aligned


async def test_the_judge_s_request_is_the_reference_s_string_under_qwen2_5_instruct(session):
    prompts = load_prompt_set("default")
    pair = StepPair("What is 6 * 7?", (), "earlier steps\n\n", " Six sevens make 42. ", "6 * 7 = 42\n")
    async with FakeOpenAIServer(lambda body: Reply(text="aligned", tokens=["aligned"])) as judge_server:
        model = Model(
            "judge", ModelClient(session, "judge", [judge_server.url], FAST_LIMITS), chat_format(FORMS["qwen2.5"])
        )
        verdict = await AlignedJudge(model, prompts).compare(pair)
    (body,) = judge_server.requests
    assert body["prompt"] == REFERENCE_PROMPT.format("Six sevens make 42.", "6 * 7 = 42")
    assert (body["max_tokens"], body["temperature"], body["top_p"]) == (1, 0.0, 0.95)
    assert judge_server.purposes == ["verify"]
    assert verdict.same and verdict.said == "aligned" and verdict.value is None
    assert verdict.costs[0].role == "judge" and verdict.costs[0].usage.requests == 1


def test_lookahead_asks_the_pair_judges_table():
    assert VERIFIERS == (*PAIR_JUDGES, "exact") and LookaheadSettings().verifier == "judge"
    fields = {f.name for f in dataclasses.fields(LookaheadSettings)}
    for name, spec in PAIR_JUDGES.items():
        assert spec.role in LOOKAHEAD.roles, name
        assert spec.threshold_flag is None or spec.threshold_flag in fields, name
        assert (
            LOOKAHEAD.roles_for(LookaheadSettings(verifier=name)) == ("small", "big", spec.role) or spec.role == "big"
        )
    assert LOOKAHEAD.roles_for(LookaheadSettings(verifier="exact")) == ("small", "big")
    assert LOOKAHEAD.roles_for(LookaheadSettings(verifier="big_rating")) == ("small", "big")
