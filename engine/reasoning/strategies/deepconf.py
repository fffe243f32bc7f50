"""DeepConf (Fu et al., 2025, "Deep Think with Confidence"): vote over the most confident traces, and
online, stop weak traces early and stop sampling once the confident ones agree.

Offline: `--deepconf_traces` N tracks; each trace's confidence by `--deepconf_measure` (from its
tokens' top-k logprobs, `engine.reasoning.confidence`, or with `--deepconf_token logprob` from the
sampled tokens' own logprobs); the top `--deepconf_keep` percent (DeepConf's
10 and 90) vote, each weighted by its confidence. Online (`--deepconf_online`): `--deepconf_warmup`
tracks run to the end; the stopping threshold is the (100 - keep)-th percentile of their lowest
group confidences (DeepConf's rule: keep 10% stops at the 90th percentile); later tracks,
`--deepconf_in_flight` at a time, stop after any step whose current group confidence falls under it
("stopped": no answer, tokens counted), and sampling ends once the confidence-weighted share of the
leading answer reaches `--deepconf_consensus` or the N tracks are spent. Online checks run after
each step: give the single-model policies `--stepwise` (one request is checked only at its end).

`details` records the measure's confidence of every finished trace, the threshold, and which
tracks were the warm-up, kept, stopped or skipped; `evaluators.deepconf` replays every measure and
keep percent at every budget from the tokens' confidences on the steps.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import structlog

from engine.errors import UsageError
from engine.reasoning.aggregate import decide
from engine.reasoning.confidence import (
    MEASURES,
    TOKEN_SCORES,
    current_group,
    keep_most_confident,
    percentile,
    trace_confidence,
    trace_tokens,
    vote_weight,
)
from engine.reasoning.settings import Settings, setting
from engine.reasoning.strategies.base import SolveContext, StrategySpec
from engine.reasoning.strategies.track_group import plan_tracks, run_tracks
from engine.records import STOPPED_EARLY, FinishReason, ProblemRecord, Role, TrackRecord

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class DeepConfSettings(Settings):
    deepconf_traces: int = setting(16, "DeepConf: traces per problem (the budget N)")
    deepconf_keep: float = setting(10.0, "DeepConf: percent of traces kept by confidence (the paper's 10 and 90)")
    deepconf_measure: str = setting("bottom10", "DeepConf: how a trace's confidence is measured", MEASURES)
    deepconf_token: str = setting(
        "confidence",
        "DeepConf: the per-token value measured: confidence (minus the mean top-k logprob, the paper's) "
        "or logprob (the sampled token's own, spectra's)",
        TOKEN_SCORES,
    )
    deepconf_window: int = setting(2048, "DeepConf: tokens of a confidence group (sliding window) and of the tail")
    deepconf_top_logprobs: int = setting(20, "DeepConf: top-k logprobs a token's confidence is read from")
    deepconf_online: bool = setting(False, "DeepConf online: warm-up, then stop weak traces and stop at consensus")
    deepconf_warmup: int = setting(16, "DeepConf online: traces that set the stopping threshold")
    deepconf_consensus: float = setting(
        0.95, "DeepConf online: stop sampling once the leader holds this weighted share"
    )
    deepconf_in_flight: int = setting(4, "DeepConf online: traces after the warm-up running at a time")

    def validate(self) -> None:
        for name, value in (
            ("--deepconf_traces", self.deepconf_traces),
            ("--deepconf_window", self.deepconf_window),
            ("--deepconf_top_logprobs", self.deepconf_top_logprobs),
            ("--deepconf_in_flight", self.deepconf_in_flight),
        ):
            if value < 1:
                raise UsageError(f"{name} must be at least 1, not {value}")
        if not 0 < self.deepconf_keep <= 100:
            raise UsageError(f"--deepconf_keep must be in (0, 100], not {self.deepconf_keep}")
        if self.deepconf_online and not 1 <= self.deepconf_warmup <= self.deepconf_traces:
            raise UsageError(f"--deepconf_warmup must be between 1 and --deepconf_traces, not {self.deepconf_warmup}")
        if not 0.5 < self.deepconf_consensus <= 1:
            raise UsageError(f"--deepconf_consensus must be in (0.5, 1], not {self.deepconf_consensus}")


def confidences(tracks: list[TrackRecord], settings: DeepConfSettings) -> dict[int, float]:
    """Each answered trace's confidence under the run's measure."""
    found = {}
    for track in tracks:
        if track.finish_reason in STOPPED_EARLY or track.finish_reason == FinishReason.FAILED:
            continue
        tokens = trace_tokens(track, settings.deepconf_token)
        value = trace_confidence(tokens, settings.deepconf_measure, settings.deepconf_window)
        if value is not None:
            found[track.track_id] = value
    return found


def weighted_vote(tracks: list[TrackRecord], measured: dict[int, float], token_score: str, *, multiple_choice: bool):
    """The answer of the measured traces given, each counted with its confidence as weight."""
    weights = {i: vote_weight(value, token_score) for i, value in measured.items()}
    return decide(tracks, "majority", multiple_choice=multiple_choice, weights=weights)


async def solve(ctx: SolveContext[DeepConfSettings]) -> ProblemRecord:
    settings = ctx.settings
    setups = plan_tracks(
        settings.deepconf_traces,
        ctx.prompts,
        policy=ctx.policy,
        base_seed=ctx.reasoning.seed,
        problem_id=ctx.problem.id,
        repeat_id=ctx.repeat_id,
        token_logprobs=settings.deepconf_top_logprobs,
    )
    choices = bool(ctx.problem.choices)
    if not settings.deepconf_online:
        group = await run_tracks(ctx, setups)
        tracks, threshold, warmup, stopped = group.tracks, None, [], []
        measured = confidences(tracks, settings)
        kept = keep_most_confident(measured, settings.deepconf_keep) if measured else []
    else:
        tracks, threshold, warmup, stopped, measured, kept = await _online(ctx, setups, settings, choices)
    decision = await asyncio.to_thread(
        weighted_vote, tracks, {i: measured[i] for i in kept}, settings.deepconf_token, multiple_choice=choices
    )
    skipped = [t.track_id for t in tracks if t.finish_reason in (FinishReason.SKIPPED, FinishReason.CANCELLED)]
    record = ctx.record(
        tracks=tracks,
        answer=decision.answer,
        aggregation="deepconf",
        votes=decision.votes,
        early_stopped=bool(stopped or skipped),
        cancelled_tracks=sorted(skipped + stopped),
        details={
            "measure": settings.deepconf_measure,
            "token_score": settings.deepconf_token,
            "confidence": {str(i): round(c, 4) for i, c in sorted(measured.items())},
            "kept": sorted(kept),
            "threshold": threshold,
            "warmup": warmup,
            "stopped": stopped,
            "skipped": skipped,
        },
    )
    log.info("problem_done", answer=record.answer, votes=record.votes, kept=kept, stopped=stopped, skipped=skipped)
    return record


async def _online(ctx: SolveContext[DeepConfSettings], setups, settings: DeepConfSettings, choices: bool):
    """Warm-up, threshold, then the remaining traces with online pruning and consensus stop."""
    warm = await run_tracks(ctx, setups[: settings.deepconf_warmup])
    warm_conf = {
        t.track_id: c
        for t in warm.tracks
        if (c := trace_confidence(trace_tokens(t, settings.deepconf_token), "lowest", settings.deepconf_window))
        is not None
    }
    threshold = percentile(list(warm_conf.values()), 100 - settings.deepconf_keep) if warm_conf else None
    warmup = [s.track_id for s in setups[: settings.deepconf_warmup]]
    # The warm-up's traces at or above the threshold vote; later traces vote unless stopped.
    admitted = {i for i, c in warm_conf.items() if threshold is None or c >= threshold}
    tracks = list(warm.tracks)

    def too_weak(record: TrackRecord) -> bool:
        group = current_group(trace_tokens(record, settings.deepconf_token), settings.deepconf_window)
        return threshold is not None and group is not None and group < threshold

    async def consensus(finished: list[TrackRecord], open_tracks: int) -> bool:
        answered = [
            t for t in [*tracks, *finished] if t.finish_reason not in (FinishReason.STOPPED, FinishReason.FAILED)
        ]
        measured = confidences(answered, settings)
        weights = {i: c for i, c in measured.items() if i in admitted or i not in warmup}
        if not weights:
            return False
        decision = weighted_vote(answered, weights, settings.deepconf_token, multiple_choice=choices)
        total = sum(decision.votes.values())
        return bool(total) and max(decision.votes.values()) / total >= settings.deepconf_consensus

    rest = setups[settings.deepconf_warmup :]
    if rest and not await consensus([], len(rest)):
        later = await run_tracks(
            ctx, rest, in_flight=settings.deepconf_in_flight, on_finish=consensus, stop_after=too_weak
        )
        tracks += later.tracks
    else:
        for setup in rest:  # settled by the warm-up alone: the rest never start
            skipped = FinishReason.SKIPPED
            record = TrackRecord(track_id=setup.track_id, policy=setup.policy, seed=setup.seed, finish_reason=skipped)
            tracks.append(record)
    stopped = [t.track_id for t in tracks if t.finish_reason == FinishReason.STOPPED]
    measured = confidences(tracks, settings)
    kept = sorted(i for i in measured if i in admitted or i not in warmup)
    return tracks, threshold, warmup, stopped, measured, kept


DEEPCONF = StrategySpec(
    name="deepconf",
    description="DeepConf: N traces with token confidence; the most confident vote, weighted; online: warm-up "
    "threshold, weak traces stopped, sampling stopped at consensus",
    settings=DeepConfSettings,
    templates=(),
    roles=(Role.BIG, Role.SMALL),
    needed_roles=lambda settings: (),
    solve=solve,
    needs_token_logprobs=lambda settings: True,
)
