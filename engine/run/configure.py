"""Flags -> RunConfig: `build_config(plan, flags)`, a pure function of a runner plan and the parsed
flag values (never mutated). Models left out mean the toy demo (`engine.run.demo`).

The order: refuse other runners' flags, translate the seed's flags (the plan's `translate`), the
spellings every runner shares (`--model_name`, `--step_delimiter` as typed in a shell, a data file
given alone), refuse what the run would not use, then build the settings from flags over the
plan's defaults over each field's own default.
"""

from __future__ import annotations

import shlex
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from engine.data.problems import is_gpqa
from engine.errors import UsageError
from engine.reasoning.policies import POLICIES
from engine.reasoning.probing import ProbeSettings
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies import STRATEGIES
from engine.run import demo, refusals
from engine.run.config import DataConfig, ModelConfig, RunConfig, SchedulerLimits
from engine.run.execute import Shard, parse_shard, roles_needed
from engine.run.flags import MODEL_ROLES, parse_run_flags, settings_from_flags, shell_text
from engine.run.runner_plans import SINGLE_MODELS, RunnerPlan, plan_defaults, repeat_ids
from engine.serving.endpoints import ClientLimits

Flags = Mapping[str, Any]


def build_config(plan: RunnerPlan, flags: Flags) -> RunConfig:
    """The RunConfig of runner `plan` from parsed flags (None: left unset); UsageError for flags
    that would change nothing or cannot work together, before anything starts."""
    chosen, policy, strategy = _settled(plan, flags)
    defaults = plan_defaults(plan, policy)
    models = {role: _model_config(chosen, role) for role in MODEL_ROLES}
    is_demo = not any(m.model for m in models.values())
    if is_demo:
        if chosen.get("dataset_name") is None:
            chosen = {
                **chosen,
                **demo.DEMO_DATA,
                "problem_id": chosen.get("problem_id") or demo.DEMO_DATA["problem_id"],
            }
        models.update(_demo_models(chosen, defaults, policy, strategy))
        defaults = demo.demo_defaults(defaults)
    config = _run_config(plan, chosen, defaults, policy, strategy, models, is_demo)
    refusals.refuse_idle_flags(chosen, config)
    refusals.refuse_step_rules_without_steps(chosen, config)
    refusals.refuse_routing_without_replicas(chosen, config)
    refusals.refuse_a_pair_that_cannot_work(config)
    needed = roles_needed(config)
    refusals.refuse_models_not_needed(plan, chosen, config, needed)
    for role in needed:
        config.model(role)
    return config


def roles_of_command(plan: RunnerPlan, flags: Flags) -> list[str]:
    """The model roles runner `plan` calls with these flags, whatever models they give."""
    chosen, policy, strategy = _settled(plan, flags)
    return roles_needed(_run_config(plan, chosen, plan_defaults(plan, policy), policy, strategy, {}, False))


def config_of_command(runner: str, argv: list[str]) -> RunConfig:
    """The RunConfig that `python -m runners.<runner> ARGV` runs."""
    plan, flags = parse_run_flags(runner, argv)
    return build_config(plan, flags)


def _settled(plan: RunnerPlan, flags: Flags) -> tuple[dict[str, Any], str, str]:
    """The flags in spectra's names, the policy and the strategy; refuses flags that would change nothing."""
    refusals.refuse_flags_of_other_runners(plan, flags)
    chosen = plan.translate(flags)
    policy, strategy = chosen.get("policy") or plan.policy, chosen.get("strategy") or plan.strategy
    refusals.refuse_max_tokens_elsewhere(plan, chosen, strategy)
    refusals.refuse_prompt_format_for_rast(chosen, strategy)
    refusals.refuse_a_policy_that_never_runs(plan, flags, chosen, strategy)
    refusals.refuse_flags_of_specs_not_in_use(chosen, policy, strategy)
    return _shared_spellings(chosen, policy), policy, strategy


def _shared_spellings(chosen: Flags, policy: str) -> dict[str, Any]:
    """Spellings every runner takes: the seeds' `--model_name` (the model that reasons: the policy's
    when it is one model, else the big one), `--step_delimiter` typed in a shell (`'\\n\\n'`),
    and `--data_file` alone, which is the data set."""
    shared = dict(chosen)
    if chosen.get("model_name"):
        role = policy if policy in SINGLE_MODELS else "big"
        if chosen.get(f"{role}_model") not in (None, chosen["model_name"]):
            raise UsageError(f"--model_name is the seeds' name for --{role}_model here: give one of them")
        shared[f"{role}_model"] = chosen["model_name"]
    if chosen.get("step_delimiter") is not None:
        shared["step_delimiter"] = shell_text(chosen["step_delimiter"])
    if chosen.get("data_file") is not None and chosen.get("dataset_name") is None:
        shared["dataset_name"], shared["data_file"] = chosen["data_file"], None
    return shared


def _demo_models(chosen: Flags, defaults: Flags, policy: str, strategy: str) -> dict[str, ModelConfig]:
    dataset = chosen["dataset_name"]
    if dataset not in ("toy", "demo"):
        raise UsageError(
            f"--dataset_name {dataset} needs real models: give --big_model and --small_model "
            "(the toy demo models are only for --dataset_name toy or demo)"
        )
    strategy_settings = settings_from_flags(STRATEGIES[strategy].settings, chosen, defaults)
    policy_settings = settings_from_flags(POLICIES[policy].settings, chosen, defaults)
    roles = [*POLICIES[policy].roles_for(policy_settings), *STRATEGIES[strategy].needed_roles(strategy_settings)]
    return demo.demo_models(chosen, roles)


def _run_config(
    plan: RunnerPlan,
    chosen: Flags,
    defaults: Flags,
    policy: str,
    strategy: str,
    models: dict[str, ModelConfig],
    is_demo: bool,
) -> RunConfig:
    dataset = chosen.get("dataset_name") or "demo"
    shard = parse_shard(chosen.get("shard"))
    return RunConfig(
        runner=plan.name,
        output_dir=chosen.get("output_dir") or _default_output_dir(plan.name, dataset, shard),
        models={role: m for role, m in models.items() if m.model},
        policy=policy,
        policy_settings=settings_from_flags(POLICIES[policy].settings, chosen, defaults),
        strategy=strategy,
        strategy_settings=settings_from_flags(STRATEGIES[strategy].settings, chosen, defaults),
        reasoning=settings_from_flags(ReasoningConfig, chosen, defaults),
        probing=settings_from_flags(ProbeSettings, chosen),
        limits=settings_from_flags(SchedulerLimits, chosen, demo.DEMO_LIMITS if is_demo else None),
        data=_data_config(plan, chosen, defaults, dataset, shard),
        client=settings_from_flags(ClientLimits, chosen),
        **_rendering(plan, chosen, defaults),
        server_log_dir=chosen.get("server_log_dir"),
        max_model_len=chosen.get("max_model_len"),
        server_restarts=chosen.get("server_restarts"),
    )


# What a runner sets for its seed's raw text (RSD's prompt set is its whole ChatML prompt as text,
# sent with thinking off): it does not apply to a text rendered with chat templates.
RAW_TEXT_DEFAULTS = ("prompt_set", "thinking")


def _rendering(plan: RunnerPlan, chosen: Flags, defaults: Flags) -> dict[str, str]:
    """--prompt_format, --prompt_set and --thinking: given, else the runner's. A runner that sends
    raw text, rendered with chat templates instead (--prompt_format chat, the toy demo, the API),
    gets the default prompt set and thinking auto unless they are given."""
    prompt_format = chosen.get("prompt_format") or defaults.get("prompt_format", "chat")
    if prompt_format == "chat" and plan.defaults.get("prompt_format") == "raw":
        defaults = {name: value for name, value in defaults.items() if name not in RAW_TEXT_DEFAULTS}
    return {
        "prompt_format": prompt_format,
        "prompt_set": chosen.get("prompt_set") or defaults.get("prompt_set", "default"),
        "thinking": chosen.get("thinking") or defaults.get("thinking", "auto"),
    }


def _data_config(plan: RunnerPlan, chosen: Flags, defaults: Flags, dataset: str, shard: Shard | None) -> DataConfig:
    repeats = repeat_ids(plan, chosen)
    return DataConfig(
        dataset_name=dataset,
        data_file=chosen.get("data_file"),
        problem_id=chosen.get("problem_id"),
        **({"repeat_id": repeats} if repeats is not None else {}),
        fields=tuple(chosen.get("field") or ()),
        gpqa_order=_gpqa_order(chosen, defaults, dataset),
        shard=f"{shard.index}/{shard.count}" if shard else None,
    )


def _gpqa_order(chosen: Flags, defaults: Flags, dataset: str) -> str:
    """`--gpqa_order`, refused for a data set it does not order; else the runner's (the seeds': seed)."""
    given = chosen.get("gpqa_order")
    if given is not None and not is_gpqa(dataset):
        raise UsageError(f"--gpqa_order orders GPQA's choices, and the data set is {dataset}: drop it")
    return given or defaults.get("gpqa_order", "shuffled")


def _default_output_dir(runner: str, dataset: str, shard: Shard | None) -> str:
    folder = f"results/{runner}_{Path(dataset).stem}"
    return f"{folder}-{shard.suffix}" if shard else folder


def _model_config(flags: Flags, role: str) -> ModelConfig:
    urls = tuple(u.rstrip("/") for value in (flags.get(f"{role}_url") or ()) for u in value.split(",") if u)
    return ModelConfig(
        model=flags.get(f"{role}_model") or "",
        urls=urls,
        tokenizer=flags.get(f"{role}_tokenizer"),
        server_args=tuple(shlex.split(flags.get(f"{role}_server_args") or "")),
        api_key=flags.get(f"{role}_api_key"),
    )
