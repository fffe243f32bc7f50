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
from engine.reasoning.policies.base import NothingAhead, PolicySpec, StepContext, StepOutcome, generate_step, kept_step
from engine.reasoning.settings import ReasoningConfig, Settings, setting
from engine.records import WRITTEN
from engine.serving.models import NO_SPECIAL_TOKENS, Model, request_seed, usage_of


@dataclass(frozen=True)
class SingleModelSettings(Settings):
    stepwise: bool = setting(
        False, "spectra: write the single model's reasoning step by step (the seeds write it in one request)"
    )


@dataclass(frozen=True)
class SingleModelPolicy(NothingAhead):
    writer: str
    settings: SingleModelSettings

    async def step(self, ctx: StepContext) -> StepOutcome:
        started, model = time.monotonic(), ctx.models[self.writer]
        if self.settings.stepwise:
            completion = await generate_step(model, ctx, salt=0)
        else:
            completion = await whole_reasoning(model, ctx)
        usage = {self.writer: usage_of(completion)}
        delimiter = ctx.config.step_delimiter
        step = kept_step(completion, self.writer, ctx.index, usage, started, delimiter=delimiter, outcome=WRITTEN)
        return StepOutcome(step, step.ending, final=not self.settings.stepwise)


async def whole_reasoning(model: Model, ctx: StepContext):
    """One request for the whole reasoning and answer: up to the token budget, no stops."""
    return await model.client.complete(
        model.chat.continuation(ctx.messages, ctx.reasoning),
        max_tokens=ctx.config.token_budget,
        temperature=ctx.config.temperature,
        top_p=ctx.config.top_p,
        seed=request_seed(ctx.seed, ctx.index, 0),
        logprobs=ctx.token_logprobs,
        # Streamed: thousands of tokens are bounded by the stall timeout, not only the whole-request one.
        stream=True,
        extra=NO_SPECIAL_TOKENS,
    )


def _single(writer: str, description: str) -> PolicySpec:
    def start(settings: SingleModelSettings, models: dict[str, Model], prompts: PromptSet, reasoning: ReasoningConfig):
        return SingleModelPolicy(writer, settings)

    return PolicySpec(
        name=writer,
        description=description,
        roles=(writer,),
        settings=SingleModelSettings,
        templates=(),
        start=start,
    )


BIG = _single("big", "the big model writes the reasoning")
SMALL = _single("small", "the small model writes the reasoning")
