"""Baselines: every step written by one model (the big model alone, or the small one)."""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.config import ReasoningConfig, Settings
from engine.models import Model, usage_of
from engine.policies.base import PolicySpec, StepContext, StepOutcome, generate_step, kept_step, step_ending
from engine.prompts import PromptSet


@dataclass(frozen=True)
class SingleModelPolicy:
    writer: str

    async def step(self, ctx: StepContext) -> StepOutcome:
        started = time.monotonic()
        completion = await generate_step(ctx.models[self.writer], ctx, salt=0)
        step = kept_step(completion, self.writer, ctx.index, {self.writer: usage_of(completion)}, started)
        return StepOutcome(step, step_ending(completion, ctx.config.step_delimiter))


def _single(writer: str, description: str) -> PolicySpec:
    def start(settings: Settings, models: dict[str, Model], prompts: PromptSet, reasoning: ReasoningConfig):
        return SingleModelPolicy(writer)

    return PolicySpec(
        name=writer, description=description, roles=(writer,), settings=Settings, templates=(), start=start
    )


BIG = _single("big", "the big model writes every step")
SMALL = _single("small", "the small model writes every step")
