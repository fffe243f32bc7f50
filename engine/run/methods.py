"""What spectra can run, read from the tables: every runner plan, policy and strategy with its
paper, the models it calls, its flags and their defaults (`spectra methods`), and the methods a
set of models can run (`available_methods`, for a server's list of models).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from engine.errors import UsageError
from engine.reasoning.policies import POLICIES
from engine.reasoning.strategies import STRATEGIES
from engine.reasoning.strategies.base import pairing_problem
from engine.run.config import RunConfig
from engine.run.execute import roles_needed
from engine.run.flags import settings_from_flags
from engine.run.runner_plans import PLANS, RunnerPlan, plan_defaults


@dataclass(frozen=True)
class MethodInfo:
    """One thing spectra runs. `kind`: runner, policy, strategy, or pair (a policy+strategy, or a
    strategy that runs no policy, under its own name); `roles`: the models it calls with its
    defaults; `flags`: (flag, default, help) of its settings; `defaults`: what a runner sets."""

    name: str
    kind: str
    description: str
    roles: tuple[str, ...]
    flags: tuple[tuple[str, Any, str], ...] = ()
    defaults: tuple[tuple[str, Any], ...] = ()

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _flags(settings: type) -> tuple[tuple[str, Any, str], ...]:
    return tuple((f"--{f.name}", f.default, f.metadata.get("help", "")) for f in dataclasses.fields(settings))


def _roles(policy: str, strategy: str, defaults: dict[str, Any] | None = None) -> tuple[str, ...]:
    config = RunConfig(
        runner="methods",
        output_dir="",
        models={},
        policy=policy,
        policy_settings=settings_from_flags(POLICIES[policy].settings, {}, defaults),
        strategy=strategy,
        strategy_settings=settings_from_flags(STRATEGIES[strategy].settings, {}, defaults),
    )
    return tuple(roles_needed(config))


def _runner(plan: RunnerPlan) -> MethodInfo:
    defaults = plan_defaults(plan, plan.policy)
    shown = {"policy": plan.policy, "strategy": plan.strategy, **defaults}
    roles = _roles(plan.policy, plan.strategy, defaults)
    return MethodInfo(plan.name, "runner", plan.description, roles, defaults=tuple(shown.items()))


def every_method() -> list[MethodInfo]:
    """Every runner plan, policy and strategy, in the tables' order."""
    runners = [_runner(plan) for plan in PLANS]
    policies = [MethodInfo(n, "policy", s.description, s.roles, _flags(s.settings)) for n, s in POLICIES.items()]
    strategies = [MethodInfo(n, "strategy", s.description, s.roles, _flags(s.settings)) for n, s in STRATEGIES.items()]
    return runners + policies + strategies


def pairs() -> list[MethodInfo]:
    """Every (policy, strategy) pair that can work together, as `policy+strategy`; a strategy that
    runs no policy once, under its own name."""
    found = []
    for s_name, strategy in STRATEGIES.items():
        if not strategy.runs_policy:
            found.append(MethodInfo(s_name, "pair", strategy.description, _roles("big", s_name)))
            continue
        for p_name, policy in POLICIES.items():
            if pairing_problem(strategy, strategy.settings(), policy, policy.settings()) is None:
                text = f"{policy.description}; {strategy.description}"
                found.append(MethodInfo(f"{p_name}+{s_name}", "pair", text, _roles(p_name, s_name)))
    return found


def _runs_with_no_flags(plan: RunnerPlan) -> bool:
    """Whether the plan runs as it is (runners.split needs a mode flag)."""
    try:
        plan.translate({})
    except UsageError:
        return False
    return True


def available_methods(models_given: Collection[str]) -> list[MethodInfo]:
    """The runners that run with no flag of their own, and the pairs, that can run on the model
    roles given (`big`, `small`, `prm`, ...), with their defaults."""
    given = set(models_given)
    runners = [_runner(plan) for plan in PLANS if _runs_with_no_flags(plan)]
    return [info for info in [*runners, *pairs()] if set(info.roles) <= given]


def format_methods(methods: list[MethodInfo]) -> str:
    """Plain text: a section per kind, each method with its description, models and flags."""
    lines: list[str] = []
    titles = {"runner": "runners", "policy": "policies", "strategy": "strategies", "pair": "policy+strategy pairs"}
    for kind, title in titles.items():
        chosen = [m for m in methods if m.kind == kind]
        if not chosen:
            continue
        lines += ["", f"{title}:"] if lines else [f"{title}:"]
        for method in chosen:
            lines.append(f"  {method.name}: {method.description}")
            lines.append(f"    models: {', '.join(method.roles) or '-'}")
            if method.defaults:
                lines.append("    sets: " + ", ".join(f"{k}={v!r}" for k, v in method.defaults))
            lines += [f"    {flag} (default {default!r}) {text}".rstrip() for flag, default, text in method.flags]
    return "\n".join(lines)


def methods_command(as_json: bool, models: str | None) -> str:
    """`spectra methods [--json] [--models big,small]`: every method, or those the models can run."""
    if models is not None:
        roles = [role.strip() for role in models.split(",") if role.strip()]
        if not roles:
            raise UsageError("--models takes model roles separated by commas, e.g. big,small")
        methods = available_methods(roles)
    else:
        methods = every_method()
    if as_json:
        return json.dumps([m.to_dict() for m in methods], indent=1, default=repr)
    return format_methods(methods)
