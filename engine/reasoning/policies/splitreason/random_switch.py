"""SplitReason's random-switching baseline (modes/random_switch_flow.py): before each chunk of
`switch_chunk` tokens a coin picks its writer, the big model with probability 1/(switch_ratio+1).
A step is one chunk; the track's text is the chunks joined as written."""

from __future__ import annotations

import random
import time
from dataclasses import dataclass, field

from engine.data.prompts import PromptSet
from engine.errors import UsageError
from engine.reasoning.policies.base import (
    NothingAhead,
    PolicySpec,
    StepContext,
    StepResult,
    chunk_ending,
    continue_raw,
    reply_chunk,
)
from engine.reasoning.settings import ReasoningConfig, Settings, setting
from engine.records import Role, StepOutcome
from engine.serving.models import Model, Purpose


@dataclass(frozen=True)
class RandomSwitchSettings(Settings):
    switch_ratio: int = setting(1, "big and small chunks come 1:switch_ratio on average")
    switch_chunk: int = setting(16, "tokens per chunk; each chunk's writer is drawn anew")

    def validate(self) -> None:
        if self.switch_ratio < 0:
            raise UsageError(f"--switch_ratio must be 0 or more, not {self.switch_ratio}")
        if self.switch_chunk < 1:
            raise UsageError(f"--switch_chunk must be at least 1, not {self.switch_chunk}")


@dataclass
class RandomSwitchPolicy(NothingAhead):
    settings: RandomSwitchSettings
    # Seeded from the track's seed at its first chunk, so a track's writers are reproducible.
    rng: random.Random | None = field(default=None)

    def draw_writer(self, track_seed: int | None) -> Role:
        """The next chunk's writer. The track's seed folds in the problem's id
        (`engine.reasoning.seeds`), so every problem draws its own coins."""
        if self.rng is None:
            self.rng = random.Random(track_seed)
        return Role.BIG if self.rng.random() < 1 / (self.settings.switch_ratio + 1) else Role.SMALL

    async def step(self, ctx: StepContext) -> StepResult:
        # The track's seed, which its handles carry.
        writer = self.draw_writer(ctx.models[Role.SMALL].seed)
        started = time.monotonic()
        # The budget counts the tokens really generated, not the chunk size asked for (the seed's counter).
        reply = await continue_raw(
            ctx.models[writer],
            ctx.messages,
            ctx.reasoning,
            ctx,
            purpose=Purpose.STEP,
            index=ctx.index,
            max_tokens=min(self.settings.switch_chunk, ctx.config.max_step_tokens),
        )
        outcome = StepOutcome.TAKEN_OVER if writer == Role.BIG else StepOutcome.WRITTEN
        step = reply_chunk(reply, writer, ctx, started, outcome=outcome)
        return StepResult(step, chunk_ending(reply))


def start(settings: RandomSwitchSettings, models: dict[str, Model], prompts: PromptSet, reasoning: ReasoningConfig):
    return RandomSwitchPolicy(settings)


RANDOM_SWITCH = PolicySpec(
    name="random_switch",
    description="SplitReason's baseline: each chunk is written by the big model with probability 1/(switch_ratio+1)",
    roles=(Role.SMALL, Role.BIG),
    settings=RandomSwitchSettings,
    templates=(),
    gives_token_logprobs=True,
    start=start,
    continuous=True,
)
