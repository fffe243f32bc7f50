"""The contract of a strategy: how ONE problem is solved, from tracks or from a search.

A `StrategySpec` declares a strategy's name, the model roles it calls (given its settings),
its settings (a frozen `Settings` dataclass whose fields are its flags), the prompt-set
templates it renders, and `solve`, which turns a `SolveContext` into the problem's record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from engine.config import RunConfig, Settings
from engine.datasets import Problem
from engine.models import Model
from engine.policies import POLICIES
from engine.policies.base import TrackPolicy
from engine.prompts import PromptSet
from engine.results import ProblemRecord


@dataclass(frozen=True)
class SolveContext:
    """One (problem, repeat) to solve, with everything the run shares. `track_slots` bounds the
    tracks in flight over the whole run: hold one while a track is running."""

    config: RunConfig
    models: dict[str, Model]
    prompts: PromptSet
    problem: Problem
    repeat_id: int
    run_id: str
    dataset: str
    track_slots: asyncio.Semaphore
    started_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)

    @property
    def settings(self) -> Any:
        return self.config.strategy_settings

    def new_policy(self) -> TrackPolicy:
        """A fresh per-track instance of the run's step policy."""
        config = self.config
        return POLICIES[config.policy].start(config.policy_settings, self.models, self.prompts, config.reasoning)

    def record(self, **fields: Any) -> ProblemRecord:
        """The problem's record: what every strategy shares, plus the strategy's own `fields`."""
        problem = self.problem
        return ProblemRecord(
            run_id=self.run_id,
            dataset=self.dataset,
            problem_id=problem.id,
            repeat_id=self.repeat_id,
            mode=self.config.runner,
            problem=problem.problem,
            reference_answer=problem.answer,
            latency_s=time.monotonic() - self.started,
            started_at=self.started_at,
            finished_at=time.time(),
            config_digest=self.config.digest(),
            multiple_choice=bool(problem.choices),
            **fields,
        )


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy. `roles` are the models it may call (each gets its flags),
    `needed_roles(settings)` those these settings call, beyond the policy's;
    `check_prompts(settings, prompts)` refuses a prompt set that lacks what the settings need.
    `uses_tracks` False: it runs no tracks of the run's step policy, so neither the policy's roles
    nor the answer model are needed. `server_args(settings)`: vLLM flags for the servers spectra
    starts for it (RAST needs raw logprobs and a --max-logprobs)."""

    name: str
    description: str
    settings: type[Settings]
    templates: tuple[str, ...]
    roles: tuple[str, ...]
    needed_roles: Callable[[Any], tuple[str, ...]]
    solve: Callable[[SolveContext], Awaitable[ProblemRecord]]
    check_prompts: Callable[[Any, PromptSet], None] = lambda settings, prompts: None
    uses_tracks: bool = True
    server_args: Callable[[Any], tuple[str, ...]] = lambda settings: ()
