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

from engine.data.problems import Problem
from engine.data.prompts import PromptSet
from engine.reasoning.policies import POLICIES
from engine.reasoning.policies.base import PolicySpec, TrackPolicy
from engine.reasoning.probing import ProbeSettings
from engine.reasoning.settings import ReasoningConfig, Settings
from engine.reasoning.track import Track, TrackSetup
from engine.records import ProblemRecord, TrackRecord
from engine.serving.models import Model


@dataclass(frozen=True)
class SolveContext:
    """One (problem, repeat) to solve, with everything the run shares: the run's step policy
    (`policy`, `policy_settings`), this strategy's `settings`, the track settings, the models
    (`model_ids`: the id or path each role was loaded from), and `mode`/`config_digest` for the
    record. `track_slots` bounds the tracks in flight over the whole run: hold one while a track
    is running."""

    models: dict[str, Model]
    model_ids: dict[str, str]
    prompts: PromptSet
    problem: Problem
    repeat_id: int
    run_id: str
    dataset: str
    track_slots: asyncio.Semaphore
    strategy: str
    settings: Any
    policy: str
    policy_settings: Any
    reasoning: ReasoningConfig
    mode: str
    config_digest: str
    # Dynasor-CoT's answer probing, for every track of the run (off by default).
    probing: ProbeSettings = ProbeSettings()
    started_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)

    def new_policy(self) -> TrackPolicy:
        """A fresh per-track instance of the run's step policy."""
        return POLICIES[self.policy].start(self.policy_settings, self.models, self.prompts, self.reasoning)

    def new_track(self, record: TrackRecord, setup: TrackSetup) -> Track:
        """A track of this problem that fills `record`, with a fresh instance of the run's policy."""
        continuous = POLICIES[self.policy].continuous
        return Track(
            record,
            setup,
            self.problem,
            self.models,
            self.prompts,
            self.reasoning,
            self.new_policy(),
            continuous=continuous,
            probing=self.probing,
        )

    def record(self, **fields: Any) -> ProblemRecord:
        """The problem's record: what every strategy shares, plus the strategy's own `fields`."""
        problem = self.problem
        return ProblemRecord(
            run_id=self.run_id,
            dataset=self.dataset,
            problem_id=problem.id,
            repeat_id=self.repeat_id,
            mode=self.mode,
            strategy=self.strategy,
            problem=problem.problem,
            reference_answer=problem.answer,
            latency_s=time.monotonic() - self.started,
            started_at=self.started_at,
            finished_at=time.time(),
            config_digest=self.config_digest,
            multiple_choice=bool(problem.choices),
            **fields,
        )


@dataclass(frozen=True)
class StrategySpec:
    """A registered strategy. `roles` are the models it may call (each gets its flags),
    `needed_roles(settings)` those these settings call, beyond the policy's;
    `check_prompts(settings, prompts)` refuses a prompt set that lacks what the settings need.
    `runs_policy` False: it runs no tracks of the run's step policy (it writes its own steps), so
    neither the policy's roles nor the answer model are needed. `server_args(settings)`: vLLM flags
    for the servers spectra starts for it (RAST needs raw logprobs and a --max-logprobs).
    `needs_token_logprobs(settings)`: its tracks' writers must give token logprobs (DeepConf)."""

    name: str
    description: str
    settings: type[Settings]
    templates: tuple[str, ...]
    roles: tuple[str, ...]
    needed_roles: Callable[[Any], tuple[str, ...]]
    solve: Callable[[SolveContext], Awaitable[ProblemRecord]]
    check_prompts: Callable[[Any, PromptSet], None] = lambda settings, prompts: None
    runs_policy: bool = True
    server_args: Callable[[Any], tuple[str, ...]] = lambda settings: ()
    needs_token_logprobs: Callable[[Any], bool] = lambda settings: False


def pairing_problem(
    strategy_spec: StrategySpec, strategy_settings: Any, policy_spec: PolicySpec, policy_settings: Any
) -> str | None:
    """Why the run's step policy cannot serve this strategy (a sentence naming what would make the
    pair work), or None when it can."""
    if not strategy_spec.runs_policy or not strategy_spec.needs_token_logprobs(strategy_settings):
        return None
    if policy_spec.gives_token_logprobs:
        return None
    givers = ", ".join(name for name, spec in POLICIES.items() if spec.gives_token_logprobs)
    return (
        f"strategy {strategy_spec.name} reads the token logprobs of its tracks' steps, and policy "
        f"{policy_spec.name} does not give them: choose a policy that does ({givers})"
    )
