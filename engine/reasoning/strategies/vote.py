"""SpecLRM: several tracks per problem (plain, role-prompted, or following methods a selector
picked), run concurrently, voted on, and cut short once the vote is settled (early stop).

spectra's additions, after Adaptive-Consistency (Aggarwal et al. 2023) and ESC (Li et al. 2024):
`--tracks_in_flight K` runs at most K tracks of a problem at a time, starting the next in track
order as one finishes, so that early stop can skip tracks that never started (tracks of one
problem otherwise finish together, leaving little to cancel); `--early_stop_confidence C` also
stops once the leader is ahead with probability C under the Beta rule (`leader_confidence`).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from functools import partial

import structlog

from engine.data.prompts import PromptSet
from engine.errors import UsageError
from engine.reasoning.aggregate import AGGREGATIONS, decide, outcome_settled
from engine.reasoning.method_selection import MethodChoice, select_methods
from engine.reasoning.settings import Settings, setting
from engine.reasoning.strategies.base import SolveContext, StrategySpec
from engine.reasoning.strategies.track_group import plan_tracks, run_tracks
from engine.records import ProblemRecord, Role, TrackRecord

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class VoteSettings(Settings):
    tracks: int = setting(1, "reasoning tracks per problem")
    use_role_prompts: bool = setting(False, "give each track a role of the prompt set, round-robin")
    method_num: int = setting(0, "let the selector model pick this many methods of the prompt set for the tracks")
    selector_model: str = setting(Role.BIG, "the model that picks methods", (Role.BIG, Role.SMALL))
    aggregation: str = setting("majority", "how the tracks' answers are combined", tuple(AGGREGATIONS))
    early_stop: bool = setting(False, "cancel the remaining tracks once they cannot change the vote")
    early_stop_share: float | None = setting(None, "with --early_stop: stop once the leader holds this share")
    tracks_in_flight: int | None = setting(
        None, "spectra: run at most this many tracks of a problem at a time, the next starting as one finishes"
    )
    early_stop_confidence: float | None = setting(
        None, "spectra, with --early_stop: also stop once P(leader ahead | votes) reaches this (Beta rule)"
    )

    def validate(self) -> None:
        if self.tracks < 1:
            raise UsageError(f"--tracks must be at least 1, not {self.tracks}")
        if self.method_num < 0:
            raise UsageError(f"--method_num must be 0 or more, not {self.method_num}")
        if self.early_stop_share is not None and not 0.5 < self.early_stop_share <= 1:
            raise UsageError(f"--early_stop_share must be in (0.5, 1], not {self.early_stop_share}")
        if self.tracks_in_flight is not None and self.tracks_in_flight < 1:
            raise UsageError(f"--tracks_in_flight must be at least 1, not {self.tracks_in_flight}")
        self._check_confidence()

    def _check_confidence(self) -> None:
        if self.early_stop_confidence is None:
            return
        if not self.early_stop:
            raise UsageError("--early_stop_confidence needs --early_stop: add it, or drop --early_stop_confidence")
        if not 0.5 < self.early_stop_confidence < 1:
            raise UsageError(f"--early_stop_confidence must be in (0.5, 1), not {self.early_stop_confidence}")


def total_tokens(track: TrackRecord) -> int:
    return sum(u.completion_tokens for u in track.usage.values())


async def solve(ctx: SolveContext[VoteSettings]) -> ProblemRecord:
    """Select methods if asked, run the problem's tracks, vote, and build its record."""
    settings, problem = ctx.settings, ctx.problem
    choice: MethodChoice | None = None
    if settings.method_num > 0:
        selector = ctx.models[settings.selector_model]
        choice = await select_methods(problem, ctx.prompts, selector, settings.method_num)
    setups = plan_tracks(
        settings.tracks,
        ctx.prompts,
        policy=ctx.policy,
        base_seed=ctx.reasoning.seed,
        problem_id=problem.id,
        repeat_id=ctx.repeat_id,
        use_role_prompts=settings.use_role_prompts,
        methods=choice.methods if choice else None,
    )
    on_finish = partial(_settled, ctx) if settings.early_stop else None
    group = await run_tracks(ctx, setups, in_flight=settings.tracks_in_flight, on_finish=on_finish)
    tracks, cancelled = group.tracks, group.stopped
    multiple_choice = bool(problem.choices)
    decision = await asyncio.to_thread(decide, tracks, settings.aggregation, multiple_choice=multiple_choice)
    record = ctx.record(
        tracks=tracks,
        answer=decision.answer,
        aggregation=settings.aggregation,
        votes=decision.votes,
        early_stopped=bool(cancelled),
        cancelled_tracks=cancelled,
        tokens_saved=_tokens_saved(tracks, cancelled),
        method_selection=choice.to_dict() if choice else None,
        costs=choice.costs if choice else [],
    )
    log.info(
        "problem_done",
        answer=record.answer,
        votes=record.votes,
        seconds=round(record.latency_s, 2),
        cancelled=cancelled,
    )
    return record


async def _settled(ctx: SolveContext[VoteSettings], finished: list[TrackRecord], open_tracks: int) -> bool:
    """Whether early stop may end the problem now; `open_tracks` are those running or not started."""
    settings = ctx.settings
    return await asyncio.to_thread(
        outcome_settled,
        finished,
        open_tracks,
        settings.aggregation,
        multiple_choice=bool(ctx.problem.choices),
        share=settings.early_stop_share,
        confidence=settings.early_stop_confidence,
    )


def _tokens_saved(tracks: list[TrackRecord], cancelled: list[int]) -> int:
    """Estimate: each cancelled or skipped track would have spent as many tokens as the finished
    ones did on average; what it saved is that mean less what it had already spent."""
    done = [total_tokens(t) for t in tracks if t.track_id not in cancelled]
    if not cancelled or not done:
        return 0
    mean = sum(done) / len(done)
    return int(sum(max(0.0, mean - total_tokens(t)) for t in tracks if t.track_id in cancelled))


def _roles(settings: VoteSettings) -> tuple[str, ...]:
    return (settings.selector_model,) if settings.method_num > 0 else ()


def _check_prompts(settings: VoteSettings, prompts: PromptSet) -> None:
    if settings.use_role_prompts:
        prompts.require_roles()
    if settings.method_num > 0:
        prompts.require_methods()


VOTE = StrategySpec(
    name="vote",
    description="SpecLRM: tracks run concurrently, their answers are voted on, with early stop",
    settings=VoteSettings,
    templates=("select_methods", "select_methods_prefix"),
    roles=(Role.BIG, Role.SMALL),
    needed_roles=_roles,
    solve=solve,
    check_prompts=_check_prompts,
)
