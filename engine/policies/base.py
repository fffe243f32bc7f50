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
    followed by the delimiter). `config.max_step_tokens` is already clipped to the budget left."""

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
    """A kept step, and how its generation ended: "delimiter", "think_end", "eos" or "length"."""

    step: StepRecord
    ending: str


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
    """`model` continues the reasoning by one step, stopping at the delimiter or end of thinking."""
    stop = [ctx.config.step_delimiter] + ([THINK_CLOSE] if model.chat.thinking else [])
    prompt = model.chat.render(list(ctx.messages), model.chat.think_prefix + ctx.reasoning)
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
    completion: Completion, writer: str, index: int, usage: dict[str, ModelUsage], started: float, **scored: Any
) -> StepRecord:
    """The step record of `completion` as kept in the track, written by `writer`."""
    return StepRecord(
        index=index,
        text=completion.text.replace(THINK_CLOSE, ""),
        writer=writer,
        tokens=completion.completion_tokens,
        usage=usage,
        latency_s=time.monotonic() - started,
        **scored,
    )
