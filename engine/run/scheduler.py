"""Problems under limits, in order, each solved by the run's strategy.

Concurrency lives here and in the client only. Problems start in order, at most
`max_problems_in_flight` at a time; the tracks of all problems share one limit of
`max_tracks_in_flight` (a semaphore the strategies hold while a track runs); each model client
bounds requests per endpoint. A problem's record is handed to `on_record` as soon as it is done.
Several schedulers may share their limits (`Slots`): the API runs one per method and settings.

An error inside one problem ends that problem, never the run: as a track contains its errors (the
vote strategy goes on without it), the scheduler contains whatever a strategy's `solve` raises (a
search's scorer, a server that fails for good on this problem) in a record with its `failure`,
which a resumed run redoes. Only errors meant for the user (bad input, a server spectra started
died, SIGTERM) end the run.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from engine.data.problems import Problem
from engine.data.prompts import PromptSet
from engine.errors import ServerError, SpectraError
from engine.logging import bind_context
from engine.reasoning.strategies import STRATEGIES
from engine.reasoning.strategies.base import SolveContext
from engine.reasoning.track import StepObserver
from engine.records import ProblemRecord
from engine.run.config import RunConfig, SchedulerLimits
from engine.serving.models import Model

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class WorkItem:
    problem: Problem
    repeat_id: int


@dataclass(frozen=True)
class Slots:
    """The limits as semaphores: problems solved at once, and tracks running at once over them all."""

    problems: asyncio.Semaphore
    tracks: asyncio.Semaphore

    @classmethod
    def of(cls, limits: SchedulerLimits) -> Slots:
        return cls(asyncio.Semaphore(limits.max_problems_in_flight), asyncio.Semaphore(limits.max_tracks_in_flight))


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
        slots: Slots | None = None,
    ):
        self.config = config
        self.models = models
        self.prompts = prompts
        self.run_id = run_id
        self.dataset = dataset
        self.on_record = on_record
        self.digest = config.digest()
        self.slots = slots or Slots.of(config.limits)

    async def run(self, items: list[WorkItem]) -> None:
        """Solve every item; problems start in the order given."""
        async with asyncio.TaskGroup() as group:
            for item in items:
                await self.slots.problems.acquire()
                group.create_task(self._solve_and_release(item))

    async def solve_one(self, item: WorkItem, on_step: StepObserver | None = None) -> ProblemRecord:
        """One item as `run` solves each, once a problem slot is free; its record is handed to
        `on_record` and returned. `on_step` is told of each step its tracks keep."""
        await self.slots.problems.acquire()
        return await self._solve_and_release(item, on_step)

    async def _solve_and_release(self, item: WorkItem, on_step: StepObserver | None = None) -> ProblemRecord:
        try:
            with bind_context(run=self.run_id, problem=item.problem.id, repeat=item.repeat_id):
                record = await self.solve(item, on_step)
            self.on_record(record)
            return record
        finally:
            self.slots.problems.release()

    async def solve(self, item: WorkItem, on_step: StepObserver | None = None) -> ProblemRecord:
        """The record of one (problem, repeat), from the run's strategy."""
        config = self.config
        context = SolveContext(
            models=self.models,
            prompts=self.prompts,
            problem=item.problem,
            repeat_id=item.repeat_id,
            run_id=self.run_id,
            dataset=self.dataset,
            track_slots=self.slots.tracks,
            strategy=config.strategy,
            settings=config.strategy_settings,
            policy=config.policy,
            policy_settings=config.policy_settings,
            reasoning=config.reasoning,
            runner=config.runner,
            config_digest=self.digest,
            probing=config.probing,
            on_step=on_step,
        )
        try:
            return await STRATEGIES[config.strategy].solve(context)
        except Exception as exc:  # a bug or an unexpected answer must not end the whole run
            # A strategy's TaskGroup wraps what its requests raised: the first error tells.
            errors = leaves(exc)
            if any(isinstance(e, SpectraError) and not isinstance(e, ServerError) for e in errors):
                raise
            if not isinstance(errors[0], ServerError):
                log.exception("problem_error")
            return failed_record(context, errors[0])


def leaves(error: BaseException) -> list[BaseException]:
    """The errors inside (nested) exception groups, in order; the error itself when it is none."""
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in leaves(inner)]
    return [error]


def failed_record(context: SolveContext, error: BaseException) -> ProblemRecord:
    """The record of a problem its strategy could not solve: no answer, the error's kind and message."""
    failure = {"kind": type(error).__name__, "message": str(error)}
    log.warning("problem_failed", **failure)
    return context.record(answer=None, aggregation="failed", failure=failure)
