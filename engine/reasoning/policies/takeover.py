"""Speculative Thinking (Yang et al., 2025), read at the step level: the small model reasons, and where
it reflects the big model takes over. A small-model step that starts with one of the prompt set's
reflection cues (`takeover_cues`: "Wait", "Hmm", "Alternatively", ...) is kept, and the big model
writes the next `--takeover_steps` steps; with `--takeover_every N` the big model also writes every
N-th step. Each step records who wrote it and why (`detail`: the cue, or "every").

The authors' code works at the token level (a trigger at each paragraph break, then keyword checks
on a fixed number of tokens each model writes); spectra's steps are its paragraphs, so a cue at the
start of a step is the same trigger, and the big model's turn is counted in steps.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from engine.data.prompts import PromptSet
from engine.errors import UsageError
from engine.reasoning.policies.base import (
    NothingAhead,
    PolicySpec,
    StepContext,
    StepResult,
    generate_step,
    kept_step,
)
from engine.reasoning.settings import ReasoningConfig, Settings, setting
from engine.records import Role, StepOutcome
from engine.serving.models import Model, Purpose


@dataclass(frozen=True)
class TakeoverSettings(Settings):
    takeover_steps: int = setting(1, "Speculative Thinking: steps the big model writes after a reflection cue")
    takeover_every: int | None = setting(None, "also hand every N-th step to the big model")

    def validate(self) -> None:
        if self.takeover_steps < 1:
            raise UsageError(f"--takeover_steps must be at least 1, not {self.takeover_steps}")
        if self.takeover_every is not None and self.takeover_every < 1:
            raise UsageError(f"--takeover_every must be at least 1, not {self.takeover_every}")


@dataclass
class TakeoverPolicy(NothingAhead):
    settings: TakeoverSettings
    cues: tuple[str, ...]
    # Steps the big model still writes, and why it took over.
    big_turn: int = 0
    reason: str = ""

    async def step(self, ctx: StepContext) -> StepResult:
        started, delimiter = time.monotonic(), ctx.config.step_delimiter
        every = self.settings.takeover_every
        if self.big_turn == 0 and every and ctx.index % every == every - 1:
            self.big_turn, self.reason = 1, "every"
        if self.big_turn > 0:
            self.big_turn -= 1
            reply = await generate_step(ctx.models[Role.BIG], ctx, purpose=Purpose.REWRITE)
            outcome = StepOutcome.TAKEN_OVER
            step = kept_step(reply, Role.BIG, ctx.index, [reply.cost], started, delimiter=delimiter, outcome=outcome)
            step.detail = {"why": self.reason}
            return StepResult(step, step.ending)
        reply = await generate_step(ctx.models[Role.SMALL], ctx, purpose=Purpose.DRAFT)
        outcome = StepOutcome.WRITTEN
        step = kept_step(reply, Role.SMALL, ctx.index, [reply.cost], started, delimiter=delimiter, outcome=outcome)
        cue = self.cue_of(step.text)
        if cue is not None:
            self.big_turn, self.reason = self.settings.takeover_steps, f"cue: {cue}"
            step.detail = {"cue": cue}
        return StepResult(step, step.ending)

    def cue_of(self, text: str) -> str | None:
        """The reflection cue `text` starts with (case-insensitive, leading white space ignored)."""
        start = text.lstrip().lower()
        return next((cue for cue in self.cues if start.startswith(cue.lower())), None)


def start(settings: TakeoverSettings, models: dict[str, Model], prompts: PromptSet, reasoning: ReasoningConfig):
    return TakeoverPolicy(settings, prompts.takeover_cues())


TAKEOVER = PolicySpec(
    name="takeover",
    description="Speculative Thinking: the small model reasons; after a step that starts with a reflection cue "
    "(or every --takeover_every steps) the big model writes the next --takeover_steps steps",
    roles=(Role.SMALL, Role.BIG),
    settings=TakeoverSettings,
    templates=("takeover_cues",),
    gives_token_logprobs=True,
    start=start,
)
