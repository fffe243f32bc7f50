"""Lookahead Reasoning (Fu et al., 2025): speculation past one step.

Each round, the small model drafts up to `--lookahead_steps` K steps in sequence, each on top of the
drafts before it. The big model writes its own step at every drafted position, started as soon as
that position's prefix is known (with the first draft, then as each draft is written), so the K
big-model steps are in flight at once. The verifier compares each draft with the big model's step
at the same position, in order: drafts are kept up to the first that does not match, which the big
model's step replaces; everything still running is then cancelled (vLLM aborts the requests).

The round's steps are handed to the track one at a time; each keeps what it cost (`usage`) apart
from the work thrown away (`wasted`: the big model's versions of kept drafts, a replaced draft, and
the drafts and big steps cancelled after a mismatch). Verifiers: `exact` compares the steps'
text with white space collapsed (the toy world's steps are exact); `judge` asks the big model for
a 0-9 rating of "the two steps say the same thing" (the prompt set's `equivalence` template) and
reads the expected digit from the logprobs of its one token; `embedding` embeds both steps with the
`embedder` model (a vLLM server of an embedding model: `--runner pooling --convert embed`) and
keeps the draft when their cosine similarity reaches `--embedding_threshold`.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field

from engine.data.prompts import PromptSet
from engine.errors import UsageError
from engine.reasoning.judges.specreason import MAX_JUDGE_SCORE, SCORE_TOP_LOGPROBS, StepScore, score_from_logprobs
from engine.reasoning.policies.base import (
    PolicySpec,
    StepContext,
    StepResult,
    discard,
    generate_step,
    kept_step,
    next_context,
    thinking_ending,
    without_stray_think_close,
)
from engine.reasoning.settings import ReasoningConfig, Settings, setting
from engine.records import RequestCost, Role, StepEnding, StepOutcome, StepRecord, thrown_away
from engine.serving.chat import Message
from engine.serving.models import Model, Purpose, Reply

VERIFIERS = ("judge", "exact", "embedding")
# vLLM flags that serve a causal LM as an embedding model (its pooled last hidden state).
EMBEDDER_SERVER_ARGS = ("--runner", "pooling", "--convert", "embed")


@dataclass(frozen=True)
class LookaheadSettings(Settings):
    lookahead_steps: int = setting(3, "Lookahead Reasoning: steps the small model drafts ahead in a round (K)")
    verifier: str = setting("judge", "how a draft is compared with the big model's own step", VERIFIERS)
    equivalence_threshold: float = setting(
        7.0, "with --verifier judge: the big model's 0-9 equivalence rating a draft needs to be kept"
    )
    embedding_threshold: float = setting(
        0.9, "with --verifier embedding: the cosine similarity of the two steps' embeddings a draft needs"
    )

    def validate(self) -> None:
        if self.lookahead_steps < 1:
            raise UsageError(f"--lookahead_steps must be at least 1, not {self.lookahead_steps}")
        if not 0 <= self.equivalence_threshold <= MAX_JUDGE_SCORE:
            raise UsageError(f"--equivalence_threshold must be between 0 and 9, not {self.equivalence_threshold}")
        if not -1 <= self.embedding_threshold <= 1:
            raise UsageError(f"--embedding_threshold must be between -1 and 1, not {self.embedding_threshold}")


@dataclass
class Position:
    """One drafted position of a round: its context, the big model's own step (a task started with
    the position) and the small model's draft (set once written)."""

    ctx: StepContext
    big: asyncio.Task[Reply]
    draft: Reply | None = None
    decided: bool = False


@dataclass
class Decided:
    """A step the round decided, waiting for the track to ask for it at `ctx`."""

    ctx: StepContext
    step: StepRecord
    ending: StepEnding


@dataclass
class LookaheadPolicy:
    settings: LookaheadSettings
    small: Model
    big: Model
    prompts: PromptSet
    embedder: Model | None = None
    decided: deque[Decided] = field(default_factory=deque)
    rounds: int = 0

    async def step(self, ctx: StepContext) -> StepResult:
        if self.decided and self.decided[0].ctx != ctx:
            raise RuntimeError(f"lookahead: step {ctx.index} asked in a context the round did not decide")
        if not self.decided:
            await self._round(ctx)
        head = self.decided.popleft()
        return StepResult(head.step, head.ending)

    def close(self) -> list[RequestCost]:
        """Steps decided but never asked for (the track ended before them): what they cost is wasted."""
        unused = thrown_away(cost for d in self.decided for cost in d.step.costs)
        self.decided.clear()
        return unused

    async def _round(self, ctx: StepContext) -> None:
        self.rounds += 1
        positions: list[Position] = []
        drafted: asyncio.Queue[Position | None] = asyncio.Queue()
        chain = asyncio.create_task(self._draft_chain(ctx, positions, drafted), name="lookahead-drafts")
        try:
            index, started = 0, time.monotonic()
            while (position := await drafted.get()) is not None:
                if not await self._decide(position, index, started):
                    break
                index, started = index + 1, time.monotonic()
        finally:
            chain.cancel()
            (drafting,) = await asyncio.gather(chain, return_exceptions=True)
            thrown = self._cancel_undecided(positions)
        if isinstance(drafting, Exception):
            raise drafting  # a draft that failed for good: the track fails, as on any server error
        self.decided[-1].step.charge(thrown)

    async def _draft_chain(self, ctx: StepContext, positions: list[Position], drafted: asyncio.Queue) -> None:
        """Draft up to K steps, each on the one before, starting the big model's step at each
        position as its prefix is known; stops after a draft that ends thinking."""
        delimiter = ctx.config.step_delimiter
        try:
            for _ in range(self.settings.lookahead_steps):
                mine = asyncio.create_task(generate_step(self.big, ctx, purpose=Purpose.REWRITE))
                position = Position(ctx, mine)
                positions.append(position)
                position.draft = await generate_step(self.small, ctx, purpose=Purpose.DRAFT)
                await drafted.put(position)
                text, tokens = without_stray_think_close(position.draft.text), position.draft.tokens
                ending = position.draft.step_ending(delimiter)
                if thinking_ending((*ctx.steps, text), ctx.thinking_tokens + tokens, ending, ctx.config):
                    break
                ctx = next_context(ctx, text, tokens)
        finally:
            drafted.put_nowait(None)  # also when a draft failed: the round stops waiting and raises

    async def _decide(self, position: Position, index_in_round: int, started: float) -> bool:
        """Verify `position`'s draft against the big model's step and queue the step kept there.
        True when the draft was kept (the round goes on)."""
        mine = await position.big
        draft, ctx = position.draft, position.ctx
        verdict, verdict_costs = await self._verify(ctx, draft, mine)
        if verdict is None:
            same, scored = _normalised(draft.text) == _normalised(mine.text), {}
        elif self.settings.verifier == "embedding":
            same, scored = verdict.value >= self.settings.embedding_threshold, {"score": verdict.value}
        else:
            same = verdict.value >= self.settings.equivalence_threshold
            scored = {"score": verdict.value, "score_distribution": verdict.distribution}
        delimiter = ctx.config.step_delimiter
        if same:
            costs = [draft.cost, *verdict_costs, *thrown_away([mine.cost])]
            outcome = StepOutcome.ACCEPTED
            step = kept_step(
                draft, Role.SMALL, ctx.index, costs, started, delimiter=delimiter, outcome=outcome, **scored
            )
        else:
            costs = [mine.cost, *verdict_costs, *thrown_away([draft.cost])]
            scored["draft"] = draft.text
            outcome = StepOutcome.REPLACED
            step = kept_step(mine, Role.BIG, ctx.index, costs, started, delimiter=delimiter, outcome=outcome, **scored)
        step.detail = {"round": self.rounds, "position": index_in_round}
        position.decided = True
        self.decided.append(Decided(ctx, step, step.ending))
        return same

    async def _verify(self, ctx: StepContext, draft: Reply, mine: Reply) -> tuple[StepScore | None, list[RequestCost]]:
        """The judge's equivalence rating (or the embeddings' cosine similarity) and what it cost;
        None with the exact verifier."""
        if self.settings.verifier == "exact":
            return None, []
        if self.settings.verifier == "embedding":
            return await self._embedding_similarity(_normalised(draft.text), _normalised(mine.text))
        reasoning = self.big.chat.think_open + ctx.reasoning
        question = self.prompts.render_equivalence(ctx.problem, draft.text.strip(), mine.text.strip())
        messages = [*ctx.messages, Message("assistant", reasoning), Message("user", question)]
        judged = await self.big.continue_text(
            messages,
            self.prompts.render_equivalence_prefix(),
            purpose=Purpose.VERIFY,
            max_tokens=1,
            temperature=0.0,
            logprobs=SCORE_TOP_LOGPROBS,
        )
        top = judged.top_logprobs[0] if judged.top_logprobs else {}
        return score_from_logprobs(judged.text, top, "average"), [judged.cost]

    async def _embedding_similarity(self, first: str, second: str) -> tuple[StepScore, list[RequestCost]]:
        embedder = self.embedder
        pooled = await asyncio.gather(
            embedder.pool(first, purpose=Purpose.EMBED, rendered=False),
            embedder.pool(second, purpose=Purpose.EMBED, rendered=False),
        )
        a, b = (_vector(p.data) for p in pooled)
        norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        cosine = sum(x * y for x, y in zip(a, b, strict=True)) / norms if norms else 0.0
        cosine = max(-1.0, min(1.0, cosine))  # float rounding can step past 1 for equal vectors
        return StepScore(value=cosine, distribution={}), [p.cost for p in pooled]

    def _cancel_undecided(self, positions: list[Position]) -> list[RequestCost]:
        """Cancel the big steps and the draft of the positions not decided; the entries of what they
        had cost, thrown away (a request cancelled in flight: one request with no known tokens)."""
        costs = []
        for position in positions:
            if position.decided:
                continue
            draft = position.draft
            costs += thrown_away([draft.cost]) if draft is not None else [self.small.cancelled(Purpose.DRAFT)]
            big = position.big
            if big.done() and not big.cancelled() and big.exception() is None:
                costs += thrown_away([big.result().cost])
            else:
                discard(big)
                costs.append(self.big.cancelled(Purpose.REWRITE))
        return costs


def _vector(data: list) -> list[float]:
    """An embedding from vLLM's pooling output (a vector, or a one-row matrix)."""
    return [float(x) for x in (data[0] if data and isinstance(data[0], list) else data)]


def _normalised(text: str) -> str:
    return " ".join(without_stray_think_close(text).split())


def start(settings: LookaheadSettings, models: dict[str, Model], prompts: PromptSet, reasoning: ReasoningConfig):
    return LookaheadPolicy(settings, models[Role.SMALL], models[Role.BIG], prompts, models.get(Role.EMBEDDER))


def _needed_roles(settings: LookaheadSettings) -> tuple[str, ...]:
    return (Role.SMALL, Role.BIG, Role.EMBEDDER) if settings.verifier == "embedding" else (Role.SMALL, Role.BIG)


LOOKAHEAD = PolicySpec(
    name="lookahead",
    description="Lookahead Reasoning: the small model drafts K steps ahead, the big model writes each position in "
    "parallel, drafts are kept up to the first the verifier finds different, which the big model's step replaces",
    roles=(Role.SMALL, Role.BIG, Role.EMBEDDER),
    settings=LookaheadSettings,
    templates=("equivalence", "equivalence_prefix"),
    # Every kept step is a draft or the big model's step, each asked with the track's logprobs.
    gives_token_logprobs=True,
    start=start,
    needed_roles=_needed_roles,
)
