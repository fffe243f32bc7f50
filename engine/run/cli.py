"""The `spectra` command and the runner scripts: flags -> RunConfig -> `engine.run.execute.execute`.

Each runner is a plan in `engine.run.runner_plans.RUNNERS` (its policy, strategy and default
settings); everything else is shared. Errors the user can fix end as one line on
stderr and exit code 2; Ctrl-C keeps finished records, stops the servers and exits 130.
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import shlex
import sys
from collections.abc import Callable
from dataclasses import fields
from pathlib import Path
from typing import Any

import structlog

from engine import loop
from engine.data.answers import is_correct
from engine.data.recipes import parse_with_recipe
from engine.errors import SpectraError, UsageError
from engine.logging import configure_logging
from engine.reasoning.policies import POLICIES
from engine.reasoning.policies.lookahead import EMBEDDER_SERVER_ARGS
from engine.reasoning.probing import ProbeSettings
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies import STRATEGIES
from engine.records import ProblemRecord
from engine.run.config import (
    DataConfig,
    ModelConfig,
    RunConfig,
    SchedulerLimits,
)
from engine.run.execute import Shard, parse_shard, roles_needed
from engine.run.flags import (
    MODEL_ROLES,
    SERVER_RESTARTS_HELP,
    TOY_MODELS_DIR,
    ArgumentParser,
    add_common_arguments,
    add_flag,
    add_run_arguments,
    refuse_flags_of_specs_not_in_use,
    run_groups,
    settings_from_flags,
    shell_text,
)
from engine.run.runner_plans import (
    BOTH_MODEL_RUNNERS,
    RUNNERS,
    or_default,
    refuse_split_flags_elsewhere,
    repeat_ids,
)
from engine.serving.endpoints import ClientLimits
from engine.toy.trained import COSTLY_BIG_LAYERS

log = structlog.get_logger(__name__)

# A command a higher layer owns: it takes the arguments after its name, returns the exit code.
Passthrough = Callable[[list[str]], int]
# What a higher layer does with a finished run's folder (the front door writes the trace viewer);
# it returns the file it wrote, which `spectra run` prints.
AfterRun = Callable[[Path], Path]

# The demo: the trained toy pair on a handful of toy problems, whose solutions are ~10 steps of
# ~10 tokens, so short budgets keep a runaway sample short.
DEMO_REASONING = {"token_budget": 400, "max_step_tokens": 48, "answer_max_tokens": 24}
DEMO_DATA = {"dataset_name": "toy", "problem_id": "0-5"}
DEMO_SEARCH = {"num_iterations": 4}
# One problem at a time, so that the demo's latencies compare speculation with the big model alone.
DEMO_LIMITS = {"max_problems_in_flight": 1}


def _given(args: argparse.Namespace, cls: type, **overrides: Any) -> dict[str, Any]:
    values = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
    return {**values, **overrides}


def build_config(runner: str, args: argparse.Namespace) -> RunConfig:
    """The RunConfig of `runner` from parsed flags; models left out mean the demo: the trained toy
    models, which only the toy and demo data sets may use (toy problems 0-5 unless told otherwise)."""
    if args.model is not None and runner in BOTH_MODEL_RUNNERS:
        raise UsageError(f"--model has no effect in {runner} (its tracks use both models); drop it")
    refuse_split_flags_elsewhere(runner, args)
    plan = RUNNERS[runner](args)
    policy = or_default(args.policy, plan.pop("policy"))
    strategy = or_default(args.strategy, plan.pop("strategy", "vote"))
    refuse_flags_of_specs_not_in_use(args, policy, strategy)
    if args.model_name:
        setattr(args, f"{policy if policy in ('big', 'small') else 'big'}_model", args.model_name)
    if args.step_delimiter is not None:
        args.step_delimiter = shell_text(args.step_delimiter)
    models = {role: _model_config(args, role) for role in MODEL_ROLES}
    demo = not any(m.model for m in models.values())
    if demo and args.dataset_name is None:
        args.dataset_name, args.problem_id = DEMO_DATA["dataset_name"], args.problem_id or DEMO_DATA["problem_id"]
    dataset = args.dataset_name or "demo"
    shard = parse_shard(args.shard)
    normal_shard = f"{shard.index}/{shard.count}" if shard else None
    data = DataConfig(
        **_given(args, DataConfig, dataset_name=dataset, fields=tuple(args.field or ()), shard=normal_shard),
        **repeat_ids(runner, args),
    )
    if demo:
        if dataset not in ("toy", "demo"):
            raise UsageError(
                f"--dataset_name {dataset} needs real models: give --big_model and --small_model "
                "(the toy demo models are only for --dataset_name toy or demo)"
            )
        strategy_settings = settings_from_flags(STRATEGIES[strategy].settings, args, plan)
        policy_settings = settings_from_flags(POLICIES[policy].settings, args, plan)
        roles = [*POLICIES[policy].roles_for(policy_settings), *STRATEGIES[strategy].needed_roles(strategy_settings)]
        models.update(_demo_models(args, roles))
        # The demo's limits beat a runner's defaults (SplitReason's 16384 tokens); flags beat both.
        plan = {**plan, **DEMO_REASONING, **DEMO_SEARCH}
    config = RunConfig(
        runner=runner,
        output_dir=args.output_dir or _default_output_dir(runner, dataset, shard),
        models={role: m for role, m in models.items() if m.model},
        policy=policy,
        policy_settings=settings_from_flags(POLICIES[policy].settings, args, plan),
        strategy=strategy,
        strategy_settings=settings_from_flags(STRATEGIES[strategy].settings, args, plan),
        reasoning=settings_from_flags(ReasoningConfig, args, plan),
        probing=settings_from_flags(ProbeSettings, args),
        limits=settings_from_flags(SchedulerLimits, args, DEMO_LIMITS if demo else None),
        data=data,
        client=ClientLimits(**_given(args, ClientLimits)),
        prompt_set=args.prompt_set or plan.pop("prompt_set", "default"),
        thinking=args.thinking or "auto",
        server_log_dir=args.server_log_dir,
        max_model_len=args.max_model_len,
        server_restarts=args.server_restarts,
    )
    for role in roles_needed(config):
        config.model(role)
    return config


def _default_output_dir(runner: str, dataset: str, shard: Shard | None) -> str:
    folder = f"results/{runner}_{Path(dataset).stem}"
    return f"{folder}-{shard.suffix}" if shard else folder


def _model_config(args: argparse.Namespace, role: str) -> ModelConfig:
    urls = tuple(u.rstrip("/") for value in (getattr(args, f"{role}_url") or ()) for u in value.split(",") if u)
    return ModelConfig(
        model=getattr(args, f"{role}_model") or "",
        urls=urls,
        tokenizer=getattr(args, f"{role}_tokenizer"),
        server_args=tuple(shlex.split(getattr(args, f"{role}_server_args") or "")),
    )


def _demo_models(args: argparse.Namespace, roles: list[str]) -> dict[str, ModelConfig]:
    """The demo's models: the trained toy pair, and a tiny random PRM when the run scores with one."""
    from engine.toy.tiny_prm import make_tiny_prm, prm_server_args
    from engine.toy.trained import make_toy_models

    if any(getattr(args, f"{role}_url") for role in MODEL_ROLES):
        raise UsageError("--big_url/--small_url need --big_model/--small_model (the ids those servers serve)")
    folder = Path(args.toy_models_dir or TOY_MODELS_DIR)
    toy = make_toy_models(folder)
    # The costly big model: the trained big model's function at a big model's cost per token.
    models = {"big": ModelConfig(model=str(toy.costly_big)), "small": ModelConfig(model=str(toy.small))}
    if "prm" in roles:
        prm = make_tiny_prm(folder)
        models["prm"] = ModelConfig(model=str(prm), server_args=prm_server_args(prm))
    if "embedder" in roles:  # lookahead's embedding verifier: the small toy model's pooled states
        models["embedder"] = ModelConfig(model=str(toy.small), server_args=EMBEDDER_SERVER_ARGS)
    return models


def format_summary(records: list[ProblemRecord]) -> str:
    """Per problem: answer, reference, right or wrong, steps kept and rewritten, tokens per model,
    seconds; then the accuracy and the big model's share of the generated tokens."""
    header = (
        f"{'problem':<14}{'rep':>4}  {'answer':<14}{'ref':<10}{'ok':<4}{'kept':>5}{'rewr':>5}"
        f"{'small tok':>10}{'big tok':>9}{'sec':>8}"
    )
    lines = [header]
    right, generated = 0, {"small": 0, "big": 0}
    for r in records:
        steps = [s for t in r.tracks for s in t.steps]
        kept = sum(1 for s in steps if s.accepted)
        rewritten = sum(1 for s in steps if s.accepted is False)
        tokens = {m: r.usage[m].completion_tokens if m in r.usage else 0 for m in ("small", "big")}
        correct = _right(r)
        right += correct
        generated = {m: generated[m] + tokens[m] for m in generated}
        ok = "yes" if correct else "no"
        lines.append(
            f"{r.problem_id[:13]:<14}{r.repeat_id:>4}  {str(r.answer)[:13]:<14}{str(r.reference_answer)[:9]:<10}"
            f"{ok:<4}{kept:>5}{rewritten:>5}{tokens['small']:>10}{tokens['big']:>9}{r.latency_s:>8.1f}"
        )
    if records:
        total = sum(generated.values())
        share = f"{generated['big'] / total:.0%}" if total else "-"
        lines.append(
            f"accuracy {right}/{len(records)} ({right / len(records):.0%}); big model's share of tokens {share}"
        )
    return "\n".join(lines)


# A runner's own flags (RAST's --dataset, --num_runs): adds them to the data group and returns
# what turns their parsed values into spectra's flags.
OwnFlags = Callable[[Any], Callable[[argparse.Namespace], None]]


def run_runner(
    runner: str,
    argv: list[str] | None = None,
    *,
    choose_runner: bool = False,
    own_flags: OwnFlags | None = None,
    after_run: AfterRun | None = None,
) -> int:
    """Entry point of `runners/<runner>.py` and, with `choose_runner` (`--runner`), `spectra run`."""
    parser = ArgumentParser(
        prog="spectra run" if choose_runner else f"runners/{runner}.py",
        description="Run a reasoning mode over a data set and write one record a problem."
        + ("" if choose_runner else " Flags of other policies and strategies work with --policy/--strategy."),
    )
    groups = run_groups(parser)
    if choose_runner:
        add_flag(groups["method"], "runner", choices=tuple(RUNNERS), default=runner, help=f"default {runner}")
    apply_own = own_flags(groups["data"]) if own_flags else None
    add_run_arguments(parser, None if choose_runner else runner, groups)
    try:
        args = parse_with_recipe(parser, argv)
        if apply_own:
            apply_own(args)
    except UsageError as exc:
        print(f"spectra: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return _guarded(args, lambda: _run(getattr(args, "runner", runner), args, after_run))


def _run(runner: str, args: argparse.Namespace, after_run: AfterRun | None = None) -> int:
    from engine.run.execute import execute

    demo = not any(getattr(args, f"{role}_model") for role in MODEL_ROLES)
    baseline_args = big_alone_args(args) if demo else None
    config = build_config(runner, args)
    outcome = loop.run(execute(config, overwrite=bool(args.overwrite), progress=not args.no_progress))
    print(format_summary(outcome.records))
    print(f"records: {outcome.store.records_path} ({outcome.new} new, {outcome.resumed} already done)")
    if after_run is not None and outcome.records:
        print(f"viewer: {after_run(outcome.store.folder)} (open it in a browser)")
    if baseline_args is not None and config.policy == "spec":
        baseline_args.output_dir = f"{config.output_dir}-big_alone"
        baseline = build_config("base", baseline_args)
        alone = loop.run(execute(baseline, overwrite=bool(args.overwrite), progress=not args.no_progress))
        print(compare_with_big_alone(outcome.records, alone.records))
    return 0


def big_alone_args(args: argparse.Namespace) -> argparse.Namespace:
    """The demo's flags for the big model alone on the same problems: the step policy's own flags
    (which the base runner would refuse) left out."""
    alone = argparse.Namespace(**vars(args))
    alone.model, alone.policy = "big", None
    for spec in POLICIES.values():
        if spec.settings is not POLICIES["big"].settings:
            for field in fields(spec.settings):
                setattr(alone, field.name, None)
    return alone


def _right(record: ProblemRecord) -> bool:
    return bool(is_correct(record.answer, record.reference_answer, multiple_choice=record.is_multiple_choice))


def compare_with_big_alone(spec: list[ProblemRecord], alone: list[ProblemRecord]) -> str:
    """One line: spec against the big model alone on the same problems (accuracy, big-model tokens
    and seconds per problem)."""

    def figures(records: list[ProblemRecord]) -> tuple[int, float, float]:
        right = sum(_right(r) for r in records)
        big = sum(r.usage["big"].completion_tokens for r in records if "big" in r.usage) / len(records)
        return right, big, sum(r.latency_s for r in records) / len(records)

    (right, big, seconds), (right_alone, big_alone, seconds_alone) = figures(spec), figures(alone)
    ratio = f"{seconds / seconds_alone:.2f}x" if seconds_alone else "-"
    return (
        f"spec: {right}/{len(spec)} right, {ratio} the big model's latency ({seconds:.2f} s vs {seconds_alone:.2f} s a "
        f"problem), {big:.0f} vs {big_alone:.0f} big-model tokens a problem; big alone {right_alone}/{len(alone)} right"
    )


def _guarded(args: argparse.Namespace, body: Callable[[], int]) -> int:
    configure_logging(json=args.log_json, level=args.log_level)
    try:
        return body()
    except SpectraError as exc:
        print(f"spectra: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except ExceptionGroup as group:  # a SpectraError raised inside a task group
        errors = group.subgroup(SpectraError)
        if errors is None:
            raise
        while isinstance(errors, ExceptionGroup):
            errors = errors.exceptions[0]
        print(f"spectra: error: {errors}", file=sys.stderr)
        return errors.exit_code
    except KeyboardInterrupt:
        print("spectra: interrupted; finished records are kept, re-run the same command to resume", file=sys.stderr)
        return 130


def _serve(args: argparse.Namespace) -> int:
    from engine.serving.servers import DEFAULT_RESTARTS, serve_models
    from engine.serving.vllm_command import ServerSpec, model_context_length

    if args.big_model or args.small_model:
        pairs = [(r, m) for r, m in (("big", args.big_model), ("small", args.small_model)) if m]
    else:
        pairs = [(role, m.model) for role, m in _demo_models(args, ["big", "small"]).items()]
    specs = [ServerSpec(name=r, model=m, max_model_len=args.max_model_len or model_context_length(m)) for r, m in pairs]

    async def serve() -> None:
        restarts = DEFAULT_RESTARTS if args.server_restarts is None else args.server_restarts
        if restarts < 0:
            raise UsageError(f"--server_restarts must be 0 or more, not {restarts}")
        log_dir = Path(args.server_log_dir or "server-logs")
        # Each restart is printed where the servers' URLs were (stdout), for whoever watches it.
        on_restart = functools.partial(print, flush=True)
        async with serve_models(specs, log_dir=log_dir, restarts=restarts, on_restart=on_restart) as running:
            for name, server in running.items():
                print(f"{name}\t{server.url}\t{server.model}", flush=True)
            await asyncio.Event().wait()

    loop.run(serve())
    return 0


def _make_tiny_models(args: argparse.Namespace) -> int:
    from engine.toy.tiny import make_tiny_models

    tiny = make_tiny_models(Path(args.directory), seed=args.seed)
    print(f"big\t{tiny.big}\nsmall\t{tiny.small}")
    return 0


def _make_toy_models(args: argparse.Namespace) -> int:
    from engine.toy.trained import make_toy_models

    toy = make_toy_models(Path(args.directory), big_layers=args.big_layers)
    print(f"big\t{toy.big}\nsmall\t{toy.small}\ncostly_big\t{toy.costly_big}\nsmall_lost\t{toy.small_lost}")
    print(f"prm\t{toy.prm}\nprm_token\t{toy.prm_token}")
    return 0


def main(
    argv: list[str] | None = None,
    passthrough: dict[str, tuple[str, Passthrough]] | None = None,
    after_run: AfterRun | None = None,
) -> int:
    """The `spectra` command. `passthrough` names commands owned by a higher layer (the front door,
    `runners.spectra`, adds `eval`): their help line is listed, their arguments handed on whole.
    `after_run` is called with the folder of a finished `spectra run` (the front door's viewer)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    passthrough = passthrough or {}
    parser = ArgumentParser(prog="spectra", description="Parallel, speculative LLM reasoning on vLLM.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    commands.add_parser(
        "run", help="run a runner (default spec) on a data set; with no models, the tiny demo", add_help=False
    )
    for name, (text, _) in passthrough.items():
        commands.add_parser(name, help=text, add_help=False)
    serve = commands.add_parser("serve", help="start vLLM servers for the big and small models until Ctrl-C")
    for role in ("big", "small"):
        add_flag(serve, f"{role}_model")
    add_flag(serve, "server_log_dir")
    add_flag(serve, "server_restarts", type=int, help=SERVER_RESTARTS_HELP.replace("the run stops", "serve stops"))
    add_flag(serve, "max_model_len", type=int, help="context length (default: each model's own)")
    add_flag(serve, "toy_models_dir")
    add_flag(serve, "big_url", action="append")
    add_flag(serve, "small_url", action="append")
    add_common_arguments(serve)
    tiny = commands.add_parser("make-tiny-models", help="build the tiny random-weight models the tests use")
    tiny.add_argument("directory")
    tiny.add_argument("--seed", type=int, default=0)
    add_common_arguments(tiny)
    toy = commands.add_parser("make-toy-models", help="write the trained toy models (the demo's) as model folders")
    toy.add_argument("directory")
    toy.add_argument(
        "--big_layers",
        "--big-layers",
        type=int,
        default=COSTLY_BIG_LAYERS,
        help="decoder layers of the costly big model (the trained big model's function at a big model's "
        f"cost per token; default {COSTLY_BIG_LAYERS})",
    )
    add_common_arguments(toy)
    if argv[:1] and argv[0] in passthrough:
        return passthrough[argv[0]][1](argv[1:])
    if argv[:1] == ["run"]:
        return run_runner("spec", argv[1:], choose_runner=True, after_run=after_run)
    args = parser.parse_args(argv)
    return _guarded(
        args,
        lambda: {"serve": _serve, "make-tiny-models": _make_tiny_models, "make-toy-models": _make_toy_models}[
            args.command
        ](args),
    )
