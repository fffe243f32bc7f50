"""DeepConf (Fu et al., 2025, "Deep Think with Confidence"): vote over the most confident traces, and
online, stop weak traces early.

Offline: `--deepconf_traces` N tracks (DeepConf's example: 512); each answered trace's confidence by
`--deepconf_measure` (from its tokens' top-k logprobs, `engine.reasoning.confidence`, or with
`--deepconf_token logprob` from the sampled tokens' own logprobs); the traces at or above the
(100 - `--deepconf_keep`)-th percentile of those confidences (DeepConf's 10 and 90) vote, each
weighted by its confidence. Unanswered traces are neither ranked nor kept, as DeepConf filters its
traces to those with an answer first.

Online (`--deepconf_online`, DeepConf's example: 256 traces, 16 of warm-up): `--deepconf_warmup`
tracks run to the end; the stopping threshold is the (100 - keep)-th percentile of their lowest group
confidences (keep 10% stops at the 90th percentile); later tracks, `--deepconf_in_flight` at a time,
stop after a step once one of their full windows of `--deepconf_window` tokens falls under it
("stopped": no answer, tokens counted; DeepConf's logits processor stops at that token, and never
before a full window). Every answered trace whose lowest group is at or above the threshold votes,
weighted by it: the warm-up's, and the later ones not stopped (DeepConf's `_perform_basic_voting`).
Checks run after each step, so a one-request policy is refused (`writes_one_request`).
`--deepconf_consensus` is spectra's: stop sampling once the leader holds that weighted share.

`details` records the confidence of every answered trace, the threshold, and which tracks were the
warm-up, kept, stopped or skipped; `evaluators.deepconf` replays every measure and keep percent at
every budget from the tokens' confidences on the steps.
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
    group_confidences,
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


# DeepConf's examples: example_offline.py's --budget, example_online.py's --total_budget.
OFFLINE_TRACES, ONLINE_TRACES = 512, 256


@dataclass(frozen=True)
class DeepConfSettings(Settings):
    deepconf_traces: int | None = setting(
        None, "DeepConf: traces per problem, the budget N (default: its examples' 512 offline, 256 online)"
    )
    deepconf_keep: float = setting(10.0, "DeepConf: percent of traces kept by confidence (the paper's 10 and 90)")
    deepconf_measure: str = setting(
        "bottom10", "DeepConf offline: how a trace's confidence is measured (online: its lowest group)", MEASURES
    )
    deepconf_token: str = setting(
        "confidence",
        "DeepConf: the per-token value measured: confidence (minus the mean top-k logprob, the paper's) "
        "or logprob (the sampled token's own, spectra's)",
        TOKEN_SCORES,
    )
    deepconf_window: int = setting(2048, "DeepConf: tokens of a confidence group (sliding window) and of the tail")
    deepconf_top_logprobs: int = setting(20, "DeepConf: top-k logprobs a token's confidence is read from")
    deepconf_online: bool = setting(
        False, "DeepConf online: warm-up, then stop traces whose confidence falls under the warm-up's threshold"
    )
    deepconf_warmup: int = setting(16, "DeepConf online: traces that set the stopping threshold")
    deepconf_consensus: float | None = setting(
        None, "spectra, with --deepconf_online: stop sampling once the leader holds this weighted share (default off)"
    )
    deepconf_in_flight: int = setting(4, "DeepConf online: traces after the warm-up running at a time")

    @property
    def traces(self) -> int:
        """The budget: `--deepconf_traces`, or DeepConf's example's for the mode."""
        if self.deepconf_traces is not None:
            return self.deepconf_traces
        return ONLINE_TRACES if self.deepconf_online else OFFLINE_TRACES

    def validate(self) -> None:
        for name, value in (
            ("--deepconf_traces", self.traces),
            ("--deepconf_window", self.deepconf_window),
            ("--deepconf_top_logprobs", self.deepconf_top_logprobs),
            ("--deepconf_in_flight", self.deepconf_in_flight),
        ):
            if value < 1:
                raise UsageError(f"{name} must be at least 1, not {value}")
        if not 0 < self.deepconf_keep <= 100:
            raise UsageError(f"--deepconf_keep must be in (0, 100], not {self.deepconf_keep}")
        if self.deepconf_online and not 1 <= self.deepconf_warmup < self.traces:
            raise UsageError(
                f"--deepconf_warmup must be at least 1 and under the {self.traces} traces (--deepconf_traces), "
                f"not {self.deepconf_warmup}: online mode stops only traces after the warm-up"
            )
        if self.deepconf_consensus is None:
            return
        if not self.deepconf_online:
            raise UsageError("--deepconf_consensus stops online sampling: add --deepconf_online, or drop it")
        if not 0.5 < self.deepconf_consensus <= 1:
            raise UsageError(f"--deepconf_consensus must be in (0.5, 1], not {self.deepconf_consensus}")


def confidences(tracks: list[TrackRecord], settings: DeepConfSettings, measure: str | None = None) -> dict[int, float]:
    """Each answered trace's confidence under `measure` (default the run's); traces without an answer
    are left out, as DeepConf keeps only traces with an extracted answer."""
    found = {}
    for track in tracks:
        if track.answer is None or track.finish_reason in STOPPED_EARLY or track.finish_reason == FinishReason.FAILED:
            continue
        tokens = trace_tokens(track, settings.deepconf_token)
        value = trace_confidence(tokens, measure or settings.deepconf_measure, settings.deepconf_window)
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
        settings.traces,
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
            "measure": ONLINE_MEASURE if settings.deepconf_online else settings.deepconf_measure,
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


# DeepConf's online mode ranks, admits and weighs every trace by its lowest group (`min_conf`).
ONLINE_MEASURE = "lowest"


async def _online(ctx: SolveContext[DeepConfSettings], setups, settings: DeepConfSettings, choices: bool):
    """Warm-up, threshold, then the remaining traces with online pruning (and spectra's consensus stop)."""
    warm = await run_tracks(ctx, setups[: settings.deepconf_warmup])
    window, token_score = settings.deepconf_window, settings.deepconf_token
    lowest = [trace_confidence(trace_tokens(t, token_score), ONLINE_MEASURE, window) for t in warm.tracks]
    found = [c for c in lowest if c is not None]
    threshold = percentile(found, 100 - settings.deepconf_keep) if found else None
    warmup = [s.track_id for s in setups[: settings.deepconf_warmup]]
    tracks = list(warm.tracks)

    def voting(done: list[TrackRecord]) -> dict[int, float]:
        """The answered traces at or above the threshold, by their lowest group."""
        measured = confidences(done, settings, ONLINE_MEASURE)
        return {i: c for i, c in measured.items() if threshold is None or c >= threshold}

    def too_weak(record: TrackRecord) -> bool:
        # DeepConf's processor stops at the first token whose full window falls under the bar, never
        # before a full window: after a step, any full window under it would have stopped the trace.
        tokens = trace_tokens(record, token_score)
        return threshold is not None and len(tokens) >= window and min(group_confidences(tokens, window)) < threshold

    async def consensus(finished: list[TrackRecord], open_tracks: int) -> bool:
        weights = voting([*tracks, *finished])
        if not weights:
            return False
        decision = weighted_vote([*tracks, *finished], weights, token_score, multiple_choice=choices)
        total = sum(decision.votes.values())
        return bool(total) and max(decision.votes.values()) / total >= settings.deepconf_consensus

    on_finish = consensus if settings.deepconf_consensus is not None else None
    rest = setups[settings.deepconf_warmup :]
    if on_finish is None or not await consensus([], len(rest)):
        later = await run_tracks(
            ctx, rest, in_flight=settings.deepconf_in_flight, on_finish=on_finish, stop_after=too_weak
        )
        tracks += later.tracks
    else:
        for setup in rest:  # settled by the warm-up alone: the rest never start
            skipped = FinishReason.SKIPPED
            record = TrackRecord(track_id=setup.track_id, policy=setup.policy, seed=setup.seed, finish_reason=skipped)
            tracks.append(record)
    stopped = [t.track_id for t in tracks if t.finish_reason == FinishReason.STOPPED]
    measured = confidences(tracks, settings, ONLINE_MEASURE)
    return tracks, threshold, warmup, stopped, measured, sorted(voting(tracks))


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
    checks_between_steps=lambda settings: settings.deepconf_online,
)
