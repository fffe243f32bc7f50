"""Speculative Thinking (Yang et al., 2025), as its authors' code runs it (uservan/speculative_thinking,
speculative/speculative_vllm.py with its reasoning-model configs, e.g. config/1b_32b.yml): the small
model reasons, and after every paragraph break it writes, what it would write next is looked at.

The small model writes up to a paragraph break ("\\n\\n"). There it writes `--takeover_peek_tokens`
(20) tokens more, which are only looked at, never kept (`Purpose.PEEK`, their cost `wasted`). The
peek is read as the reference reads it: lower-cased, for any of the prompt set's negative, verify and
positive words (`takeover_negative`, `takeover_verify`, `takeover_positive`; anywhere, inside words
too). Without one, the small model writes the paragraph anew. With one, the big model writes those
tokens itself ("taken over"); when its own opening holds a verify word it writes 125 tokens more,
and when its opening leans negative (more negative and verify words than positive ones, or as many
and some) it counts towards a recap: after 15 such openings, at the next paragraph break the text
gets the prompt set's `takeover_recap` ("Let me check whether there are some wrong steps:") and the
big model writes 125 tokens after it (each recap adds 25 tokens, up to 200, and 5 openings, up to
30, to the next). After the big model's turn the small model goes on to the next break.

The text is one stream, so the track is continuous (as SplitReason's): a step is one chunk of one
writer, joined as written, and the track ends at EOS or at the budget, as the reference's loop
does. Each chunk of the big model records why it wrote it (`detail`). `--takeover_every N`
(spectra's) also hands every N-th paragraph break's opening to the big model, without a peek.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.data.prompts import PromptSet
from engine.errors import UsageError
from engine.reasoning.policies.base import (
    NothingAhead,
    PolicySpec,
    StepContext,
    StepResult,
    TokenScores,
    chunk_ending,
    chunk_step,
    continue_raw,
)
from engine.reasoning.settings import ReasoningConfig, Settings, setting
from engine.records import RequestCost, Role, StepEnding, StepOutcome, thrown_away
from engine.serving.models import Model, Purpose, Reply

# The reference's trigger (TRIGGER_TOKENS) and the numbers of its reasoning-model configs:
# `original_recap_token_num` (the big model's turn after a verify word, and its first recap),
# `recap_after_negative_num`, and how each recap grows the next (`add_each_recap` up to
# `max_recap_token_num`, `add_each_neg` up to `max_negative_num`).
PARAGRAPH = "\n\n"
RECAP_TOKENS, RECAP_TOKENS_STEP, RECAP_TOKENS_MOST = 125, 25, 200
RECAP_AFTER, RECAP_AFTER_STEP, RECAP_AFTER_MOST = 15, 5, 30
# Both models sample with top_k 50 (speculative_thinking.py, `process_message`), beside the track's
# temperature and top_p.
TOP_K = 50


@dataclass(frozen=True)
class TakeoverSettings(Settings):
    takeover_peek_tokens: int = setting(
        20, "Speculative Thinking: tokens of the small model peeked at after a paragraph break, and the big model's "
        "opening in their place when they hold a cue word (the reference's max_target_tokens)"
    )  # fmt: skip
    takeover_every: int | None = setting(
        None, "also hand the opening after every N-th paragraph break to the big model"
    )

    def validate(self) -> None:
        if self.takeover_peek_tokens < 1:
            raise UsageError(f"--takeover_peek_tokens must be at least 1, not {self.takeover_peek_tokens}")
        if self.takeover_every is not None and self.takeover_every < 1:
            raise UsageError(f"--takeover_every must be at least 1, not {self.takeover_every}")


@dataclass(frozen=True)
class CueWords:
    """The prompt set's three word lists (lower case) and the recap text."""

    negative: tuple[str, ...]
    verify: tuple[str, ...]
    positive: tuple[str, ...]
    recap: str

    def found(self, text: str) -> list[str]:
        """Every word of the three lists that `text` holds (case ignored), in list order."""
        lower = text.lower()
        return [word for word in (*self.negative, *self.verify, *self.positive) if word in lower]

    def leaning(self, text: str) -> int:
        """The reference's `sentiment_analysis`: occurrences of positive words against negative and
        verify words; 1 (more positive), -1 (more of the others, or as many and some), 0 (none)."""
        lower = text.lower()
        positive = sum(lower.count(word) for word in self.positive)
        negative = sum(lower.count(word) for word in (*self.negative, *self.verify))
        if positive > negative:
            return 1
        return -1 if negative > 0 else 0

    def verifies(self, text: str) -> bool:
        lower = text.lower()
        return any(word in lower for word in self.verify)


@dataclass
class TakeoverPolicy(NothingAhead):
    settings: TakeoverSettings
    words: CueWords
    # Whether the text ends at a paragraph break the small model wrote (the reference checks only there).
    at_break: bool = False
    breaks: int = 0
    # Tokens the big model still writes (its opening held a verify word).
    more: int = 0
    negatives: int = 0
    recap_after: int = RECAP_AFTER
    recap_tokens: int = RECAP_TOKENS

    async def step(self, ctx: StepContext) -> StepResult:
        started = time.monotonic()
        if self.more:
            tokens, self.more = self.more, 0
            return self._chunk(await self._write(ctx, Role.BIG, tokens), ctx, started, {"why": "verify"})
        if not self.at_break:
            return await self._paragraph(ctx, started)
        self.at_break, self.breaks = False, self.breaks + 1
        if self.negatives >= self.recap_after:
            return await self._recap(ctx, started)
        peek_tokens, every = self.settings.takeover_peek_tokens, self.settings.takeover_every
        if every and self.breaks % every == 0:
            return self._chunk(await self._write(ctx, Role.BIG, peek_tokens), ctx, started, {"why": "every"})
        peek = await self._write(ctx, Role.SMALL, peek_tokens, purpose=Purpose.PEEK)
        cues = self.words.found(peek.text)
        if not cues:
            return await self._paragraph(ctx, started, thrown_away([peek.cost]))
        opening = await self._write(ctx, Role.BIG, peek_tokens)
        if self.words.leaning(opening.text) < 0:
            self.negatives += 1
        if self.words.verifies(opening.text):
            self.more = RECAP_TOKENS
        detail = {"why": "cue", "cues": cues, "peek": peek.text}
        return self._chunk(opening, ctx, started, detail, thrown_away([peek.cost]))

    async def _paragraph(self, ctx: StepContext, started: float, wasted: Sequence[RequestCost] = ()) -> StepResult:
        """The small model writes on to the next paragraph break (kept), EOS or the budget."""
        reply = await self._write(ctx, Role.SMALL, ctx.config.max_step_tokens, stop=[PARAGRAPH])
        # vLLM leaves the stop string out of the text; the reference keeps the token that holds it.
        self.at_break = reply.stop_reason == PARAGRAPH
        if self.at_break:
            text, ending = reply.text + PARAGRAPH, StepEnding.DELIMITER
            return self._chunk(reply, ctx, started, wasted=wasted, text=text, ending=ending)
        return self._chunk(reply, ctx, started, wasted=wasted)

    async def _recap(self, ctx: StepContext, started: float) -> StepResult:
        """The recap words, then the big model's recap; the next recap comes later and runs longer."""
        recap = self.words.recap
        reply = await self._write(ctx, Role.BIG, self.recap_tokens, after=recap)
        self.negatives = 0
        self.recap_tokens = min(self.recap_tokens + RECAP_TOKENS_STEP, RECAP_TOKENS_MOST)
        self.recap_after = min(self.recap_after + RECAP_AFTER_STEP, RECAP_AFTER_MOST)
        return self._chunk(reply, ctx, started, {"why": "recap"}, text=recap + reply.text)

    @staticmethod
    def _chunk(
        reply: Reply,
        ctx: StepContext,
        started: float,
        detail: dict[str, Any] | None = None,
        wasted: Sequence[RequestCost] = (),
        text: str | None = None,
        ending: StepEnding | None = None,
    ) -> StepResult:
        """The chunk `reply` wrote (as `text`, default its own), charged with the `wasted` peek too;
        its writer is the model that answered."""
        writer = reply.cost.role
        outcome = StepOutcome.WRITTEN if writer == Role.SMALL else StepOutcome.TAKEN_OVER
        text = reply.text if text is None else text
        step = chunk_step(
            text, writer, reply.tokens, ctx, [reply.cost, *wasted], started, detail,
            outcome=outcome, measured=TokenScores.of(reply),
        )  # fmt: skip
        return StepResult(step, ending or chunk_ending(reply))

    async def _write(
        self,
        ctx: StepContext,
        writer: str,
        max_tokens: int,
        *,
        purpose: Purpose | None = None,
        stop: list[str] | None = None,
        after: str = "",
    ) -> Reply:
        """`writer` continues the text (and `after`) by up to `max_tokens` tokens, never past the budget
        left unless it only peeks. The small model drafts, the big model writes in its place."""
        purpose = purpose or (Purpose.DRAFT if writer == Role.SMALL else Purpose.REWRITE)
        if purpose != Purpose.PEEK:
            max_tokens = min(max_tokens, ctx.config.max_step_tokens)
        return await continue_raw(
            ctx.models[writer],
            ctx.messages,
            ctx.reasoning + after,
            ctx,
            purpose=purpose,
            index=ctx.index,
            max_tokens=max_tokens,
            stop=stop,
            top_k=TOP_K,
        )


def start(settings: TakeoverSettings, models: dict[str, Model], prompts: PromptSet, reasoning: ReasoningConfig):
    negative, verify, positive = (prompts.takeover_words(kind) for kind in ("negative", "verify", "positive"))
    return TakeoverPolicy(settings, CueWords(negative, verify, positive, prompts.render_takeover_recap()))


TAKEOVER = PolicySpec(
    name="takeover",
    description="Speculative Thinking: the small model reasons; where its next tokens after a paragraph break "
    "hold a cue word the big model writes them instead",
    roles=(Role.SMALL, Role.BIG),
    settings=TakeoverSettings,
    templates=("takeover_negative", "takeover_verify", "takeover_positive", "takeover_recap"),
    gives_token_logprobs=True,
    start=start,
    continuous=True,
)
