"""The contract of a step policy: how ONE reasoning step of a track is produced.

A `PolicySpec` declares a policy's name, the model roles it calls, its settings (a frozen
`Settings` dataclass whose fields are its flags), the prompt-set templates it renders, and
`start`, which makes the per-track object whose `step` is called once per step, so a policy
can keep state from step to step. The helpers below are what most policies share.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from engine.chat import THINK_CLOSE, Message
from engine.client import Completion
from engine.config import ReasoningConfig, Settings
from engine.models import NO_SPECIAL_TOKENS, Model, request_seed
from engine.prompts import PromptSet
from engine.results import ModelUsage, StepRecord


@dataclass(frozen=True)
class StepContext:
    """What a policy needs to write step `index` after `reasoning` (the kept steps so far, each
    followed by the delimiter). As in the seeds, `config.max_step_tokens` is not clipped to the
    budget left: the budget is checked after the step."""

    models: dict[str, Model]
    messages: tuple[Message, ...]
    reasoning: str
    steps: tuple[str, ...]
    index: int
    config: ReasoningConfig
    prompts: PromptSet
    problem: str
    seed: int | None


@dataclass(frozen=True)
class StepOutcome:
    """A kept step, and how its generation ended: "delimiter", "think_end", "eos" or "length".
    `final`: the policy wrote the whole reasoning in this one step, so thinking ends with it."""

    step: StepRecord
    ending: str
    final: bool = False


class TrackPolicy(Protocol):
    """One track's policy: writes the track's steps one at a time."""

    async def step(self, ctx: StepContext) -> StepOutcome: ...


@dataclass(frozen=True)
class PolicySpec:
    """A registered policy. `start(settings, models, prompts, reasoning)` returns one track's policy."""

    name: str
    description: str
    roles: tuple[str, ...]
    settings: type[Settings]
    templates: tuple[str, ...]
    start: Callable[[Any, dict[str, Model], PromptSet, ReasoningConfig], TrackPolicy]


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
    **scored: Any,
) -> StepRecord:
    """The step record of `completion` as kept in the track, written by `writer`."""
    return StepRecord(
        index=index,
        text=without_stray_think_close(completion.text),
        writer=writer,
        tokens=completion.completion_tokens,
        usage=usage,
        latency_s=time.monotonic() - started,
        ending=step_ending(completion, delimiter),
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
