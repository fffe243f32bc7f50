"""The contract of a strategy: how ONE problem is solved, from tracks or from a search.

A `StrategySpec` declares a strategy's name, the model roles it calls (given its settings),
its settings (a frozen `Settings` dataclass whose fields are its flags), the prompt-set
templates it renders, and `solve`, which turns a `SolveContext` into the problem's record.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

from engine.data.problems import Problem
from engine.data.prompts import PromptSet
from engine.reasoning.policies import POLICIES
from engine.reasoning.policies.base import PolicySpec, TrackPolicy
from engine.reasoning.probing import ProbeSettings
from engine.reasoning.settings import ReasoningConfig, Settings
from engine.reasoning.track import StepObserver, Track, TrackSetup, track_models
from engine.records import ProblemRecord, RequestCost, TrackRecord, sum_usage, usage_of_costs
from engine.serving.models import Model

S = TypeVar("S", bound=Settings)


@dataclass(frozen=True)
class SolveContext(Generic[S]):
    """One (problem, repeat) to solve, with everything the run shares: the run's step policy
    (`policy`, `policy_settings`), this strategy's `settings`, the track settings, the models'
    handles, and `runner`/`config_digest` for the
    record. `track_slots` bounds the tracks in flight over the whole run: hold one while a track
    is running. `on_step` is told of each step a track of the run's policy keeps (the API streams
    them); a strategy that writes its own steps (a search, RAST) tells it nothing."""

    models: dict[str, Model]
    prompts: PromptSet
    problem: Problem
    repeat_id: int
    run_id: str
    dataset: str
    track_slots: asyncio.Semaphore
    strategy: str
    settings: S
    policy: str
    policy_settings: Settings
    reasoning: ReasoningConfig
    runner: str
    config_digest: str
    # Dynasor-CoT's answer probing, for every track of the run (off by default).
    probing: ProbeSettings = ProbeSettings()
    on_step: StepObserver | None = None
    started_at: float = field(default_factory=time.time)
    started: float = field(default_factory=time.monotonic)

    def new_policy(self, models: dict[str, Model]) -> TrackPolicy:
        """A fresh per-track instance of the run's step policy, started on the track's handles."""
        return POLICIES[self.policy].start(self.policy_settings, models, self.prompts, self.reasoning)

    def new_track(self, record: TrackRecord, setup: TrackSetup) -> Track:
        """A track of this problem that fills `record`, with a fresh instance of the run's policy
        started on the track's handles (its seed and logprob request)."""
        models = track_models(self.models, setup)
        return Track(
            record,
            setup,
            self.problem,
            models,
            self.prompts,
            self.reasoning,
            self.new_policy(models),
            continuous=POLICIES[self.policy].continuous,
            probing=self.probing,
            on_step=self.on_step,
        )

    def record(self, *, costs: Sequence[RequestCost] = (), **fields: Any) -> ProblemRecord:
        """The problem's record: what every strategy shares, plus the strategy's own `fields` and
        the requests it made itself (`costs`); its usage counts those and every track's."""
        problem, tracks = self.problem, fields.get("tracks", [])
        return ProblemRecord(
            run_id=self.run_id,
            dataset=self.dataset,
            problem_id=problem.id,
            repeat_id=self.repeat_id,
            runner=self.runner,
            strategy=self.strategy,
            problem=problem.problem,
            reference_answer=problem.answer,
            latency_s=time.monotonic() - self.started,
            started_at=self.started_at,
            finished_at=time.time(),
            config_digest=self.config_digest,
            multiple_choice=bool(problem.choices),
            usage=sum_usage([t.usage for t in tracks] + [usage_of_costs(costs)]),
            costs=list(costs),
            **fields,
        )


@dataclass(frozen=True)
class StrategySpec(Generic[S]):
    """A registered strategy. `roles` are the models it may call (each gets its flags),
    `needed_roles(settings)` those these settings call, beyond the policy's;
    `check_prompts(settings, prompts)` refuses a prompt set that lacks what the settings need.
    `runs_policy` False: it runs no tracks of the run's step policy (a search writes its steps with
    its own `Searcher`, RAST decodes token by token), so neither the policy's roles nor the answer
    model are needed. `needs_token_logprobs(settings)`: its tracks' steps must record their tokens'
    confidences (DeepConf weighs traces by them). `checks_between_steps(settings)`: it acts on a track
    between its steps (DeepConf online), which a one-request policy has none of.
    `server_args(settings)`: vLLM flags for the servers spectra starts for it (RAST needs raw logprobs
    and a --max-logprobs)."""

    name: str
    description: str
    settings: type[S]
    templates: tuple[str, ...]
    roles: tuple[str, ...]
    needed_roles: Callable[[S], tuple[str, ...]]
    solve: Callable[[SolveContext[S]], Awaitable[ProblemRecord]]
    check_prompts: Callable[[S, PromptSet], None] = lambda settings, prompts: None
    runs_policy: bool = True
    # The track settings (`ReasoningConfig` fields) it reads when it runs no policy; None: every one.
    track_settings: tuple[str, ...] | None = None
    needs_token_logprobs: Callable[[S], bool] = lambda settings: False
    # Whether these settings check tracks between their steps (DeepConf online stops weak ones).
    checks_between_steps: Callable[[S], bool] = lambda settings: False
    server_args: Callable[[S], tuple[str, ...]] = lambda settings: ()


def pairing_problem(
    strategy: StrategySpec[S], strategy_settings: S, policy: PolicySpec[Any], policy_settings: Settings
) -> str | None:
    """Why the run's step policy cannot work under this strategy, as one line naming what to
    choose instead; None when the pair works (or the strategy runs no policy). `policy_settings`
    are the policy's as given, for checks that depend on them."""
    if not strategy.runs_policy:
        return None
    if strategy.needs_token_logprobs(strategy_settings) and not policy.gives_token_logprobs:
        able = ", ".join(name for name, spec in POLICIES.items() if spec.gives_token_logprobs)
        return (
            f"strategy {strategy.name} needs token logprobs, and policy {policy.name} gives none: "
            f"choose a policy that does ({able})"
        )
    if strategy.checks_between_steps(strategy_settings) and policy.one_request(policy_settings):
        return (
            f"strategy {strategy.name} checks traces between their steps, and policy {policy.name} writes "
            "each trace in one request: add --stepwise"
        )
    return None
