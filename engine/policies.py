"""How one reasoning step is produced: one function per track mode, registered in `POLICIES`.

Every policy takes a `StepContext` and returns a `StepOutcome`: the step as kept, and why
the model stopped (so the track knows when thinking has ended). Adding a mode is one
function here and one line in the table.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from engine.chat import THINK_CLOSE, ChatFormat, Message
from engine.client import Completion, ModelClient
from engine.config import ReasoningConfig
from engine.prompts import PromptSet
from engine.results import ModelUsage, StepRecord
from engine.scoring import SCORE_TOP_LOGPROBS, score_from_logprobs


@dataclass(frozen=True)
class Model:
    """A served model as the engine uses it: its client and its chat template."""

    role: str
    client: ModelClient
    chat: ChatFormat


@dataclass(frozen=True)
class StepContext:
    """What a policy needs to write step `index` after `reasoning` (steps so far, delimited)."""

    models: dict[str, Model]
    messages: tuple[Message, ...]
    reasoning: str
    index: int
    config: ReasoningConfig
    prompts: PromptSet
    problem: str
    seed: int | None


@dataclass(frozen=True)
class StepOutcome:
    """A kept step, and how its generation ended: "delimiter", "think_end", "eos" or "length"."""

    step: StepRecord
    ending: str


Policy = Callable[[StepContext], Awaitable[StepOutcome]]


def usage_of(completion: Completion) -> ModelUsage:
    return ModelUsage(completion.prompt_tokens, completion.completion_tokens, 1)


def step_ending(completion: Completion, delimiter: str) -> str:
    """Why a step's generation stopped, from vLLM's finish and stop reasons."""
    if completion.finish_reason == "length":
        return "length"
    if completion.stop_reason == THINK_CLOSE:
        return "think_end"
    if completion.stop_reason == delimiter:
        return "delimiter"
    return "eos"


async def generate_step(model: Model, ctx: StepContext, *, salt: int) -> Completion:
    """`model` continues the reasoning by one step, stopping at the delimiter or end of thinking."""
    stop = [ctx.config.step_delimiter] + ([THINK_CLOSE] if model.chat.thinking else [])
    prompt = model.chat.continuation(ctx.messages, ctx.reasoning)
    return await model.client.complete(
        prompt,
        max_tokens=ctx.config.max_step_tokens,
        temperature=ctx.config.temperature,
        top_p=ctx.config.top_p,
        stop=stop,
        seed=request_seed(ctx.seed, ctx.index, salt),
        extra=NO_SPECIAL_TOKENS,
    )


SEED_STRIDE = 7919
ANSWER_SALT = 3


def request_seed(track_seed: int | None, index: int, salt: int) -> int | None:
    """A reproducible vLLM seed, distinct per track, step and purpose (salt 0-2 within a step:
    single model, draft, rewrite; `ANSWER_SALT` for the final answer)."""
    return None if track_seed is None else track_seed * SEED_STRIDE + index * 4 + salt


# The chat template already holds BOS and role tokens; letting vLLM add them again would
# double the BOS of Llama-style tokenizers.
NO_SPECIAL_TOKENS = {"add_special_tokens": False}


def _kept(
    completion: Completion, writer: str, index: int, usage: dict[str, ModelUsage], started: float, **scored
) -> StepRecord:
    return StepRecord(
        index=index,
        text=completion.text.replace(THINK_CLOSE, ""),
        writer=writer,
        tokens=completion.completion_tokens,
        usage=usage,
        latency_s=time.monotonic() - started,
        **scored,
    )


async def single_model_step(ctx: StepContext, writer: str) -> StepOutcome:
    started = time.monotonic()
    completion = await generate_step(ctx.models[writer], ctx, salt=0)
    step = _kept(completion, writer, ctx.index, {writer: usage_of(completion)}, started)
    return StepOutcome(step, step_ending(completion, ctx.config.step_delimiter))


async def big_step(ctx: StepContext) -> StepOutcome:
    return await single_model_step(ctx, "big")


async def small_step(ctx: StepContext) -> StepOutcome:
    return await single_model_step(ctx, "small")


async def spec_step(ctx: StepContext) -> StepOutcome:
    """SpecReason: the small model drafts, the big model scores, and rewrites below the threshold."""
    if ctx.index < ctx.config.first_n_steps_base_model:
        return await big_step(ctx)
    started = time.monotonic()
    draft = await generate_step(ctx.models["small"], ctx, salt=1)
    big = ctx.models["big"]
    judged = await big.client.complete(
        score_prompt(big.chat, ctx, draft.text),
        max_tokens=1,
        temperature=0.0,
        logprobs=SCORE_TOP_LOGPROBS,
        extra=NO_SPECIAL_TOKENS,
    )
    top = judged.top_logprobs[0] if judged.top_logprobs else {}
    score = score_from_logprobs(judged.text, top, ctx.config.score_method)
    usage = {"small": usage_of(draft), "big": usage_of(judged)}
    scored = {"score": score.value, "score_distribution": score.distribution}
    if score.value >= ctx.config.score_threshold:
        step = _kept(draft, "small", ctx.index, usage, started, **scored)
        return StepOutcome(step, step_ending(draft, ctx.config.step_delimiter))
    rewrite = await rewrite_step(big, ctx, draft.text)
    usage["big"].add(usage_of(rewrite))
    step = _kept(rewrite, "big", ctx.index, usage, started, draft=draft.text, **scored)
    return StepOutcome(step, step_ending(rewrite, ctx.config.step_delimiter))


def score_prompt(chat: ChatFormat, ctx: StepContext, step_text: str) -> str:
    """The conversation with the new step in the assistant turn, the rating request, the score prefix."""
    reasoning = chat.think_open + ctx.reasoning + step_text + ctx.config.step_delimiter
    score_request = ctx.prompts.render_score(ctx.problem, step_text)
    messages = [*ctx.messages, Message("assistant", reasoning), Message("user", score_request)]
    return chat.render(messages, ctx.prompts.render_score_prefix())


async def rewrite_step(big: Model, ctx: StepContext, draft_text: str) -> Completion:
    """The big model writes the step itself: from the same prefix (SpecReason), or, when the
    prompt set has a rewrite template, after being shown the rejected draft."""
    if not ctx.prompts.templates.rewrite:
        return await generate_step(big, ctx, salt=2)
    reasoning = big.chat.think_prefix + ctx.reasoning + draft_text
    request = ctx.prompts.render_rewrite(draft_text)
    messages = (*ctx.messages, Message("assistant", reasoning), Message("user", request))
    shown = dataclasses.replace(ctx, messages=messages, reasoning="")
    return await generate_step(big, shown, salt=2)


POLICIES: dict[str, Policy] = {"big": big_step, "small": small_step, "spec": spec_step}
