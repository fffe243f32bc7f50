"""The tracks of one problem, for any strategy that runs several: planned (seeds, roles or
methods round-robin) and run concurrently, at most `in_flight` at a time, started in track order,
with a callback as each finishes that may stop the rest.

A stopped track that had started is cancelled (its requests are closed, so vLLM aborts them) and
recorded "cancelled"; one the window never started is recorded "skipped", with no tokens.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import structlog

from engine.data.prompts import PromptSet
from engine.logging import bind_context
from engine.reasoning.seeds import track_seed
from engine.reasoning.strategies.base import SolveContext
from engine.reasoning.track import TrackSetup, new_track_record
from engine.records import FinishReason, TrackRecord

log = structlog.get_logger(__name__)

# Called as each track finishes, with the finished tracks so far and how many are still running or
# not started; True stops those.
OnFinish = Callable[[list[TrackRecord], int], Awaitable[bool]]


def plan_tracks(
    count: int,
    prompts: PromptSet,
    *,
    policy: str,
    base_seed: int | None,
    problem_id: str,
    repeat_id: int,
    use_role_prompts: bool = False,
    methods: list[str] | None = None,
    token_logprobs: int | None = None,
) -> list[TrackSetup]:
    """`count` tracks of one problem, seeded by `engine.reasoning.seeds.track_seed`: methods
    round-robin when given, else the prompt set's roles round-robin with `use_role_prompts`, else
    plain tracks; `token_logprobs` asks every track's writer for the top-k logprobs of its tokens
    (`TrackSetup.token_logprobs`)."""
    roles = list(prompts.require_roles()) if use_role_prompts and not methods else []
    setups = []
    for track_id in range(count):
        role = roles[track_id % len(roles)] if roles else None
        method = methods[track_id % len(methods)] if methods else None
        instruction = prompts.methods[method].instruction if method else (prompts.roles[role] if role else None)
        setups.append(
            TrackSetup(
                track_id=track_id,
                policy=policy,
                role=role,
                method=method,
                instruction=instruction,
                seed=track_seed(base_seed, problem_id, repeat_id, track_id),
                token_logprobs=token_logprobs,
            )
        )
    return setups


@dataclass
class TrackGroupResult:
    """Every planned track's record, in track order, and the ids of those stopped early."""

    tracks: list[TrackRecord]
    stopped: list[int]


async def run_tracks(
    ctx: SolveContext,
    setups: list[TrackSetup],
    *,
    in_flight: int | None = None,
    on_finish: OnFinish | None = None,
    stop_after: Callable[[TrackRecord], bool] | None = None,
) -> TrackGroupResult:
    """Run the tracks of `setups` with the run's policy, at most `in_flight` at a time (None: all),
    each holding one of the run's track slots while it runs; `stop_after` (see `Track.run`) may end
    a track after any of its steps."""
    tracks = [new_track_record(s) for s in setups]
    window = asyncio.Semaphore(in_flight or len(setups) or 1)
    finished: list[TrackRecord] = []
    tasks: dict[int, asyncio.Task] = {}
    stopped: list[int] = []

    def stop() -> None:
        done = {t.track_id for t in finished}
        for record in tracks:
            if record.track_id in done:
                continue
            stopped.append(record.track_id)
            # Set here too: a task cancelled before its first step never runs its own handler.
            started = record.track_id in tasks
            record.finish_reason = FinishReason.CANCELLED if started else FinishReason.SKIPPED
            if started:
                tasks[record.track_id].cancel()
        skipped = [t.track_id for t in tracks if t.finish_reason == FinishReason.SKIPPED]
        log.info("tracks_stopped", cancelled=[i for i in stopped if i not in skipped], skipped=skipped)

    async def one(setup: TrackSetup, record: TrackRecord) -> None:
        # The window is released only after the callback, so no track starts that the finishing
        # one settles away.
        try:
            async with ctx.track_slots:
                with bind_context(track=setup.track_id):
                    await ctx.new_track(record, setup).run(stop_after)
            finished.append(record)
            open_tracks = len(tracks) - len(finished)
            if on_finish is not None and not stopped and open_tracks and await on_finish(list(finished), open_tracks):
                stop()
        finally:
            window.release()

    async with asyncio.TaskGroup() as group:
        for setup, record in zip(setups, tracks, strict=True):
            await window.acquire()
            if stopped:
                window.release()
                break
            tasks[setup.track_id] = group.create_task(one(setup, record))
    return TrackGroupResult(tracks, sorted(stopped))
