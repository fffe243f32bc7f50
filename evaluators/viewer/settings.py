"""The flags a run set away from its runner's defaults: the seed's behaviour is the runner's plan
(`engine.run.runner_plans.RUNNERS`, its `defaults` for the run's policy) over the settings
dataclasses' own defaults; what differs is spectra's."""

from __future__ import annotations

import dataclasses
from typing import Any

from engine.reasoning.policies import POLICIES
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies import STRATEGIES
from engine.run.runner_plans import RUNNERS, plan_defaults


def runner_defaults(runner: str, policy: str | None) -> dict[str, Any]:
    """The defaults the runner's plan gives to unset flags when it runs `policy` (empty for an
    unknown runner)."""
    if runner not in RUNNERS:
        return {}
    plan = RUNNERS[runner]
    return plan_defaults(plan, policy or plan.policy)


def changed_flags(manifest: dict[str, Any]) -> list[tuple[str, Any, Any]]:
    """(flag, value in this run, the runner's default) for each setting that differs."""
    config = manifest.get("config") or {}
    policy, strategy = config.get("policy"), config.get("strategy")
    plan = runner_defaults(str(manifest.get("runner") or config.get("runner") or ""), policy)
    sections = [("reasoning", ReasoningConfig)]
    if policy in POLICIES:
        sections.append(("policy_settings", POLICIES[policy].settings))
    if strategy in STRATEGIES:
        sections.append(("strategy_settings", STRATEGIES[strategy].settings))
    changed = []
    for section, cls in sections:
        values = config.get(section) or {}
        for f in dataclasses.fields(cls):
            if f.name not in values:
                continue
            default = plan.get(f.name, _default_of(f))
            value = values[f.name]
            if _comparable(value) != _comparable(default):
                changed.append((f.name, value, default))
    for name in ("prompt_set", "thinking"):
        if name in plan and config.get(name) != plan[name]:
            changed.append((name, config.get(name), plan[name]))
    return changed


def _default_of(f: dataclasses.Field) -> Any:
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return None


def _comparable(value: Any) -> Any:
    """Tuples (dataclass defaults) and lists (read from JSON) compare as equal."""
    return list(value) if isinstance(value, tuple | list) else value
