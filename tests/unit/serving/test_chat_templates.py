"""Every request kind of every runner, rendered with the real chat templates of the seeds' models
(tests/fixtures/chat_templates/), checked against the message forms the seeds send.

The expected strings are written out by hand from each template's text (`FORMS` below), so a
change in how spectra renders, or a template that eats part of the reasoning, fails here. RAST
sends a plain-text prompt with no chat template and is not rendered here.
"""

import datetime
from collections.abc import Callable
from dataclasses import dataclass

import pytest

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.reasoning.judges.base import ScoredSteps, ScoreQuery
from engine.reasoning.judges.prm import QWEN_PRM_SYSTEM, QWEN_STEP_TAG, PRMScorer, TokenPRMScorer
from engine.reasoning.judges.specreason import JudgeScorer
from engine.reasoning.policies.base import StepContext, continue_raw
from engine.reasoning.policies.splitreason.spec_reason import SpecReasonPolicy
from engine.reasoning.search.beams import Searcher, SearchSettings
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies.beam_search import beam_search
from engine.reasoning.strategies.best_of_n import best_of_n
from engine.reasoning.strategies.dvts import dvts
from engine.reasoning.track import track_messages, write_answer
from engine.records import FinishReason, StepRecord, TrackRecord
from engine.serving.chat import ChatFormat, Message
from engine.serving.client import ModelClient
from engine.serving.models import Model, Purpose
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.fixtures.chat_templates import template_text
from tests.unit.conftest import FAST_LIMITS, chatml_tokenizer

PROBLEM = Problem(id="p1", problem="What is 6 * 7?", answer="42")
STEPS = ["Six sevens.", "That is \\boxed{42}."]


@dataclass(frozen=True)
class Form:
    """How one template lays out a conversation, written out from the template's text: the text
    before the turns (`opening(system content or None)`), each turn, the head of an open assistant
    turn, and the generation prompt."""

    file: str
    bos: str
    thinking: bool
    opening: Callable[[str | None], str]
    turn: dict
    assistant_head: str
    generation_prompt: str
    trims: bool = False

    def conversation(self, messages: list[Message]) -> str:
        system = messages[0].content if messages and messages[0].role == "system" else None
        text = self.bos + self.opening(system)
        for m in messages[1:] if system is not None else messages:
            text += self.turn[m.role].format(m.content.strip() if self.trims else m.content)
        return text

    def head(self, messages: list[Message]) -> str:
        """The rendered conversation followed by an open assistant turn."""
        return self.conversation(messages) + self.assistant_head

    def generation(self, messages: list[Message]) -> str:
        return self.conversation(messages) + self.generation_prompt


def llama_opening(system: str | None) -> str:
    today = datetime.date.today().strftime("%d %b %Y")
    return (
        "<|start_header_id|>system<|end_header_id|>\n\nCutting Knowledge Date: December 2023\n"
        f"Today Date: {today}\n\n{(system or '').strip()}<|eot_id|>"
    )


IM = "<|im_start|>{role}\n{{}}<|im_end|>\n"
QWEN_DEFAULT_SYSTEM = "You are Qwen, created by Alibaba Cloud. You are a helpful assistant."
FORMS = {
    "qwq": Form(
        "Qwen-QwQ-32B.jinja",
        bos="",
        thinking=True,
        opening=lambda system: "" if system is None else IM.format(role="system").format(system),
        turn={r: IM.format(role=r) for r in ("user", "assistant")},
        assistant_head="<|im_start|>assistant\n",
        generation_prompt="<|im_start|>assistant\n<think>\n",
    ),
    "r1_distill_qwen": Form(
        "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja",
        bos="<｜begin▁of▁sentence｜>",
        thinking=True,
        # The system prompt goes right after BOS, untagged; assistant turns end with EOS.
        opening=lambda system: system or "",
        turn={"user": "<｜User｜>{}", "assistant": "<｜Assistant｜>{}<｜end▁of▁sentence｜>"},
        assistant_head="<｜Assistant｜>",
        generation_prompt="<｜Assistant｜><think>\n",
    ),
    "qwen2.5": Form(
        "Qwen-Qwen2.5-7B-Instruct.jinja",
        bos="",
        thinking=False,
        opening=lambda system: IM.format(role="system").format(QWEN_DEFAULT_SYSTEM if system is None else system),
        turn={r: IM.format(role=r) for r in ("user", "assistant")},
        assistant_head="<|im_start|>assistant\n",
        generation_prompt="<|im_start|>assistant\n",
    ),
    "llama3.2": Form(
        "meta-llama-Llama-3.2-3B-Instruct.jinja",
        bos="<|begin_of_text|>",
        thinking=False,
        opening=llama_opening,
        turn={
            "user": "<|start_header_id|>user<|end_header_id|>\n\n{}<|eot_id|>",
            "assistant": "<|start_header_id|>assistant<|end_header_id|>\n\n{}<|eot_id|>",
        },
        assistant_head="<|start_header_id|>assistant<|end_header_id|>\n\n",
        generation_prompt="<|start_header_id|>assistant<|end_header_id|>\n\n",
        trims=True,
    ),
}


def chat_format(form: Form) -> ChatFormat:
    tokenizer = chatml_tokenizer()
    tokenizer.chat_template = template_text(form.file)
    tokenizer.bos_token = form.bos or None
    return ChatFormat(tokenizer, thinking=form.thinking)


@pytest.fixture(params=sorted(FORMS))
def form(request) -> Form:
    return FORMS[request.param]


def spec_messages() -> tuple[Message, ...]:
    return track_messages(PROBLEM, load_prompt_set("default"), None)


def test_first_step_is_the_templates_generation_prompt(form):
    chat, messages = chat_format(form), spec_messages()
    prompt = chat.continuation(messages, "")
    assert prompt == form.generation(list(messages))


def test_a_continued_step_keeps_the_reasoning_whitespace_the_template_would_trim(form):
    chat, messages = chat_format(form), spec_messages()
    reasoning = STEPS[0] + "\n\n"
    prompt = chat.continuation(messages, reasoning)
    assert prompt == form.head(list(messages)) + chat.think_open + reasoning
    # SpecReason's continued turn, rendered by the template itself, loses the trailing "\n\n" in
    # Llama's (`| trim`): spectra's prompt is that text plus the whitespace, never less.
    seed = chat.tokenizer.apply_chat_template(
        [{"role": m.role, "content": m.content} for m in messages]
        + [{"role": "assistant", "content": chat.think_open + reasoning}],
        tokenize=False,
        continue_final_message=True,
    )
    assert prompt == seed if not form.trims else prompt.startswith(seed) and prompt[len(seed) :] == "\n\n"


def test_the_judge_prompt_is_specreasons_scoring_conversation(form):
    chat, messages = chat_format(form), spec_messages()
    prompts = load_prompt_set("default")
    judge = JudgeScorer(Model("big", None, chat), prompts, method="greedy", delimiter="\n\n")
    prompt = judge.prompt(ScoreQuery(problem=PROBLEM.problem, messages=messages, steps=tuple(STEPS)))
    thinking = chat.think_open + "".join(s + "\n\n" for s in STEPS)
    conversation = [
        *messages,
        Message("assistant", thinking),
        Message("user", prompts.render_score(PROBLEM.problem, STEPS[-1])),
    ]
    if form.file.startswith("deepseek"):
        # R1's template drops everything before </think> in assistant turns: none is there to drop.
        assert "</think>" not in thinking
    assert prompt == form.head(conversation) + prompts.render_score_prefix()


def test_the_method_selection_prompt_is_speclrms(form):
    chat, prompts = chat_format(form), load_prompt_set("default")
    request = Message("user", prompts.render_select_methods(PROBLEM.problem, 3))
    prompt = chat.render([request], prompts.render_select_methods_prefix(3))
    assert prompt == form.head([request]) + prompts.render_select_methods_prefix(3)


async def test_the_answer_request_closes_thinking_after_the_steps(form, session):
    chat, messages = chat_format(form), spec_messages()
    async with FakeOpenAIServer([Reply(text="\\boxed{42}")]) as server:
        model = Model("big", ModelClient(session, "big", [server.url], FAST_LIMITS), chat)
        record = TrackRecord(track_id=0, policy="big")
        record.steps = [StepRecord(index=0, text=STEPS[0], writer="big", tokens=3)]
        config = ReasoningConfig(answer_phase=True, answer_model="big")
        prompts = load_prompt_set("default")
        ending = FinishReason.THINK_END
        await write_answer(record, ending, {"big": model}, prompts, config, messages, multiple_choice=False)
    closing = "</think>\n\n" if form.thinking else ""
    expected = form.head(list(messages)) + chat.think_open + STEPS[0] + "\n\n" + closing
    assert server.requests[0]["prompt"] == expected
    assert record.answer == "42"


class FixedScores:
    """A step scorer that rates every paragraph 0.5 (the search's requests are what is checked)."""

    name = "fixed"

    async def score(self, query: ScoreQuery) -> ScoredSteps:
        return ScoredSteps(values=[0.5] * len(query.steps))


@pytest.mark.parametrize("strategy", [beam_search, dvts, best_of_n])
async def test_search_steps_are_search_and_learns_conversation(form, strategy, session):
    # build_conv: the system prompt and the problem; the first iteration with the template's
    # generation prompt (a thinking template's ends with "<think>\n"), the lookahead and the later
    # iterations going on from that text with the steps so far.
    chat = chat_format(form)
    messages = track_messages(PROBLEM, load_prompt_set("search"), None)
    assert messages[0].role == "system"
    first = form.generation(list(messages))
    replies = [Reply(text=STEPS[0] + "\n\n", stop_reason="\n\n"), Reply(text="Six.\n\n", stop_reason="\n\n")]
    replies += [Reply(text=STEPS[1], stop_reason=None)] * 2
    async with FakeOpenAIServer(replies) as server:
        searcher = Searcher(
            writer=Model("small", ModelClient(session, "small", [server.url], FAST_LIMITS), chat),
            scorer=FixedScores(),
            messages=messages,
            problem=PROBLEM.problem,
            settings=SearchSettings(n=1, beam_width=1, num_iterations=2, lookahead=1),
        )
        beams = await strategy(searcher)
    sent = [r["prompt"] for r in server.requests]
    if strategy is best_of_n:  # one request per solution, to the end of the sequence
        assert sent == [first]
        return
    # A step, its greedy lookahead, then the next (last) step from the kept step.
    assert sent == [first, first + STEPS[0] + "\n\n", first + STEPS[0] + "\n\n"]
    assert beams[0].text == STEPS[0] + "\n\n" + STEPS[1]
    if not form.thinking:
        # For instruct templates that is the reference's later rendering too: the solution as an
        # open assistant turn (Llama's trims its "\n\n", which spectra keeps).
        assert first == form.head(list(messages))


async def test_splitreasons_requests_hint_the_small_model_and_open_thinking(form, session):
    chat = chat_format(form)
    prompts = load_prompt_set("default")
    policy = SpecReasonPolicy(prompts.render_offload_hint())
    messages = spec_messages()
    async with FakeOpenAIServer([Reply(text="more", finish_reason="length")]) as server:
        model = Model("small", ModelClient(session, "small", [server.url], FAST_LIMITS), chat)
        ctx = StepContext({"small": model}, messages, "So <bigmodel>", (), 0, ReasoningConfig(), prompts, "")
        hinted = policy._small_messages(messages, "")
        await continue_raw(model, hinted, ctx.reasoning, ctx, purpose=Purpose.DRAFT, index=0, max_tokens=8)
    hinted = Message("user", f"{messages[0].content}\n{prompts.render_offload_hint()}")
    opening = "<think>\n" if form.thinking else ""
    assert server.requests[0]["prompt"] == form.head([hinted]) + opening + "So <bigmodel>"


def test_prm_inputs(form):
    chat = chat_format(form)
    query = ScoreQuery(problem=PROBLEM.problem, messages=(), steps=tuple(s + "\n\n" for s in STEPS))
    # Qwen2.5-Math-PRM: its system prompt, the problem, the steps each closed by <extra_0>.
    pooled = PRMScorer(Model("prm", None, chat)).pooling_input(query)
    system, user = Message("system", QWEN_PRM_SYSTEM), Message("user", PROBLEM.problem)
    assert pooled == form.head([system, user]) + "".join(s + QWEN_STEP_TAG for s in STEPS)
    # RLHFlow: one user turn per step (the first with the problem), each answered by "+".
    prompt, offsets = TokenPRMScorer(Model("prm", None, chat)).conversation(query)
    turns = [Message("user", f"{PROBLEM.problem} {STEPS[0]}"), Message("assistant", "+"), Message("user", STEPS[1])]
    assert prompt == form.head(turns) + "+"
    assert [prompt[at] for at in offsets] == ["+", "+"]
