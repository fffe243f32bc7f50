"""Pipelined speculation, a spectra improvement (SpecReason drafts, scores and rewrites one step at
a time): while the big model scores draft i, the small model already drafts step i+1 on top of
draft i, up to `depth` steps ahead, and each draft made ahead is judged as soon as it is written.

A step uses a draft made ahead only when the context that draft assumed (the reasoning, with every
earlier draft kept, the step index, the config with its token limit, the seed...) equals the
step's real context, so its draft and score are the very requests the sequential loop sends:
each request's seed depends only on the track, the step and its purpose (`request_seed`), and the
judge scores at temperature 0. Otherwise, and whenever a draft is rejected, everything made ahead
is cancelled: cancelling a request's task closes its connection and vLLM aborts the request.
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections import deque
from dataclasses import dataclass

import structlog

from engine.reasoning.judges import StepJudge
from engine.reasoning.judges.base import ScoredSteps, ScoreQuery
from engine.reasoning.policies.base import (
    StepContext,
    discard,
    generate_step,
    next_context,
    thinking_ending,
    without_stray_think_close,
)
from engine.records import RequestCost, thrown_away
from engine.serving.models import Model, Purpose, Reply

log = structlog.get_logger(__name__)


@dataclass
class Speculation:
    """One step's draft and its score, made by one task; `drafted` and `verdict` are set as they come."""

    ctx: StepContext
    task: asyncio.Task[tuple[Reply, ScoredSteps]] | None = None
    drafted: Reply | None = None
    scoring: bool = False
    verdict: ScoredSteps | None = None
    # With several drafts a step: each candidate's value, in the order the small model wrote them.
    draft_values: list[float] | None = None


class DraftPipeline:
    """One track's drafts and scores: the step being decided first, then up to `depth` steps ahead,
    each drafted on top of the one before it (assuming it is kept). With `drafts` > 1 (no work
    ahead), the small model writes that many candidates of the step in one request, the judge rates
    each, and the best-rated is the step's draft."""

    def __init__(self, small: Model, judge: StepJudge, depth: int, drafts: int = 1):
        self.small, self.judge, self.depth, self.drafts = small, judge, depth, drafts
        self._queue: deque[Speculation] = deque()

    def head(self, ctx: StepContext) -> tuple[Speculation, list[RequestCost]]:
        """The draft and score of the step of `ctx`: made ahead when it assumed this very context,
        else started now. Also returns the work ahead thrown away (when the context differs)."""
        wasted: list[RequestCost] = []
        if self._queue and self._queue[0].ctx != ctx:
            log.debug("speculation_missed", index=ctx.index, discarded=len(self._queue))
            wasted = self.discard()
        if not self._queue:
            self._start(ctx)
        return self._queue[0], wasted

    def keep(self) -> None:
        """The head's draft was kept: the next step's speculation becomes the head, and one more
        step may be drafted ahead."""
        self._queue.popleft()
        self._fill()

    def reject(self) -> list[RequestCost]:
        """The head's draft was rejected: cancel everything drafted on top of it; returns its cost."""
        rejected = self._queue.popleft()
        if self._queue:
            log.debug("speculation_discarded", index=rejected.ctx.index, discarded=len(self._queue))
        return self.discard()

    def discard(self) -> list[RequestCost]:
        """Cancel everything in the pipeline; the cost entries of what it had done (wasted)."""
        wasted = [cost for spec in self._queue for cost in self._cost(spec)]
        for spec in self._queue:
            discard(spec.task)
        self._queue.clear()
        return wasted

    def _start(self, ctx: StepContext) -> None:
        spec = Speculation(ctx)
        spec.task = asyncio.create_task(self._draft_and_score(spec), name=f"speculation-{ctx.index}")
        self._queue.append(spec)

    async def _draft_and_score(self, spec: Speculation) -> tuple[Reply, ScoredSteps]:
        ctx = spec.ctx
        if self.drafts > 1:
            return await self._best_of_drafts(spec)
        spec.drafted = await generate_step(self.small, ctx, purpose=Purpose.DRAFT)
        self._fill()
        spec.scoring = True
        query = ScoreQuery(ctx.problem, ctx.messages, (*ctx.steps, spec.drafted.text))
        spec.verdict = await self.judge.score(query)
        return spec.drafted, spec.verdict

    async def _best_of_drafts(self, spec: Speculation) -> tuple[Reply, ScoredSteps]:
        """The best-rated of the small model's candidates (the first of equals), with the verdict of
        every candidate's judging in its costs."""
        ctx = spec.ctx
        spec.drafted = await generate_step(self.small, ctx, purpose=Purpose.DRAFT, n=self.drafts)
        spec.scoring = True
        candidates = spec.drafted.candidates()
        async with asyncio.TaskGroup() as group:
            asked = [
                group.create_task(self.judge.score(ScoreQuery(ctx.problem, ctx.messages, (*ctx.steps, c.text))))
                for c in candidates
            ]
        verdicts = [task.result() for task in asked]
        spec.draft_values = [self.judge.value(verdict) for verdict in verdicts]
        best = max(range(len(candidates)), key=lambda i: (spec.draft_values[i], -i))
        spec.verdict = dataclasses.replace(verdicts[best], costs=[c for v in verdicts for c in v.costs])
        return candidates[best], spec.verdict

    def _fill(self) -> None:
        """Draft on top of the last speculation while there is room ahead and its draft is written
        and does not end thinking (then the loop asks for no next step)."""
        while self._queue and len(self._queue) <= self.depth:
            last = self._queue[-1]
            if last.drafted is None:
                return
            ctx, drafted = last.ctx, last.drafted
            text, tokens = without_stray_think_close(drafted.text), drafted.tokens
            ending = drafted.step_ending(ctx.config.step_delimiter)
            if thinking_ending((*ctx.steps, text), ctx.thinking_tokens + tokens, ending, ctx.config):
                return
            self._start(next_context(ctx, text, tokens))

    def _cost(self, spec: Speculation) -> list[RequestCost]:
        """What a speculation had cost, thrown away: its draft and score when written, an entry
        with no known tokens for the one in flight (the client returns nothing of a cancelled request)."""
        if spec.drafted is None:
            return [self.small.cancelled(Purpose.DRAFT)]
        cost = thrown_away([spec.drafted.cost])
        if spec.verdict is not None:
            return cost + thrown_away(spec.verdict.costs)
        return cost + [self.judge.cancelled()] if spec.scoring else cost
