"""The `spectra` command and the runner scripts: flags -> RunConfig -> `engine.run.execute`.

Each runner is one function in `RUNNERS` that turns its own flags into the track mode and
the parallel settings; everything else is shared. Errors the user can fix end as one line on
stderr and exit code 2; Ctrl-C keeps finished records, stops the servers and exits 130.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable
from dataclasses import fields, replace
from pathlib import Path
from typing import Any, NoReturn

import structlog

from engine import loop
from engine.answers import is_correct
from engine.client import ClientLimits
from engine.config import (
    AGGREGATIONS,
    DataConfig,
    ModelConfig,
    ParallelConfig,
    ReasoningConfig,
    RunConfig,
    add_flag,
)
from engine.errors import SpectraError, UsageError
from engine.logging import configure_logging
from engine.results import ProblemRecord
from engine.run import roles_needed
from engine.scoring import SCORE_METHODS

log = structlog.get_logger(__name__)

TINY_MODELS_DIR = Path.home() / ".cache" / "spectra" / "tiny-models"
TOY_MODELS_DIR = Path.home() / ".cache" / "spectra" / "toy-models"
# The demo: the trained toy pair on a handful of toy problems, whose solutions are ~10 steps of
# ~10 tokens, so short budgets keep a runaway sample short.
DEMO_REASONING = {"token_budget": 400, "max_step_tokens": 48, "answer_max_tokens": 24}
DEMO_DATA = {"dataset_name": "toy", "problem_id": "0-5"}


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line naming it, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


def _or(value: Any, default: Any) -> Any:
    return default if value is None else value


def _single_model(args: argparse.Namespace, default_tracks: int) -> dict[str, Any]:
    mode = _or(args.model, "big")
    return {
        "mode": mode,
        "answer_model": _or(args.answer_model, mode),
        "selector_model": _or(args.selector_model, mode),
        "tracks": _or(args.tracks, default_tracks),
    }


RUNNERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "base": lambda a: _single_model(a, 1),
    "spec": lambda a: {"mode": "spec", "tracks": _or(a.tracks, 1)},
    "scale": lambda a: _single_model(a, 3),
    "spec_scale": lambda a: {"mode": "spec", "tracks": _or(a.tracks, 3)},
    "spec_scale_methods": lambda a: {
        "mode": "spec",
        "method_num": _or(a.method_num, 3),
        "tracks": _or(a.tracks, _or(a.method_num, 3)),
    },
}


def add_run_arguments(parser: argparse.ArgumentParser) -> None:
    """The flags every runner takes (defaults None: unset flags keep the config's defaults)."""
    data = parser.add_argument_group("data")
    add_flag(
        data,
        "dataset_name",
        help="preset (aime24, aime25, math500, gpqa_diamond; seeds' aime, math, gpqa), "
        "a local .jsonl/.json/.parquet file, a Hugging Face id, demo, or toy (default with the demo models)",
    )
    add_flag(data, "data_file", help="local copy of a preset's data")
    add_flag(data, "field", action="append", help="map a field to a column, e.g. problem=question (repeatable)")
    add_flag(data, "problem_id", help="ids or positions, e.g. 60-89 or 60,62,70-72 (default: all)")
    add_flag(data, "repeat_id", help="repeat ids, e.g. 0 or 0-3 (default 0)")
    out = parser.add_argument_group("output")
    add_flag(out, "output_dir", help="run folder (default results/<runner>_<dataset>)")
    add_flag(out, "overwrite", action="store_true", default=None, help="replace a run folder made with another config")
    models = parser.add_argument_group("models")
    add_flag(models, "model", choices=("big", "small"), help="base/scale runners: which model reasons")
    add_flag(models, "model_name", help="base/scale runners: id of the model that reasons (seeds' spelling)")
    for role in ("big", "small"):
        add_flag(models, f"{role}_model", help=f"{role} model: Hugging Face id or local path")
        add_flag(
            models,
            f"{role}_url",
            action="append",
            help=f"URL of a running server of the {role} model "
            "(repeat for replicas); without it spectra starts a vLLM server",
        )
        add_flag(models, f"{role}_tokenizer", help=f"where to load the {role} model's chat template from")
    add_flag(models, "thinking", choices=("auto", "on", "off"))
    reasoning = parser.add_argument_group("reasoning")
    add_flag(reasoning, "score_threshold", type=float, help="keep a drafted step scoring at least this (default 7.0)")
    add_flag(reasoning, "score_method", choices=SCORE_METHODS)
    for name in ("token_budget", "first_n_steps_base_model", "max_step_tokens", "answer_max_tokens", "seed"):
        add_flag(reasoning, name, type=int)
    add_flag(reasoning, "step_delimiter")
    add_flag(reasoning, "temperature", type=float)
    add_flag(reasoning, "top_p", type=float)
    add_flag(reasoning, "answer_model", choices=("big", "small"))
    parallel = parser.add_argument_group("parallel tracks")
    add_flag(parallel, "tracks", type=int)
    add_flag(parallel, "use_role_prompts", action="store_true", default=None)
    add_flag(parallel, "method_num", type=int)
    add_flag(parallel, "selector_model", choices=("big", "small"))
    add_flag(parallel, "aggregation", choices=AGGREGATIONS)
    add_flag(parallel, "early_stop", action="store_true", default=None)
    add_flag(parallel, "early_stop_share", type=float)
    add_flag(parallel, "max_tracks_in_flight", type=int)
    add_flag(parallel, "max_problems_in_flight", type=int)
    add_flag(parallel, "prompt_set", help="a set under prompts/ by name, or a folder path (default: default)")
    client = parser.add_argument_group("client")
    for name in ("max_in_flight_per_endpoint", "max_attempts"):
        add_flag(client, name, type=int)
    for name in ("request_timeout_s", "stall_timeout_s", "retry_deadline_s"):
        add_flag(client, name, type=float)
    add_flag(client, "server_log_dir")
    add_flag(client, "toy_models_dir", help=f"where the demo's toy models are written (default {TOY_MODELS_DIR})")
    add_common_arguments(parser)


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    add_flag(parser, "log_json", action="store_true", help="log JSON lines to stderr")
    add_flag(parser, "log_level", default="info")
    add_flag(parser, "no_progress", action="store_true", help="no progress bar")


def _given(args: argparse.Namespace, cls: type, **overrides: Any) -> dict[str, Any]:
    values = {f.name: getattr(args, f.name) for f in fields(cls) if getattr(args, f.name, None) is not None}
    return {**values, **overrides}


def build_config(runner: str, args: argparse.Namespace) -> RunConfig:
    """The RunConfig of `runner` from parsed flags; models left out mean the demo: the toy models on toy problems."""
    plan = RUNNERS[runner](args)
    reasoning_keys = {f.name for f in fields(ReasoningConfig)}
    reasoning = ReasoningConfig(
        **_given(args, ReasoningConfig, **{k: v for k, v in plan.items() if k in reasoning_keys})
    )
    parallel = ParallelConfig(
        **_given(args, ParallelConfig, **{k: v for k, v in plan.items() if k not in reasoning_keys})
    )
    if args.model_name:
        setattr(args, f"{plan['mode'] if plan['mode'] != 'spec' else 'big'}_model", args.model_name)
    big, small = (_model_config(args, role) for role in ("big", "small"))
    demo = big.model == "" and small.model == ""
    if demo:
        big, small = _toy_models(args)
        reasoning = replace(reasoning, **{k: v for k, v in DEMO_REASONING.items() if getattr(args, k) is None})
        if args.dataset_name is None:
            args.dataset_name, args.problem_id = DEMO_DATA["dataset_name"], args.problem_id or DEMO_DATA["problem_id"]
    dataset = args.dataset_name or "demo"
    data = DataConfig(**_given(args, DataConfig, dataset_name=dataset, fields=tuple(args.field or ())))
    config = RunConfig(
        runner=runner,
        output_dir=args.output_dir or f"results/{runner}_{Path(dataset).stem}",
        big=big,
        small=small,
        reasoning=reasoning,
        parallel=parallel,
        data=data,
        client=ClientLimits(**_given(args, ClientLimits)),
        prompt_set=args.prompt_set or "default",
        thinking=args.thinking or "auto",
        server_log_dir=args.server_log_dir,
    )
    for role in roles_needed(config):
        if getattr(config, role).model == "":
            raise UsageError(f"this run needs the {role} model: give --{role}_model (a Hugging Face id or path)")
    return config


def _model_config(args: argparse.Namespace, role: str) -> ModelConfig:
    urls = tuple(u.rstrip("/") for value in (getattr(args, f"{role}_url") or ()) for u in value.split(",") if u)
    return ModelConfig(
        model=getattr(args, f"{role}_model") or "", urls=urls, tokenizer=getattr(args, f"{role}_tokenizer")
    )


def _toy_models(args: argparse.Namespace) -> tuple[ModelConfig, ModelConfig]:
    from engine.toy_models import make_toy_models

    if args.big_url or args.small_url:
        raise UsageError("--big_url/--small_url need --big_model/--small_model (the ids those servers serve)")
    toy = make_toy_models(Path(args.toy_models_dir or TOY_MODELS_DIR))
    return ModelConfig(model=str(toy.big)), ModelConfig(model=str(toy.small))


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
        correct = is_correct(r.answer, r.reference_answer, multiple_choice=r.dataset.startswith("gpqa"))
        right += bool(correct)
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


def run_runner(runner: str, argv: list[str] | None = None, *, choose_runner: bool = False) -> int:
    """Entry point of `runners/<runner>.py` and, with `choose_runner` (`--runner`), `spectra run`."""
    parser = ArgumentParser(
        prog="spectra run" if choose_runner else f"runners/{runner}.py",
        description="Run a reasoning mode over a data set and write one record a problem.",
    )
    if choose_runner:
        add_flag(parser, "runner", choices=tuple(RUNNERS), default=runner, help=f"default {runner}")
    add_run_arguments(parser)
    args = parser.parse_args(argv)
    return _guarded(args, lambda: _run(getattr(args, "runner", runner), args))


def _run(runner: str, args: argparse.Namespace) -> int:
    from engine.run import execute

    config = build_config(runner, args)
    outcome = loop.run(execute(config, overwrite=bool(args.overwrite), progress=not args.no_progress))
    print(format_summary(outcome.records))
    print(f"records: {outcome.store.records_path} ({outcome.new} new, {outcome.resumed} already done)")
    return 0


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
    from engine.servers import ServerSpec, serve_models

    if args.big_model or args.small_model:
        specs = [ServerSpec(name=r, model=m) for r, m in (("big", args.big_model), ("small", args.small_model)) if m]
    else:
        big, small = _toy_models(args)
        specs = [ServerSpec(name="big", model=big.model), ServerSpec(name="small", model=small.model)]

    async def serve() -> None:
        async with serve_models(specs, log_dir=Path(args.server_log_dir or "server-logs")) as running:
            for name, server in running.items():
                print(f"{name}\t{server.url}\t{server.model}", flush=True)
            await asyncio.Event().wait()

    loop.run(serve())
    return 0


def _make_tiny_models(args: argparse.Namespace) -> int:
    from engine.tiny_models import make_tiny_models

    tiny = make_tiny_models(Path(args.directory), seed=args.seed)
    print(f"big\t{tiny.big}\nsmall\t{tiny.small}")
    return 0


def _make_toy_models(args: argparse.Namespace) -> int:
    from engine.toy_models import make_toy_models

    toy = make_toy_models(Path(args.directory))
    print(f"big\t{toy.big}\nsmall\t{toy.small}")
    return 0


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = ArgumentParser(prog="spectra", description="Parallel, speculative LLM reasoning on vLLM.")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=ArgumentParser)
    commands.add_parser(
        "run", help="run a runner (default spec) on a data set; with no models, the tiny demo", add_help=False
    )
    commands.add_parser("eval", help="evaluate run folders (see spectra eval --help)", add_help=False)
    serve = commands.add_parser("serve", help="start vLLM servers for the big and small models until Ctrl-C")
    for role in ("big", "small"):
        add_flag(serve, f"{role}_model")
    add_flag(serve, "server_log_dir")
    add_flag(serve, "toy_models_dir")
    add_flag(serve, "big_url", action="append")
    add_flag(serve, "small_url", action="append")
    add_common_arguments(serve)
    tiny = commands.add_parser("make-tiny-models", help="build the tiny random-weight models used by tests and demo")
    tiny.add_argument("directory")
    tiny.add_argument("--seed", type=int, default=0)
    add_common_arguments(tiny)
    toy = commands.add_parser("make-toy-models", help="write the trained toy models (the demo's) as model folders")
    toy.add_argument("directory")
    add_common_arguments(toy)
    if argv[:1] == ["eval"]:
        from evaluators.evaluate import main as evaluate

        return evaluate(argv[1:], prog="spectra eval")
    if argv[:1] == ["run"]:
        return run_runner("spec", argv[1:], choose_runner=True)
    args = parser.parse_args(argv)
    return _guarded(
        args,
        lambda: {"serve": _serve, "make-tiny-models": _make_tiny_models, "make-toy-models": _make_toy_models}[
            args.command
        ](args),
    )


if __name__ == "__main__":
    sys.exit(main())
