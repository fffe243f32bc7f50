"""Problems x tracks under limits, with early stop and cancellation.

Concurrency lives here and in the client only. Problems start in order, at most
`max_problems_in_flight` at a time; their tracks share one global limit of
`max_tracks_in_flight`; each model client bounds requests per endpoint. A problem's record is
handed to `on_record` as soon as the problem is done. When early stop is on, a problem's
remaining tracks are cancelled (and their server requests aborted) once they can no longer
change its answer.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from engine.aggregate import decide, outcome_settled
from engine.config import RunConfig
from engine.datasets import Problem
from engine.logging import bind_context
from engine.methods import MethodChoice, select_methods
from engine.policies import Model
from engine.prompts import PromptSet
from engine.results import ProblemRecord, TrackRecord, sum_usage
from engine.track import TrackSetup, new_track_record, run_track

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class WorkItem:
    problem: Problem
    repeat_id: int


def plan_tracks(config: RunConfig, prompts: PromptSet, repeat_id: int, methods: list[str] | None) -> list[TrackSetup]:
    """The tracks of one problem: methods round-robin when chosen, else roles round-robin with
    `--use_role_prompts`, else plain tracks. Seeds differ per track and repeat."""
    parallel, base_seed = config.parallel, config.reasoning.seed
    roles = list(prompts.require_roles()) if parallel.use_role_prompts and not methods else []
    setups = []
    for track_id in range(parallel.tracks):
        seed = None if base_seed is None else base_seed + 1000 * repeat_id + track_id
        role = roles[track_id % len(roles)] if roles else None
        method = methods[track_id % len(methods)] if methods else None
        instruction = prompts.methods[method].instruction if method else (prompts.roles[role] if role else None)
        setups.append(
            TrackSetup(
                track_id=track_id,
                mode=config.reasoning.mode,
                role=role,
                method=method,
                instruction=instruction,
                seed=seed,
            )
        )
    return setups


def total_tokens(track: TrackRecord) -> int:
    return sum(u.completion_tokens for u in track.usage.values())


class Scheduler:
    """Runs work items to problem records under the configured limits."""

    def __init__(
        self,
        config: RunConfig,
        models: dict[str, Model],
        prompts: PromptSet,
        *,
        run_id: str,
        dataset: str,
        on_record: Callable[[ProblemRecord], None],
    ):
        self.config = config
        self.models = models
        self.prompts = prompts
        self.run_id = run_id
        self.dataset = dataset
        self.on_record = on_record
        self.track_slots = asyncio.Semaphore(config.parallel.max_tracks_in_flight)
        self.problem_slots = asyncio.Semaphore(config.parallel.max_problems_in_flight)

    async def run(self, items: list[WorkItem]) -> None:
        """Solve every item; problems start in the order given."""
        async with asyncio.TaskGroup() as group:
            for item in items:
                await self.problem_slots.acquire()
                group.create_task(self._solve_and_release(item))

    async def _solve_and_release(self, item: WorkItem) -> None:
        try:
            with bind_context(run=self.run_id, problem=item.problem.id, repeat=item.repeat_id):
                record = await self.solve(item)
            self.on_record(record)
        finally:
            self.problem_slots.release()

    async def solve(self, item: WorkItem) -> ProblemRecord:
        """Select methods if asked, run the problem's tracks, vote, and build its record."""
        config, problem = self.config, item.problem
        started_wall, started = time.time(), time.monotonic()
        choice: MethodChoice | None = None
        if config.parallel.method_num > 0:
            choice = await select_methods(
                problem.problem, self.prompts, self.models[config.parallel.selector_model], config.parallel.method_num
            )
        setups = plan_tracks(config, self.prompts, item.repeat_id, choice.methods if choice else None)
        tracks = [new_track_record(s) for s in setups]
        cancelled = await self._run_tracks(setups, tracks, problem)
        multiple_choice = bool(problem.choices)
        decision = await asyncio.to_thread(decide, tracks, config.parallel.aggregation, multiple_choice=multiple_choice)
        record = ProblemRecord(
            run_id=self.run_id,
            dataset=self.dataset,
            problem_id=problem.id,
            repeat_id=item.repeat_id,
            mode=config.runner,
            problem=problem.problem,
            reference_answer=problem.answer,
            tracks=tracks,
            answer=decision.answer,
            aggregation=config.parallel.aggregation,
            votes=decision.votes,
            early_stopped=bool(cancelled),
            cancelled_tracks=cancelled,
            tokens_saved=_tokens_saved(tracks, cancelled),
            method_selection=choice.to_dict() if choice else None,
            usage=sum_usage([t.usage for t in tracks] + ([choice.usage] if choice else [])),
            latency_s=time.monotonic() - started,
            started_at=started_wall,
            finished_at=time.time(),
            config_digest=config.digest(),
            multiple_choice=multiple_choice,
        )
        log.info(
            "problem_done",
            answer=record.answer,
            votes=record.votes,
            seconds=round(record.latency_s, 2),
            cancelled=cancelled,
        )
        return record

    async def _run_tracks(self, setups: list[TrackSetup], tracks: list[TrackRecord], problem: Problem) -> list[int]:
        """Run the tracks concurrently; returns the ids of those cancelled by early stop."""
        parallel = self.config.parallel
        finished: list[TrackRecord] = []
        tasks: dict[int, asyncio.Task] = {}
        cancelled: list[int] = []

        async def one(setup: TrackSetup, record: TrackRecord) -> None:
            try:
                async with self.track_slots:
                    with bind_context(track=setup.track_id):
                        await run_track(record, setup, problem, self.models, self.prompts, self.config.reasoning)
            except asyncio.CancelledError:
                record.finish_reason = "cancelled"
                raise
            finished.append(record)
            if not parallel.early_stop or cancelled:
                return
            running = len(tracks) - len(finished)
            if running and await asyncio.to_thread(
                outcome_settled,
                list(finished),
                running,
                parallel.aggregation,
                multiple_choice=bool(problem.choices),
                share=parallel.early_stop_share,
            ):
                done_ids = {t.track_id for t in finished}
                for track_id, task in tasks.items():
                    if track_id not in done_ids and track_id not in cancelled:
                        cancelled.append(track_id)
                        task.cancel()
                log.info("early_stop", cancelled=cancelled)

        async with asyncio.TaskGroup() as group:
            for setup, record in zip(setups, tracks, strict=True):
                tasks[setup.track_id] = group.create_task(one(setup, record))
        return sorted(cancelled)


def _tokens_saved(tracks: list[TrackRecord], cancelled: list[int]) -> int:
    """Estimate: each cancelled track would have spent as many tokens as the finished ones did on
    average; what it saved is that mean less what it had already spent."""
    done = [total_tokens(t) for t in tracks if t.track_id not in cancelled]
    if not cancelled or not done:
        return 0
    mean = sum(done) / len(done)
    return int(sum(max(0.0, mean - total_tokens(t)) for t in tracks if t.track_id in cancelled))
