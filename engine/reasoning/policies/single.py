"""Baselines: the reasoning written by one model (the big model alone, or the small one).

By default the model writes the whole reasoning in one request, as SpecLRM's `base_test` and
`scale_reason` (and SplitReason's big/small-only baselines) do: `max_tokens` is the token
budget, no stop strings, streamed so that Ctrl-C and early stop still abort it. `--stepwise`
writes it step by step instead, stopping at each delimiter like the speculative policies.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.data.prompts import PromptSet
from engine.reasoning.policies.base import NothingAhead, PolicySpec, StepContext, StepResult, generate_step, kept_step
from engine.reasoning.settings import ReasoningConfig, Settings, setting
from engine.records import Role, StepOutcome
from engine.serving.models import Model, Purpose, Reply


@dataclass(frozen=True)
class SingleModelSettings(Settings):
    stepwise: bool = setting(
        False, "spectra: write the single model's reasoning step by step (the seeds write it in one request)"
    )


@dataclass(frozen=True)
class SingleModelPolicy(NothingAhead):
    writer: Role
    settings: SingleModelSettings

    async def step(self, ctx: StepContext) -> StepResult:
        started, model = time.monotonic(), ctx.models[self.writer]
        if self.settings.stepwise:
            reply = await generate_step(model, ctx, purpose=Purpose.STEP)
        else:
            reply = await whole_reasoning(model, ctx)
        delimiter = ctx.config.step_delimiter
        outcome = StepOutcome.WRITTEN
        step = kept_step(reply, self.writer, ctx.index, [reply.cost], started, delimiter=delimiter, outcome=outcome)
        return StepResult(step, step.ending, final=not self.settings.stepwise)


async def whole_reasoning(model: Model, ctx: StepContext) -> Reply:
    """One request for the whole reasoning and answer: up to the token budget, no stops."""
    return await model.continue_reasoning(
        ctx.messages,
        ctx.reasoning,
        purpose=Purpose.STEP,
        index=ctx.index,
        max_tokens=ctx.config.token_budget,
        temperature=ctx.config.temperature,
        top_p=ctx.config.top_p,
        # Streamed: thousands of tokens are bounded by the stall timeout, not only the whole-request one.
        stream=True,
    )


def _single(writer: Role, description: str) -> PolicySpec[SingleModelSettings]:
    def start(settings: SingleModelSettings, models: dict[str, Model], prompts: PromptSet, reasoning: ReasoningConfig):
        return SingleModelPolicy(writer, settings)

    return PolicySpec(
        name=writer.value,
        description=description,
        roles=(writer,),
        settings=SingleModelSettings,
        templates=(),
        gives_token_logprobs=True,
        start=start,
        one_request=lambda settings: not settings.stepwise,
    )


BIG = _single(Role.BIG, "the big model writes the reasoning")
SMALL = _single(Role.SMALL, "the small model writes the reasoning")
