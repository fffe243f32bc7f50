"""Lookahead Reasoning (Fu et al., 2025), as hao-ai-lab/LookaheadReasoning runs it (`src/lr.py`,
`src/lr_tree.py`).

The small model drafts steps ahead of the last step kept, each on the draft before it, at most
`--lookahead_steps` K drafts ahead (the reference's `--max_depth`, 4). The big model writes its own
step at every position as soon as the position's prefix is known, so it also writes the step after
the last draft: K drafts and K + 1 big steps in flight. The window rolls: as each draft is kept, the
small model drafts one position further (the reference allocates a node's children as the root
advances), so drafting never drains. A position is verified as soon as its draft and its big step
are both written, and positions are decided in order: drafts are kept up to the first one the check
below rejects, which the big model's step replaces; every position after it is cancelled (vLLM aborts
the requests) and drafting starts again after the replacing step, beside the big model's next step.

The check of a draft, the reference's `text_accept`: a draft whose prefix did not end at a step
boundary (the first step, whose prefix ends with the template's generation prompt; a step after one
that stopped at `--max_step_tokens` or at the end of a sequence) is rejected unjudged, its
`ignore_half_sentence` (`--judge_half_sentences`, spectra's, checks it like any other); a draft
equal to the big model's step once spaces and newlines are removed, case ignored, is kept at no
cost; otherwise the verifier rules (`--verifier`, the pair judges of `engine.reasoning.judges`):
`judge`, the reference's judge model shown only the two steps; `big_rating` or `embedding`,
spectra's; `exact`, the free check alone. Each step's `detail` says what ruled (`kept_by` or
`rejected_by`: `half_sentence`, `exact` or the verifier), and the judge's token (`judge_said`).

Each step keeps what it cost (`usage`) apart from the work thrown away (`wasted`: the big model's
version of a kept draft, a replaced draft, and the positions cancelled after it); what is still in
flight when the track ends is the track's waste.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections import deque
from dataclasses import dataclass, field

from engine.data.prompts import PromptSet
from engine.errors import UsageError
from engine.reasoning.judges import PAIR_JUDGES, ruled
from engine.reasoning.judges.aligned import same_text
from engine.reasoning.judges.base import PairJudge, PairVerdict, StepPair
from engine.reasoning.judges.specreason import MAX_JUDGE_SCORE
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
from engine.serving.models import Model, Purpose, Reply

# The free check alone, or a pair judge after it.
VERIFIERS = (*PAIR_JUDGES, "exact")
# vLLM flags that serve a causal LM as an embedding model (its pooled last hidden state).
EMBEDDER_SERVER_ARGS = ("--runner", "pooling", "--convert", "embed")
# The reference's steps: at most 100 tokens each, the draft's and the big model's (`step_tokens`).
REFERENCE_STEP_TOKENS = 100
# Why a draft was rejected before any verifier: its prefix did not end at a step boundary.
HALF_SENTENCE = "half_sentence"
# What ruled on a draft the free check decided.
EXACT = "exact"


@dataclass(frozen=True)
class LookaheadSettings(Settings):
    lookahead_steps: int = setting(
        4,
        "Lookahead Reasoning: how many steps the small model drafts ahead of the last kept step (its --max_depth); "
        "its steps are 100 tokens (--max_step_tokens, 100 under this policy)",
    )
    verifier: str = setting(
        "judge",
        "what rules on a draft the free check (equal text, spaces, newlines and case aside) does not keep: judge "
        "(Lookahead Reasoning's: a judge model, --judge_model, shown the two steps), big_rating (the big model's "
        "0-9 in context), embedding (--embedder_model's cosine), exact (the free check alone)",
        VERIFIERS,
    )
    equivalence_threshold: float = setting(
        7.0, "with --verifier big_rating: the big model's 0-9 equivalence rating a draft needs to be kept"
    )
    embedding_threshold: float = setting(
        0.9, "with --verifier embedding: the cosine similarity of the two steps' embeddings a draft needs"
    )
    judge_half_sentences: bool = setting(
        False,
        "spectra: check a draft whose prefix did not end at a step boundary (the first step, a step after one "
        "cut at --max_step_tokens) like any other; the reference rejects it unjudged",
    )

    def validate(self) -> None:
        if self.lookahead_steps < 1:
            raise UsageError(f"--lookahead_steps must be at least 1, not {self.lookahead_steps}")
        if not 0 <= self.equivalence_threshold <= MAX_JUDGE_SCORE:
            raise UsageError(f"--equivalence_threshold must be between 0 and 9, not {self.equivalence_threshold}")
        if not -1 <= self.embedding_threshold <= 1:
            raise UsageError(f"--embedding_threshold must be between -1 and 1, not {self.embedding_threshold}")

    def idle_flags(self) -> dict[str, str]:
        bars = {spec.threshold_flag: name for name, spec in PAIR_JUDGES.items() if spec.threshold_flag}
        return {
            flag: f"--verifier {self.verifier} rules, and it is the bar of --verifier {owner}; add --verifier {owner}"
            for flag, owner in bars.items()
            if owner != self.verifier
        }


@dataclass(frozen=True)
class Ruling:
    """What was decided at a position: whether the draft is kept, what ruled (`HALF_SENTENCE`,
    `EXACT` or the verifier's name), and the verifier's verdict when it was asked."""

    same: bool
    by: str
    verdict: PairVerdict | None = None


@dataclass
class Position:
    """One position of the window: its context, whether its prefix ends at a step boundary, its place
    (the drafting run, `round`, a new one after each replaced draft; its `depth` in that run), the
    big model's step and the draft (tasks started with the position; the draft waits for its turn,
    `may_draft`) and the ruling on them (a task that waits for both)."""

    ctx: StepContext
    after_step: bool
    round: int
    depth: int
    big: asyncio.Task[Reply] | None = None
    draft: asyncio.Task[Reply] | None = None
    ruling: asyncio.Task[Ruling] | None = None
    may_draft: asyncio.Event = field(default_factory=asyncio.Event)
    writing: bool = False  # the big model's request was sent
    drafting: bool = False  # the draft's request was sent
    judging: bool = False  # the verifier's requests are in flight
    followed: bool = False  # the position after it was opened (or none will be)
    dropped: bool = False  # cancelled with the window


@dataclass
class LookaheadPolicy:
    settings: LookaheadSettings
    small: Model
    big: Model
    judge: PairJudge | None
    window: deque[Position] = field(default_factory=deque)
    rounds: int = 0
    last_ending: StepEnding | None = None  # how the last step handed to the track ended

    async def step(self, ctx: StepContext) -> StepResult:
        started = time.monotonic()
        if not self.window:
            self._start_round(ctx)
        head = self.window[0]
        if head.ctx != ctx:
            raise RuntimeError(f"lookahead: step {ctx.index} asked in a context the window did not draft")
        ruling = await head.ruling  # a draft or big step that failed for good raises here: the track fails
        if ruling.same:
            self._follow(head)
        self.window.popleft()
        draft, mine = head.draft.result(), head.big.result()
        step = self._decided(head, ruling, draft, mine, started)
        if ruling.same:
            self._let_draft()
        else:
            step.charge(self._cancel_window())
        self.last_ending = step.ending
        return StepResult(step, step.ending)

    def close(self) -> list[RequestCost]:
        """The track ended: what is still drafted or written ahead is cancelled, its cost wasted."""
        return self._cancel_window()

    def _start_round(self, ctx: StepContext) -> None:
        """Open the first position of a round at `ctx`; its prefix ends at a step boundary when the
        step before it ended at the delimiter (none does before the first step)."""
        self.rounds += 1
        self._open(ctx, self.last_ending == StepEnding.DELIMITER, depth=0)

    def _open(self, ctx: StepContext, after_step: bool, *, depth: int) -> None:
        """A new position at the end of the window: the big model's step starts at once, the draft
        when fewer than K drafts are ahead of it, the ruling once both are written; the position
        after it opens as soon as its draft is written."""
        position = Position(ctx, after_step, self.rounds, depth)
        position.big = asyncio.create_task(self._write(position))
        position.draft = asyncio.create_task(self._draft(position))
        position.draft.add_done_callback(lambda _: self._follow(position))
        position.ruling = asyncio.create_task(self._rule(position))
        self.window.append(position)
        self._let_draft()

    def _let_draft(self) -> None:
        """The first K positions of the window may draft (the head's is the next step's)."""
        for position in itertools.islice(self.window, self.settings.lookahead_steps):
            position.may_draft.set()

    async def _write(self, position: Position) -> Reply:
        position.writing = True
        return await generate_step(self.big, position.ctx, purpose=Purpose.REWRITE)

    async def _draft(self, position: Position) -> Reply:
        await position.may_draft.wait()
        position.drafting = True
        return await generate_step(self.small, position.ctx, purpose=Purpose.DRAFT)

    def _follow(self, position: Position) -> None:
        """Open the position after `position`, on top of its written draft, once: when the draft is
        written, or (if that callback has not run yet) when `position` is decided. None follows a
        draft that ends thinking, failed or was cancelled (a failure is raised by its own step)."""
        draft = position.draft
        if position.followed or position.dropped or not draft.done() or draft.cancelled() or draft.exception():
            return
        position.followed = True
        reply, ctx = draft.result(), position.ctx
        text, ending = without_stray_think_close(reply.text), reply.step_ending(ctx.config.step_delimiter)
        if not thinking_ending((*ctx.steps, text), ctx.thinking_tokens + reply.tokens, ending, ctx.config):
            after = next_context(ctx, text, reply.tokens)
            self._open(after, ending == StepEnding.DELIMITER, depth=position.depth + 1)

    async def _rule(self, position: Position) -> Ruling:
        """The reference's check of the position's draft against the big model's step."""
        mine, draft = await position.big, await position.draft
        if not (position.after_step or self.settings.judge_half_sentences):
            return Ruling(False, HALF_SENTENCE)
        step_text, draft_text = without_stray_think_close(mine.text), without_stray_think_close(draft.text)
        if same_text(draft_text, step_text):
            return Ruling(True, EXACT)
        if self.judge is None:
            return Ruling(False, EXACT)
        ctx = position.ctx
        position.judging = True
        verdict = await self.judge.compare(StepPair(ctx.problem, ctx.messages, ctx.reasoning, step_text, draft_text))
        position.judging = False
        value = verdict.value if verdict.value is not None else float(verdict.same)
        verdict.costs = ruled(verdict.costs, self.judge.name, value)
        return Ruling(verdict.same, self.judge.name, verdict)

    def _decided(self, position: Position, ruling: Ruling, draft: Reply, mine: Reply, started: float) -> StepRecord:
        """The step kept at `position`: the draft, charged with the big model's step as waste, or the
        big model's step, charged with the draft as waste; both with the verifier's requests."""
        verdict = ruling.verdict
        verdict_costs = verdict.costs if verdict is not None else []
        scored = {}
        if verdict is not None and verdict.value is not None:
            scored["score"] = verdict.value
        if verdict is not None and verdict.distribution is not None:
            scored["score_distribution"] = verdict.distribution
        ctx, delimiter = position.ctx, position.ctx.config.step_delimiter
        if ruling.same:
            kept, writer, outcome, thrown = draft, Role.SMALL, StepOutcome.ACCEPTED, mine
        else:
            kept, writer, outcome, thrown = mine, Role.BIG, StepOutcome.REPLACED, draft
            scored["draft"] = without_stray_think_close(draft.text)
        costs = [kept.cost, *verdict_costs, *thrown_away([thrown.cost])]
        step = kept_step(kept, writer, ctx.index, costs, started, delimiter=delimiter, outcome=outcome, **scored)
        step.detail = {
            "round": position.round,
            "position": position.depth,
            "kept_by" if ruling.same else "rejected_by": ruling.by,
            **({"judge_said": verdict.said} if verdict is not None and verdict.said is not None else {}),
        }
        return step

    def _cancel_window(self) -> list[RequestCost]:
        """Cancel every position not decided; the entries of what they had cost, thrown away (a
        request cancelled in flight: one request with no known tokens)."""
        costs = []
        while self.window:
            position = self.window.popleft()
            position.dropped = True
            costs += _thrown(position.draft, self.small.cancelled(Purpose.DRAFT), sent=position.drafting)
            costs += _thrown(position.big, self.big.cancelled(Purpose.REWRITE), sent=position.writing)
            ruling = position.ruling
            if ruling.done() and not ruling.cancelled() and ruling.exception() is None:
                costs += thrown_away(ruling.result().verdict.costs if ruling.result().verdict else [])
            else:
                discard(ruling)
                costs += self.judge.cancelled() if position.judging else []
        return costs


def _thrown(task: asyncio.Task[Reply], cancelled: RequestCost, *, sent: bool) -> list[RequestCost]:
    """The entry of a request thrown away: its cost when it returned, else (cancelled now, or failed)
    one request with no known tokens, if it was sent (a position opened just before the window was
    cancelled may not have sent its requests yet)."""
    if task.done() and not task.cancelled() and task.exception() is None:
        return thrown_away([task.result().cost])
    discard(task)
    return [cancelled] if sent else []


def start(settings: LookaheadSettings, models: dict[str, Model], prompts: PromptSet, reasoning: ReasoningConfig):
    judge = PAIR_JUDGES.get(settings.verifier)
    bar = getattr(settings, judge.threshold_flag) if judge and judge.threshold_flag else None
    verifier = judge.build(models[judge.role], prompts, bar) if judge else None
    return LookaheadPolicy(settings, models[Role.SMALL], models[Role.BIG], verifier)


def _needed_roles(settings: LookaheadSettings) -> tuple[str, ...]:
    judge = PAIR_JUDGES.get(settings.verifier)
    return tuple(dict.fromkeys((Role.SMALL, Role.BIG, *((judge.role,) if judge else ()))))


LOOKAHEAD = PolicySpec(
    name="lookahead",
    description="Lookahead Reasoning: the small model drafts up to K steps ahead, the big model writes each "
    "position in parallel, drafts are kept up to the first the check rejects, which the big model's step replaces",
    roles=(Role.SMALL, Role.BIG, Role.JUDGE, Role.EMBEDDER),
    settings=LookaheadSettings,
    templates=("aligned", "aligned_prefix", "aligned_system", "equivalence", "equivalence_prefix"),
    # Every kept step is a draft or the big model's step, each asked with the track's logprobs.
    gives_token_logprobs=True,
    start=start,
    needed_roles=_needed_roles,
    track_defaults={"max_step_tokens": REFERENCE_STEP_TOKENS},
)
