"""The toy demo: `spectra run` with no models runs the trained toy models on a handful of toy problems.

Its models, budgets and limits are data that `engine.run.configure.build_config` applies when no
model is given. A speculative runner's demo (`spectra run`, whose default runner is `spec`) shows
what speculation wins: the runner with a PRM as its judge (`--scorer prm`, the trained toy PRM read
by its tag token, which the prefix cache serves: the cheap reading, benchmarks/README.md "What a PRM
score costs"), with SpecReason's big judge, then the big model alone (runner `base`), each in a run
folder of its own, on one set of servers started and warmed once (`run_demo`).
"""

from __future__ import annotations

import dataclasses
import shlex
import time
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from engine.errors import UsageError
from engine.logging import write_log_to
from engine.reasoning.policies import POLICIES
from engine.reasoning.policies.lookahead import EMBEDDER_SERVER_ARGS
from engine.reasoning.strategies import STRATEGIES
from engine.run.config import ModelConfig, RunConfig
from engine.run.execute import Endpoint, RunOutcome, build_models, execute, model_endpoints, unfinished
from engine.run.flags import MODEL_ROLES, ROLE_FLAGS, TOY_MODELS_DIR
from engine.run.runner_plans import RunnerPlan
from engine.run.shared_servers import serving_config, serving_needs
from engine.run.warmup import warm_servers

# The trained toy pair on a handful of toy problems, whose solutions are ~10 steps of ~10 tokens,
# so short budgets keep a runaway sample short.
DEMO_REASONING = {"token_budget": 400, "max_step_tokens": 48, "answer_max_tokens": 24}
DEMO_DATA = {"dataset_name": "toy", "problem_id": "0-5"}
DEMO_SEARCH = {"num_iterations": 4}
# One problem at a time, so that the demo's latencies compare speculation with the big model alone.
DEMO_LIMITS = {"max_problems_in_flight": 1}
# The toy PRM's cheap reading: one generated token after the step tag, through the prefix cache.
DEMO_PRM_KIND = "tag_token"

# The toy models were taught chat-rendered conversations with the default set's problem message, so
# every runner sends them those (SpecLRM's raw text, SplitReason's and search's own messages too), as
# benchmarks.toy_world does.
DEMO_PROMPTS = {"prompt_format": "chat", "prompt_set": "default"}

Say = Callable[[str], None]  # a line telling the person at the screen what is happening


def demo_defaults(defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The demo's limits beat a runner's defaults (SplitReason's 16384 tokens); flags beat both."""
    return {**defaults, **DEMO_REASONING, **DEMO_SEARCH, **DEMO_PROMPTS}


def demo_models(flags: Mapping[str, Any], roles: Collection[str]) -> dict[str, ModelConfig]:
    """The demo's models: the trained toy pair, the trained toy PRM when the run scores with one
    (its causal-LM twin for `--prm_kind tag_token`, else the pooling model as a real PRM is served),
    and the small toy model as lookahead's embedder or judge; each served in float32."""
    from engine.toy.tiny_prm import prm_server_args
    from engine.toy.trained import SERVER_ARGS, make_toy_models

    given = next((f"{r}_{x}" for r in MODEL_ROLES for x in ROLE_FLAGS[1:] if flags.get(f"{r}_{x}")), None)
    if given is not None:
        role = given.split("_")[0]
        raise UsageError(f"--{given} needs --{role}_model (the id that server serves; without models, the toy demo)")
    folder = Path(flags.get("toy_models_dir") or TOY_MODELS_DIR)
    toy = make_toy_models(folder)
    # The costly big model: the trained big model's function at a big model's cost per token.
    served = {"big": (toy.costly_big, ()), "small": (toy.small, ())}
    if "prm" in roles:
        kind = flags.get("prm_kind")
        if kind == "token":
            raise UsageError("the toy PRM is read by pooling or by its tag token: give --prm_kind pooling or tag_token")
        served["prm"] = (toy.prm_token, ()) if kind == DEMO_PRM_KIND else (toy.prm, prm_server_args(toy.prm))
    if "embedder" in roles:  # lookahead's embedding verifier: the small toy model's pooled states
        served["embedder"] = (toy.small, EMBEDDER_SERVER_ARGS)
    if "judge" in roles:  # lookahead's judge: the small toy model, never taught [aligned] (README)
        served["judge"] = (toy.small, ())
    return {
        role: ModelConfig(model=str(path), server_args=(*args, *SERVER_ARGS)) for role, (path, args) in served.items()
    }


def demo_model_flags(flags: Mapping[str, Any], roles: Collection[str]) -> dict[str, str]:
    """`demo_models` as the flags that give them (`--big_model`, `--big_server_args`, ...)."""
    chosen = {}
    for role, model in demo_models(flags, roles).items():
        chosen[f"{role}_model"], chosen[f"{role}_server_args"] = model.model, shlex.join(model.server_args)
    return chosen


def is_demo(flags: Mapping[str, Any]) -> bool:
    """Whether the command gives no model: the toy demo."""
    return not any(flags.get(f"{role}_model") or flags.get("model_name") for role in MODEL_ROLES)


def compares_methods(plan: RunnerPlan, flags: Mapping[str, Any]) -> bool:
    """Whether the command is the demo of a speculative runner (its tracks' steps written by `spec`),
    which runs each judge and the big model alone."""
    chosen = plan.translate(flags)
    policy, strategy = chosen.get("policy") or plan.policy, chosen.get("strategy") or plan.strategy
    return is_demo(flags) and policy == "spec" and STRATEGIES[strategy].runs_policy


@dataclass(frozen=True)
class DemoRun:
    """One method of the demo: its name in the report, its runner (None: the command's), its flags,
    and what its run folder's name adds to the first one's."""

    name: str
    runner: str | None
    flags: dict[str, Any]
    folder_suffix: str


def demo_runs(plan: RunnerPlan, flags: Mapping[str, Any]) -> list[DemoRun]:
    """The methods of a speculative runner's demo: the runner with the PRM judge and with the big
    judge (`-big_judge`), or with the one `--scorer` names, each without the other judge's flags,
    then the big model alone (`-big_alone`)."""
    runs = []
    if flags.get("scorer") in (None, "prm"):
        prm = {**_judged_by("prm", flags), "prm_kind": flags.get("prm_kind") or DEMO_PRM_KIND}
        runs.append(DemoRun(f"{plan.name} (PRM judge)", None, prm, ""))
    if flags.get("scorer") in (None, "judge"):
        runs.append(DemoRun(f"{plan.name} (big judge)", None, _judged_by("judge", flags), "-big_judge" if runs else ""))
    return [*runs, DemoRun("big model alone", "base", big_alone_flags(flags), "-big_alone")]


def _judged_by(scorer: str, flags: Mapping[str, Any]) -> dict[str, Any]:
    """`flags` for `spec` judged by `scorer`, without the flags that judge leaves idle (the other's bar)."""
    idle = POLICIES["spec"].settings(scorer=scorer).idle_flags()
    return {**flags, **dict.fromkeys(idle), "scorer": scorer}


def big_alone_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The demo's flags for the big model alone on the same problems (runner base): the step
    policy's own flags (which the base runner would refuse) left out."""
    alone = {**flags, "model": "big", "policy": None}
    for spec in POLICIES.values():
        if spec.settings is not POLICIES["big"].settings:
            alone.update(dict.fromkeys(field.name for field in dataclasses.fields(spec.settings)))
    return alone


async def run_demo(runs: list[tuple[str, RunConfig]], *, overwrite: bool, progress: bool, say: Say) -> list[RunOutcome]:
    """Run each (name, config) of the demo in turn, one problem at a time, on one set of servers:
    started once for all, each warmed with one request before the first is timed, and stopped at
    the end; with nothing left to run, none start. The first config's folder holds the servers'
    logs and the log (`spectra.log`)."""
    configs = [config for _, config in runs]
    # What would be refused is refused before a server starts (a folder of another config among them).
    if not any([unfinished(config, overwrite=overwrite) for config in configs]):
        return [await execute(config, overwrite=overwrite, progress=False) for config in configs]
    every = serving_config(configs, configs[0].output_dir)
    log_dir = Path(every.server_log_dir or Path(every.output_dir) / "server-logs")
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        needs = serving_needs(configs)
        say(f"starting vLLM servers for the {', '.join(needs)} models (their logs: {log_dir}) ...")
        write_log_to(Path(every.output_dir))
        started = time.monotonic()
        async with model_endpoints(every, session, needs) as endpoints:
            say(f"servers ready in {time.monotonic() - started:.0f} s; warming each with one request ...")
            await warm_servers(every, session, await build_models(every, session, endpoints))
            outcomes = []
            for name, config in runs:
                served = _on_servers(config, endpoints)
                outcomes.append(await execute(served, overwrite=overwrite, progress=progress, label=name))
    return outcomes


def _on_servers(config: RunConfig, endpoints: Mapping[str, Endpoint]) -> RunConfig:
    """`config` on the demo's running servers (no restarts of its own: they are the demo's)."""
    models = {
        role: dataclasses.replace(m, urls=endpoints[role].urls) if role in endpoints else m
        for role, m in config.models.items()
    }
    return dataclasses.replace(config, models=models, server_restarts=None)
