"""What a run refuses before any server starts: a flag that would change nothing, a (strategy,
policy) pair that cannot work, a model the run does not need. Each refusal is one line naming
the flag and what would make it apply (`UsageError`, exit code 2).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from typing import Any

from engine.errors import UsageError
from engine.reasoning.policies import POLICIES
from engine.reasoning.probing import ProbeSettings
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies import STRATEGIES
from engine.reasoning.strategies.base import pairing_problem
from engine.run.config import RunConfig
from engine.run.flags import MODEL_ROLES, ROLE_FLAGS
from engine.run.runner_plans import BOTH, OWN_FLAGS, SINGLE, SINGLE_MODELS, RunnerPlan

Flags = Mapping[str, Any]


def refuse_flags_of_other_runners(plan: RunnerPlan, flags: Flags) -> None:
    """A seed flag of another runner (`--random_switch` outside runners.split), and `--model`
    outside the single-model runners, would change nothing: refused."""
    for name, (owner, flag) in OWN_FLAGS.items():
        value = flags.get(name)
        if owner != plan.name and value not in (None, False):
            instead = flag.instead.format(value=value)
            raise UsageError(f"--{name} is a flag of runners.{owner}; with runner {plan.name} use {instead}")
    if flags.get("model") is not None and plan.models != SINGLE:
        why = "its tracks use both models" if plan.models == BOTH else "it picks the model of runners base and scale"
        raise UsageError(f"--model has no effect in {plan.name} ({why}); drop it")


def refuse_max_tokens_elsewhere(plan: RunnerPlan, chosen: Flags, strategy: str) -> None:
    """--max_tokens is declared by RAST's settings; runners.split reads it as SplitReason's budget
    and runners.search as search-and-learn's tokens per request (their plans translate it)."""
    if chosen.get("max_tokens") is not None and strategy != "rast":
        raise UsageError(
            f"--max_tokens is a flag of runners.split, search and rast; with runner {plan.name} use --token_budget"
        )


def refuse_prompt_format_for_rast(chosen: Flags, strategy: str) -> None:
    """RAST tokenizes its prompt set's plain text itself: no renderer is asked, so --prompt_format
    would change nothing."""
    if chosen.get("prompt_format") is not None and strategy == "rast":
        raise UsageError(
            "--prompt_format changes nothing with strategy rast (it sends its prompt as token ids, "
            "with no chat template): drop it"
        )


def refuse_a_policy_that_never_runs(plan: RunnerPlan, flags: Flags, chosen: Flags, strategy: str) -> None:
    """A policy chosen on the command line (`--policy`, `--model`, a mode flag) for a strategy
    that writes its own steps would change nothing."""
    if STRATEGIES[strategy].runs_policy or chosen.get("policy") is None:
        return
    flag = next((name for name in ("policy", *plan.policy_flags) if flags.get(name) not in (None, False)), "policy")
    value = flags[flag]
    given = f"--{flag}" if isinstance(value, bool) else f"--{flag} {value}"
    runners = ", ".join(name for name, spec in STRATEGIES.items() if spec.runs_policy)
    raise UsageError(
        f"{given} changes nothing: strategy {strategy} runs no step policy (it writes its own steps); "
        f"drop it, or choose a strategy that runs one ({runners})"
    )


def refuse_flags_of_specs_not_in_use(flags: Flags, policy: str, strategy: str) -> None:
    """UsageError for a flag given on the command line (or in a recipe) that belongs to a policy or
    a strategy this run does not use: it would change nothing, silently."""
    runs_policy = STRATEGIES[strategy].runs_policy
    in_use = {STRATEGIES[strategy].settings, *([POLICIES[policy].settings, ProbeSettings] if runs_policy else [])}
    # A shared knob (--scorer) of a settings class in use is in use, whoever else declares it.
    used = {f.name for cls in in_use for f in dataclasses.fields(cls)}
    for kind, table, chosen in (("policy", POLICIES, policy), ("strategy", STRATEGIES, strategy)):
        for cls in dict.fromkeys(spec.settings for spec in table.values()):
            given = _first_given({k: v for k, v in flags.items() if k not in used}, cls) if cls not in in_use else None
            if given is None:
                continue
            owners = " or ".join(spec.name for spec in table.values() if spec.settings is cls)
            why = f"strategy {strategy} runs no step policy" if kind == "policy" and not runs_policy else None
            why = why or f"this run's {kind} is {chosen}"
            raise UsageError(f"--{given} belongs to {kind} {owners}, and {why}: drop it, or choose that {kind}")
    given = None if runs_policy else _first_given(flags, ProbeSettings)
    if given is not None:
        raise UsageError(f"--{given} probes the tracks of a step policy, and strategy {strategy} runs none: drop it")
    read = STRATEGIES[strategy].track_settings
    ignored = [f.name for f in dataclasses.fields(ReasoningConfig) if read is not None and f.name not in read]
    given = next((name for name in ignored if flags.get(name) is not None), None)
    if given is not None:
        reads = ", ".join(f"--{name}" for name in read)
        raise UsageError(
            f"--{given} changes nothing: strategy {strategy} runs no step policy and reads only {reads} "
            "of the track flags; drop it"
        )


def _first_given(flags: Flags, cls: type) -> str | None:
    return next((f.name for f in dataclasses.fields(cls) if flags.get(f.name) is not None), None)


def refuse_a_pair_that_cannot_work(config: RunConfig) -> None:
    """The strategy needs what the policy does not give (DeepConf reads token logprobs, online it
    stops traces between steps); probing needs steps too."""
    strategy, policy = STRATEGIES[config.strategy], POLICIES[config.policy]
    problem = pairing_problem(strategy, config.strategy_settings, policy, config.policy_settings)
    if strategy.runs_policy:
        problem = problem or policy.check_track(config.policy_settings, config.reasoning)
    if problem is not None:
        raise UsageError(problem)
    if config.probing.probe_every is not None and strategy.runs_policy and policy.one_request(config.policy_settings):
        # Dynasor probes a one-request generation every N tokens; spectra probes between steps.
        raise UsageError(
            f"--probe_every probes a track between its steps, and policy {config.policy} writes each track "
            "in one request: add --stepwise"
        )


def refuse_idle_flags(flags: Flags, config: RunConfig) -> None:
    """A flag given that the run's own settings leave without effect (`--score_threshold` when a PRM
    judges, `--answer_model` without `--answer_phase`): refused, naming what would make it apply."""
    in_use: list[Any] = [config.reasoning, config.strategy_settings]
    if STRATEGIES[config.strategy].runs_policy:
        in_use += [config.policy_settings, config.probing]
    for settings in in_use:
        given = next(((name, why) for name, why in settings.idle_flags().items() if flags.get(name) is not None), None)
        if given is not None:
            raise UsageError(f"--{given[0]} changes nothing here: {given[1]}")


# The track flags that end a loop of steps.
STEP_LOOP_FLAGS = ("stop_rule", "max_steps")
# The track flags that cut steps: a continuous policy's chunks join as written, each free to spend
# the budget left (`engine.reasoning.track`), so they change nothing there.
STEP_CUT_FLAGS = ("max_step_tokens", "step_delimiter")


def refuse_step_rules_without_steps(flags: Flags, config: RunConfig) -> None:
    """`--stop_rule` and `--max_steps` end a loop of steps: given for a policy that writes each track
    in one request, or as one continuous text (SplitReason's chunks, which end by its own rules),
    they change nothing; nor do `--max_step_tokens` and `--step_delimiter` for a continuous text."""
    policy = POLICIES[config.policy]
    if not STRATEGIES[config.strategy].runs_policy:
        return
    flag_names = (*STEP_LOOP_FLAGS, *STEP_CUT_FLAGS) if policy.continuous else STEP_LOOP_FLAGS
    given = next((name for name in flag_names if flags.get(name) is not None), None)
    if given is None:
        return
    if policy.continuous:
        raise UsageError(f"--{given} changes nothing: policy {config.policy} writes one continuous text, not steps")
    if policy.one_request(config.policy_settings):
        raise UsageError(
            f"--{given} changes nothing: policy {config.policy} writes each track in one request; add --stepwise"
        )


def refuse_routing_without_replicas(flags: Flags, config: RunConfig) -> None:
    """`--routing` and `--affinity_bound` choose among the replicas of a model (a repeated
    `--*_url`): with none, or `--affinity_bound` under least-loaded routing, they change nothing."""
    given = next((name for name in ("routing", "affinity_bound") if flags.get(name) is not None), None)
    if given is None:
        return
    if not any(len(model.urls) > 1 for model in config.models.values()):
        raise UsageError(
            f"--{given} chooses among a model's replicas, and this run has none: drop it, "
            "or give a model's servers as a repeated --*_url"
        )
    if flags.get("affinity_bound") is not None and config.client.routing != "affine":
        raise UsageError("--affinity_bound bounds affine routing, and this run routes least_loaded: drop one of them")


def refuse_models_not_needed(plan: RunnerPlan, flags: Flags, config: RunConfig, needed: Collection[str]) -> None:
    """A `--{role}_*` flag of a model the run does not call would change nothing."""
    for role in MODEL_ROLES:
        given = next((f"{role}_{x}" for x in ROLE_FLAGS if flags.get(f"{role}_{x}") is not None), None)
        if given is None or role in needed:
            continue
        policies = [name for name, spec in POLICIES.items() if role in spec.roles]
        strategies = [name for name, spec in STRATEGIES.items() if role in spec.roles]
        callers = "; ".join(
            f"{kind} {', '.join(names)}"
            for kind, names in (("policies", policies), ("strategies", strategies))
            if names
        )
        also = ""
        if role in SINGLE_MODELS and plan.models == SINGLE:
            also = f", or --model {role}"
        elif role in SINGLE_MODELS and STRATEGIES[config.strategy].runs_policy:
            also = f", or --answer_phase --answer_model {role}"
        raise UsageError(
            f"--{given} is for the {role} model, which this run ({config.policy}, {config.strategy}) does not call: "
            f"drop it, or choose a method that calls it ({callers}){also}"
        )
