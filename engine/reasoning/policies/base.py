"""The contract of a step policy: how ONE reasoning step of a track is produced.

A `PolicySpec` declares a policy's name, the model roles it calls, its settings (a frozen
`Settings` dataclass whose fields are its flags), the prompt-set templates it renders, and
`start`, which makes the per-track object whose `step` is called once per step, so a policy
can keep state from step to step. The helpers below are what most policies share.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.data.prompts import PromptSet
from engine.errors import ServerError
from engine.reasoning.confidence import DECIMALS, step_confidences
from engine.reasoning.settings import ReasoningConfig, Settings
from engine.records import ModelUsage, StepRecord
from engine.serving.chat import THINK_CLOSE, Message
from engine.serving.client import Completion
from engine.serving.models import NO_SPECIAL_TOKENS, Model, request_seed


@dataclass(frozen=True)
class StepContext:
    """What a policy needs to write step `index` after `reasoning` (the kept steps so far, each
    followed by the delimiter) and `thinking_tokens` (their tokens). As in the seeds,
    `config.max_step_tokens` is not clipped to the budget left: the budget is checked after the step."""

    models: dict[str, Model]
    messages: tuple[Message, ...]
    reasoning: str
    steps: tuple[str, ...]
    index: int
    config: ReasoningConfig
    prompts: PromptSet
    problem: str
    seed: int | None
    thinking_tokens: int = 0
    # The strategy's channel to the writer: top-k logprobs of every generated token (DeepConf).
    token_logprobs: int | None = None


@dataclass(frozen=True)
class StepOutcome:
    """A kept step, and how its generation ended: "delimiter", "think_end", "eos" or "length".
    `final`: the policy wrote the whole reasoning in this one step, so thinking ends with it.
    A continuous policy (see `PolicySpec`) returns "think_end" when it has ended thinking itself.
    """

    step: StepRecord
    ending: str
    final: bool = False


class TrackPolicy(Protocol):
    """One track's policy: writes the track's steps one at a time. `close` is called once when the
    track ends (finished, failed or cancelled): it cancels any work the policy started ahead of the
    steps asked for, and returns what that work cost (tokens the engine knows of, per model)."""

    async def step(self, ctx: StepContext) -> StepOutcome: ...

    def close(self) -> dict[str, ModelUsage]: ...


class NothingAhead:
    """Base of the policies that start no work ahead of the step asked for: nothing to cancel."""

    def close(self) -> dict[str, ModelUsage]:
        return {}


@dataclass(frozen=True)
class PolicySpec:
    """A registered policy. `start(settings, models, prompts, reasoning)` returns one track's policy.

    A `continuous` policy writes one unbroken text in chunks (SplitReason): its steps are joined
    as they are, not by the step delimiter, each may spend all the budget left, and the track ends
    only at EOS, at the budget, or when the policy ends thinking, not by SpecReason's stop rules.
    """

    name: str
    description: str
    roles: tuple[str, ...]
    settings: type[Settings]
    templates: tuple[str, ...]
    start: Callable[[Any, dict[str, Model], PromptSet, ReasoningConfig], TrackPolicy]
    continuous: bool = False
    # The roles these settings call, when not all of `roles` (a verifier's own model, say).
    needed_roles: Callable[[Any], tuple[str, ...]] | None = None
    # Whether its steps carry the token logprobs a strategy asks for (`StepContext.token_logprobs`).
    gives_token_logprobs: bool = True

    def roles_for(self, settings: Any) -> tuple[str, ...]:
        return self.roles if self.needed_roles is None else self.needed_roles(settings)


def thinking_ending(
    steps: Sequence[str], thinking_tokens: int, ending: str, config: ReasoningConfig, *, final: bool = False
) -> str | None:
    """Why thinking ends after the last of the kept `steps` (texts), which ended as `ending`, with
    `thinking_tokens` kept in all; None while it goes on. SpecLRM's order: a stated answer, a
    repeated step (SpecReason compares only when there are more than two steps), the budget (kept
    tokens, checked after the step). A policy that wrote the whole reasoning in one request
    (`final`) ends it whatever the step says. The track's loop applies it after each step; a
    policy that works ahead applies it to foresee whether the loop will ask for another step."""
    text = steps[-1]
    if any(marker in text for marker in ANSWER_MARKERS):
        return "answer"
    if len(steps) > 2 and text == steps[-2]:
        return "repeat"
    if thinking_tokens >= config.token_budget or (final and ending == "length"):
        return "budget"
    if final:
        return "eos"  # the one request ended by itself without stating an answer
    if config.answer_phase and ending in ("think_end", "eos"):
        return ending
    return None


def next_context(ctx: StepContext, text: str, tokens: int) -> StepContext:
    """The context of the step after the one of `ctx`, had that step kept `text` of `tokens`
    tokens: the reasoning grows by the step and the delimiter, as `engine.reasoning.track.reasoning_text`
    joins the kept steps."""
    return dataclasses.replace(
        ctx,
        reasoning=ctx.reasoning + text + ctx.config.step_delimiter,
        steps=(*ctx.steps, text),
        index=ctx.index + 1,
        thinking_tokens=ctx.thinking_tokens + tokens,
    )


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
    """`model` continues the reasoning by one step, stopping at the delimiter only (the seeds'
    `stop=["\n\n"]`); with --answer_phase also at the end of thinking."""
    closing = [THINK_CLOSE] if ctx.config.answer_phase and model.chat.thinking else []
    stop = [ctx.config.step_delimiter, *closing]
    prompt = model.chat.continuation(ctx.messages, ctx.reasoning)
    return await model.client.complete(
        prompt,
        max_tokens=ctx.config.max_step_tokens,
        temperature=ctx.config.temperature,
        top_p=ctx.config.top_p,
        stop=stop,
        seed=request_seed(ctx.seed, ctx.index, salt),
        logprobs=ctx.token_logprobs,
        extra=NO_SPECIAL_TOKENS,
    )


def kept_step(
    completion: Completion,
    writer: str,
    index: int,
    usage: dict[str, ModelUsage],
    started: float,
    *,
    delimiter: str,
    outcome: str,
    **scored: Any,
) -> StepRecord:
    """The step record of `completion` as kept in the track, written by `writer`; `outcome` says
    what became of it (`engine.records.STEP_OUTCOMES`). Tokens' confidences are kept when the
    request asked for logprobs (`StepContext.token_logprobs`)."""
    choice = completion.choices[0]
    return StepRecord(
        index=index,
        text=without_stray_think_close(completion.text),
        writer=writer,
        tokens=completion.completion_tokens,
        usage=usage,
        latency_s=time.monotonic() - started,
        ending=step_ending(completion, delimiter),
        outcome=outcome,
        token_confidence=step_confidences(choice.top_logprobs) if choice.top_logprobs else None,
        token_logprob=[round(lp, DECIMALS) for lp in choice.token_logprobs] if choice.token_logprobs else None,
        **scored,
    )


# SpecReason ends thinking at a step that states the answer.
ANSWER_MARKERS = ("boxed", "Answer:", "ANSWER:")


def without_stray_think_close(text: str) -> str:
    """SpecReason's edge case: a `</think>` in a step that states no answer is removed, and
    reasoning goes on; in a step with an answer it is kept."""
    if THINK_CLOSE in text and not any(marker in text for marker in ANSWER_MARKERS):
        return text.replace(THINK_CLOSE, "")
    return text


async def continue_text(
    model: Model,
    messages: tuple[Message, ...],
    text: str,
    ctx: StepContext,
    *,
    max_tokens: int,
    seed: int | None,
    stop: list[str] | None = None,
    greedy: bool = False,
    logprobs: int | None = None,
    token_ids: bool = False,
) -> Completion:
    """`model` continues the raw reasoning `text` (tags and all) by up to `max_tokens` tokens:
    SplitReason's requests, which stop only at EOS, the token limit, or `stop`. With `token_ids`
    the logprobs name tokens `token_id:N` (vLLM's `return_tokens_as_token_ids`), not by string."""
    # SplitReason's prompt opens thinking with "<think>\n" before the text it continues.
    prompt = model.chat.render(list(messages), (model.chat.think_open + "\n" if model.chat.thinking else "") + text)
    return await model.client.complete(
        prompt,
        max_tokens=max_tokens,
        temperature=0.0 if greedy else ctx.config.temperature,
        top_p=1.0 if greedy else ctx.config.top_p,
        stop=stop,
        seed=seed,
        logprobs=logprobs,
        extra={**NO_SPECIAL_TOKENS, "return_tokens_as_token_ids": True} if token_ids else NO_SPECIAL_TOKENS,
    )


def chunk_ending(completion: Completion) -> str:
    """How a chunk without stop strings ended: "length" (more to write) or "eos"."""
    return "length" if completion.finish_reason == "length" else "eos"


def chunk_step(
    text: str,
    writer: str,
    tokens: int,
    ctx: StepContext,
    usage: dict[str, ModelUsage],
    started: float,
    detail: dict[str, Any] | None = None,
    *,
    outcome: str,
) -> StepRecord:
    """The record of a chunk of continuous text, kept as written (`</think>` included)."""
    return StepRecord(
        index=ctx.index,
        text=text,
        writer=writer,
        tokens=tokens,
        usage=usage,
        latency_s=time.monotonic() - started,
        detail=detail,
        outcome=outcome,
    )


async def all_of(requests: Iterable[Awaitable[Any]]) -> list[Any]:
    """Await `requests` concurrently, in one task group; the first failure cancels the others. A
    server error comes out as itself, not wrapped in an ExceptionGroup, so that the track's
    handling of server errors (the track fails, the problem goes on) still applies."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(request) for request in requests]
    except ExceptionGroup as failures:
        server_errors = failures.subgroup(ServerError)
        if server_errors is None:
            raise
        while isinstance(server_errors, ExceptionGroup):
            server_errors = server_errors.exceptions[0]
        raise server_errors from failures
    return [task.result() for task in tasks]


def discard(task: asyncio.Task) -> None:
    """Cancel work started ahead that no step will use, and retrieve its outcome when it ends, so a
    request that failed before it was thrown away is not reported as an exception nobody retrieved."""
    task.cancel()
    task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
