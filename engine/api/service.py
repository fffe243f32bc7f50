"""The engine behind `spectra api`: requests admitted under the run's limits, solved by the run's
scheduler, written as records.

Every request shares one set of limits (`engine.run.scheduler.Slots`: problems and tracks in flight)
over one scheduler per method and settings; a request is refused with 429 when more than
`max_queued` problems would wait for a slot. The first request of a method and settings checks the
servers' settings for it (`engine.run.preflight`) and, with an output folder, opens its run folder
(`<output_dir>/<method>-<digest>/`, held for the server's life), where each problem's record is
written with the request id as its problem id and the choice's index as its repeat.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from pathlib import Path

import aiohttp

from engine.api.catalog import API_DATASET, Catalog, Resolved
from engine.api.contract import RequestError, bad
from engine.data.problems import Problem
from engine.errors import SpectraError, UsageError
from engine.reasoning.track import StepObserver, track_messages
from engine.records import ProblemRecord, Role
from engine.run.config import SchedulerLimits
from engine.run.execute import Endpoint, failure_report, manifest_for, roles_needed, serving_facts
from engine.run.folder_lock import hold_run_folder
from engine.run.preflight import check_server_settings
from engine.run.scheduler import Scheduler, Slots, WorkItem, leaves
from engine.run.store import RunStore
from engine.serving.models import Model

# How long a model server may take to answer GET /health before it counts as down.
HEALTH_TIMEOUT_S = 2.0
# Models that write no reasoning: a process reward model, an embedder, lookahead's judge.
NOT_WRITING = (Role.PRM, Role.EMBEDDER, Role.JUDGE)
# What a refused client is told to wait: the openai client honours it (it retries after it).
RETRY_AFTER_S = 1


class ReasoningService:
    """Solves requests on the served `models` (`endpoints`: where each role is served)."""

    def __init__(
        self,
        catalog: Catalog,
        models: dict[str, Model],
        endpoints: Mapping[str, Endpoint],
        session: aiohttp.ClientSession,
        *,
        limits: SchedulerLimits,
        max_queued: int,
    ):
        self.catalog, self.models, self.endpoints, self.session = catalog, models, endpoints, session
        self.limits, self.max_queued = limits, max_queued
        self.slots = Slots.of(limits)
        self.admitted = 0
        self.requests: set[str] = set()
        self.schedulers: dict[tuple[str, str], Scheduler] = {}
        self.opening = asyncio.Lock()
        self.folders = ExitStack()

    @property
    def queued(self) -> int:
        """Problems admitted that wait for a slot (the scheduler's slots serve waiters in order)."""
        return max(0, self.admitted - self.limits.max_problems_in_flight)

    @contextmanager
    def admission(self, request_id: str, choices: int) -> Iterator[None]:
        """Hold `choices` problems of request `request_id` as admitted for the block, or refuse it:
        429 when too many would wait, 409 when a request of that id is in flight."""
        room = self.max_queued + self.limits.max_problems_in_flight
        if choices > room:
            raise bad(f"n {choices} is more than this server ever holds at once ({room}: --max_queued_requests "
                      "plus --max_problems_in_flight)", "n")  # fmt: skip
        if request_id in self.requests:
            raise RequestError(409, f"a request with id {request_id!r} is in flight: give each its own X-Request-Id")
        if self.admitted + choices - self.limits.max_problems_in_flight > self.max_queued:
            raise RequestError(
                429, f"{self.queued} problems are waiting (--max_queued_requests {self.max_queued}); retry later"
            )
        self.admitted += choices
        self.requests.add(request_id)
        try:
            yield
        finally:
            self.admitted -= choices
            self.requests.discard(request_id)

    async def solve(
        self, resolved: Resolved, problem: Problem, choices: int, observers: Sequence[StepObserver | None] = ()
    ) -> list[ProblemRecord]:
        """The records of `choices` repeats of `problem`, solved at once; RequestError for a problem
        that failed (502) or that the run refused (400)."""
        scheduler = await self.scheduler(resolved)
        observers = list(observers) or [None] * choices
        try:
            async with asyncio.TaskGroup() as group:
                tasks = [
                    group.create_task(scheduler.solve_one(WorkItem(problem, index), observers[index]))
                    for index in range(choices)
                ]
        except* SpectraError as errors:  # what a run ends on (a server spectra started died), and bad input
            error = leaves(errors)[0]
            raise RequestError(400 if isinstance(error, UsageError) else 502, str(error)) from None
        records = [task.result() for task in tasks]
        report = failure_report(records)
        if report.failed:
            raise RequestError(502, report.line().removeprefix("spectra: "))
        return records

    async def scheduler(self, resolved: Resolved) -> Scheduler:
        """The scheduler of a method and settings; the first request of them checks the servers'
        settings for them (400 when a setting trips every request) and opens their run folder."""
        key = (resolved.method.info.name, resolved.digest)
        async with self.opening:
            if key not in self.schedulers:
                config = resolved.config
                served = {role: self.endpoints[role] for role in roles_needed(config)}
                try:
                    await check_server_settings(config, self.session, served, self.models, [])
                    run_id, on_record = await self._open_folder(resolved, served)
                except UsageError as exc:
                    raise bad(str(exc)) from None
                self.schedulers[key] = Scheduler(
                    config,
                    self.models,
                    resolved.prompts,
                    run_id=run_id,
                    dataset=API_DATASET,
                    on_record=on_record,
                    slots=self.slots,
                )
        return self.schedulers[key]

    async def _open_folder(self, resolved: Resolved, served: Mapping[str, Endpoint]):
        config = resolved.config
        manifest = manifest_for(config)
        if not config.output_dir:
            return manifest["run_id"], lambda record: None
        folder = Path(config.output_dir)
        self.folders.enter_context(hold_run_folder(folder))
        manifest = {**manifest, **await serving_facts(config, self.session, dict(served))}
        store = RunStore.open(folder, manifest)
        return store.manifest["run_id"], store.append

    def prompt_tokens(self, resolved: Resolved, problem: Problem) -> int:
        """The prompt, counted once: the conversation as the chat template of the answer model
        renders it (of the first model that writes, when the method runs no answer model)."""
        config = resolved.config
        needed = roles_needed(config)
        writers = [role for role in needed if role not in NOT_WRITING]
        role = config.reasoning.answer_model if config.reasoning.answer_model in needed else (writers or needed)[0]
        chat = self.models[role].chat
        messages = track_messages(problem, resolved.prompts, None)
        return len(chat.tokenizer(chat.generation_prompt(messages), add_special_tokens=False)["input_ids"])

    async def down_roles(self) -> list[str]:
        """The roles none of whose servers answers GET /health now."""
        down = []
        for role, endpoint in self.endpoints.items():
            answers = [await self._healthy(url) for url in endpoint.urls]
            if not any(answers):
                down.append(role)
        return down

    async def _healthy(self, url: str) -> bool:
        try:
            timeout = aiohttp.ClientTimeout(total=HEALTH_TIMEOUT_S)
            async with self.session.get(f"{url}/health", timeout=timeout) as response:
                return response.status == 200
        except (aiohttp.ClientError, TimeoutError):
            return False

    def close(self) -> None:
        """Let go of the run folders."""
        self.folders.close()
