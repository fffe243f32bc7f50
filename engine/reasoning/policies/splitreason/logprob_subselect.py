"""SplitReason's logprob sub-selection (modes/logprob_subselect.py, not in its paper): the small
model extends `sgen` candidates by `stok` tokens, the big model continues each greedily for `ltok`
tokens, the candidates are ranked by the mean logprob of those big-model tokens, and the best
max(1, count // sdecay) are kept, round after round, down to one; then the small model continues
the winner.

The selection happens in the track's first step; the winner's pieces are then kept one step
each, in order, so every step has one writer; then comes the final small-model continuation.
"""

from __future__ import annotations

import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from engine.data.prompts import PromptSet
from engine.errors import ServerError, UsageError
from engine.reasoning.policies.base import (
    NothingAhead,
    PolicySpec,
    StepContext,
    StepResult,
    TokenScores,
    all_of,
    chunk_ending,
    chunk_step,
    continue_raw,
    reply_chunk,
)
from engine.reasoning.settings import ReasoningConfig, Settings, setting
from engine.records import RequestCost, Role, StepEnding, StepOutcome
from engine.serving.chat import THINK_CLOSE
from engine.serving.models import Model, Purpose, Reply

# After the selection the small model continues the winner for at most this many tokens (the seed's).
FINAL_TOKENS = 4096
# The requests' index space of the selection (`request_seed`): round * ROUND_STRIDE + candidate.
ROUND_STRIDE = 1024


@dataclass(frozen=True)
class SubselectSettings(Settings):
    sgen: int = setting(8, "candidates the small model starts")
    stok: int = setting(16, "tokens the small model adds to each candidate a round")
    sdecay: int = setting(2, "each round keeps max(1, count // sdecay) candidates")
    ltok: int = setting(16, "greedy big-model tokens whose mean logprob ranks a candidate")
    lbound: int = setting(4, "at this many candidates or fewer, stop once most closed thinking")
    max_iterations: int | None = setting(None, "rounds at most (default 32768 // (stok * ltok))")

    def validate(self) -> None:
        for name in ("sgen", "stok", "sdecay"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1, not {getattr(self, name)}")
        if self.ltok < 1:
            raise UsageError(f"--ltok must be at least 1 (the big model's tokens rank the candidates), not {self.ltok}")
        if self.lbound < 0:
            raise UsageError(f"--lbound must be 0 or more, not {self.lbound}")
        if self.max_iterations is not None and self.max_iterations < 1:
            raise UsageError(f"--max_iterations must be at least 1, not {self.max_iterations}")

    @property
    def rounds(self) -> int:
        return self.max_iterations or 32768 // (self.stok * self.ltok)


@dataclass
class Piece:
    writer: Role
    text: str
    tokens: int
    eos: bool
    measured: TokenScores = TokenScores()


@dataclass
class Candidate:
    pieces: list[Piece] = field(default_factory=list)
    score: float = -math.inf

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.pieces)

    @property
    def tokens(self) -> int:
        return sum(p.tokens for p in self.pieces)

    @property
    def finished(self) -> bool:
        return bool(self.pieces) and self.pieces[-1].eos

    def copy(self) -> Candidate:
        return Candidate(list(self.pieces), self.score)


def mean_logprob(reply: Reply) -> float:
    """The mean logprob of the generated tokens, read from the top-1 logprobs (vLLM always lists
    the sampled token) by token id (`return_tokens_as_token_ids`: two tokens that decode to the
    same string, or to none, stay apart); no tokens (the big model ended at once) give no
    evidence: -inf."""
    choice, server = reply.choice, reply.cost.server
    if reply.tokens and not choice.tokens:
        raise ServerError(server, None, "asked for logprobs=1, got a completion without them")
    values = []
    for token, top in zip(choice.tokens, choice.top_logprobs, strict=True):
        if token not in top:
            raise ServerError(server, None, f"the logprobs of {token!r} do not list the token itself")
        values.append(top[token])
    return sum(values) / len(values) if values else -math.inf


@dataclass
class Selection:
    """The rounds of one selection: the candidates and every request's cost entry."""

    candidates: list[Candidate]
    costs: list[RequestCost] = field(default_factory=list)
    rounds: list[dict[str, Any]] = field(default_factory=list)


@dataclass
class SubselectPolicy(NothingAhead):
    settings: SubselectSettings
    pending: deque[Piece] | None = None  # the winner's pieces not yet kept as steps
    selection: Selection | None = None

    async def step(self, ctx: StepContext) -> StepResult:
        started = time.monotonic()
        if self.pending is None:
            self.selection = await self._select(ctx)
            winner = max(self.selection.candidates, key=lambda c: c.score)
            self.pending = deque(winner.pieces)
        if self.pending:
            return self._keep_piece(ctx, started)
        return await self._final_continuation(ctx, started)

    def _keep_piece(self, ctx: StepContext, started: float) -> StepResult:
        piece = self.pending.popleft()
        costs, detail = [], {"phase": "select"}
        if self.selection is not None:  # the selection's cost and rounds go with the first kept piece
            costs, detail["rounds"] = self.selection.costs, self.selection.rounds
            self.selection = None
        outcome = StepOutcome.TAKEN_OVER if piece.writer == Role.BIG else StepOutcome.WRITTEN
        step = chunk_step(
            piece.text,
            piece.writer,
            piece.tokens,
            ctx,
            costs,
            started,
            detail,
            outcome=outcome,
            measured=piece.measured,
        )
        # A winner that ended the sequence has nothing to continue: thinking ends, and the answer
        # is still asked for, as after the final continuation.
        return StepResult(step, StepEnding.THINK_END if piece.eos else StepEnding.LENGTH)

    async def _final_continuation(self, ctx: StepContext, started: float) -> StepResult:
        """The small model continues the winner; then, however it ended, thinking is over and the
        track's answer phase asks for the answer (where the seed appends "...\\boxed{" for 8
        big-model tokens), as the seed always does after this continuation."""
        limit = min(FINAL_TOKENS, ctx.config.max_step_tokens)
        reply = await continue_raw(
            ctx.models[Role.SMALL],
            ctx.messages,
            ctx.reasoning,
            ctx,
            purpose=Purpose.STEP,
            index=ctx.index,
            max_tokens=limit,
        )
        detail = {"phase": "continue", "ended": chunk_ending(reply)}
        step = reply_chunk(reply, Role.SMALL, ctx, started, detail, outcome=StepOutcome.WRITTEN)
        return StepResult(step, StepEnding.THINK_END)

    async def _select(self, ctx: StepContext) -> Selection:
        """Rounds until one candidate is left, all are finished, the rounds are spent, or one more
        round could pass the budget (a round adds at most stok + 2 * ltok tokens, with a rescore)."""
        s = self.settings
        selection = Selection([Candidate() for _ in range(s.sgen)])
        for round_no in range(s.rounds):
            live = selection.candidates
            room = ctx.config.max_step_tokens - max(c.tokens for c in live)
            if len(live) <= 1 or all(c.finished for c in live) or s.stok + 2 * s.ltok > room:
                break
            if await self._round(ctx, selection, round_no):
                break
        return selection

    async def _round(self, ctx: StepContext, selection: Selection, round_no: int) -> bool:
        """One round (SplitReason's 2a-d); True when the selection is over."""
        s, candidates = self.settings, selection.candidates
        await self._extend(ctx, selection, round_no, Role.SMALL, s.stok)
        await self._extend(ctx, selection, round_no, Role.BIG, s.ltok)
        # Best first. SplitReason's code sorts ascending and so keeps the lowest-scoring candidates.
        ranked = sorted(candidates, key=lambda c: c.score, reverse=True)
        kept = ranked[: max(1, len(ranked) // s.sdecay)]
        record = {"scores": [c.score for c in candidates], "kept": len(kept)}
        selection.rounds.append(record)
        selection.candidates = kept
        if len(kept) > s.lbound:
            return False
        closed = sum(THINK_CLOSE in c.text for c in kept)
        if closed > 2 * len(kept) // 3:
            # Most candidates closed thinking: rescore, keep the best with its continuation, stop.
            await self._extend(ctx, selection, round_no, Role.BIG, s.ltok, rescore=True)
            selection.candidates = [max(selection.candidates, key=lambda c: c.score)]
            record.update(ended="think_closed", rescores=[c.score for c in kept])
            return True
        selection.candidates = [c.copy() for c in kept for _ in range(2)]
        record["duplicated"] = True
        return False

    async def _extend(
        self, ctx: StepContext, selection: Selection, round_no: int, role: Role, tokens: int, rescore: bool = False
    ) -> None:
        """Every unfinished candidate grows by `tokens` of `role`'s text, concurrently: the small
        model samples (drafts), the big model writes greedily and its mean logprob scores the
        candidate. A finished candidate (EOS) grows no more and keeps its last score."""
        big = role == Role.BIG
        purpose = (Purpose.RESCORE if rescore else Purpose.REWRITE) if big else Purpose.DRAFT

        async def grow(j: int, candidate: Candidate) -> None:
            reply = await continue_raw(
                ctx.models[role],
                ctx.messages,
                ctx.reasoning + candidate.text,
                ctx,
                purpose=purpose,
                index=round_no * ROUND_STRIDE + j,
                max_tokens=tokens,
                greedy=big,
                logprobs=1 if big else None,
                token_ids=big,
            )
            selection.costs.append(reply.cost)
            if big:
                candidate.score = mean_logprob(reply)
            eos = chunk_ending(reply) == StepEnding.EOS
            candidate.pieces.append(Piece(role, reply.text, reply.tokens, eos, TokenScores.of(reply)))

        await all_of(grow(j, c) for j, c in enumerate(selection.candidates) if not c.finished)


def start(settings: SubselectSettings, models: dict[str, Model], prompts: PromptSet, reasoning: ReasoningConfig):
    return SubselectPolicy(settings)


LOGPROB_SUBSELECT = PolicySpec(
    name="logprob_subselect",
    description="SplitReason's sub-selection: small-model candidates ranked by the big model's greedy logprobs",
    roles=(Role.SMALL, Role.BIG),
    settings=SubselectSettings,
    templates=(),
    gives_token_logprobs=True,
    start=start,
    continuous=True,
)
