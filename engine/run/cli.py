"""The `spectra` command and the runner scripts: parse the flags, build the RunConfig, run it, print.

Each runner is a plan in `engine.run.runner_plans.RUNNERS`; `engine.run.configure.build_config`
turns a plan and the parsed flags into a RunConfig. Errors the user can fix end as one line on
stderr and exit code 2; a run whose records hold failed problems ends with a line counting them and
exit code 3; Ctrl-C keeps finished records, stops the servers and exits 130.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from engine import loop
from engine.errors import SpectraError
from engine.logging import configure_logging
from engine.run import demo
from engine.run.commands import add_commands
from engine.run.configure import build_config
from engine.run.flags import MODEL_ROLES, ArgumentParser, parse_run_flags
from engine.run.keys import with_environment_keys
from engine.run.runner_plans import RUNNERS, RunnerPlan

# A command a higher layer owns: it takes the arguments after its name, returns the exit code.
Passthrough = Callable[[list[str]], int]
# What a higher layer does with a finished run's folder (the front door writes the trace viewer);
# it returns the file it wrote, which `spectra run` prints.
AfterRun = Callable[[Path], Path]


def run_runner(
    runner: str, argv: list[str] | None = None, *, choose_runner: bool = False, after_run: AfterRun | None = None
) -> int:
    """Entry point of `runners/<runner>.py` and, with `choose_runner` (`--runner`), `spectra run`."""
    try:
        plan, flags = parse_run_flags(runner, argv, choose_runner=choose_runner)
    except SpectraError as exc:  # a recipe refused while parsing
        print(f"spectra: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return _guarded(flags, lambda: _run(plan, flags, after_run))


def _run(plan: RunnerPlan, flags: Mapping[str, Any], after_run: AfterRun | None = None) -> int:
    from engine.run.execute import execute, failure_report

    # The environment's keys join here, at the door: build_config is a function of the flags alone.
    config = with_environment_keys(build_config(plan, flags), os.environ)
    progress, overwrite = not flags["no_progress"], bool(flags["overwrite"])
    outcome = loop.run(execute(config, overwrite=overwrite, progress=progress, warm_up=True))
    print(demo.format_summary(outcome.records))
    print(f"records: {outcome.store.records_path} ({outcome.new} new, {outcome.resumed} already done)")
    if after_run is not None and outcome.records:
        print(f"viewer: {after_run(outcome.store.folder)} (open it in a browser)")
    records = outcome.records
    is_demo = not any(flags.get(f"{role}_model") or flags.get("model_name") for role in MODEL_ROLES)
    if is_demo and config.policy == "spec":
        alone_flags = {**demo.big_alone_flags(flags), "output_dir": f"{config.output_dir}-big_alone"}
        baseline = build_config(RUNNERS["base"], alone_flags)
        alone = loop.run(execute(baseline, overwrite=overwrite, progress=progress, warm_up=True))
        print(demo.compare_with_big_alone(outcome.records, alone.records))
        records = records + alone.records
    report = failure_report(records)
    if report.line():
        print(report.line(), file=sys.stderr)
    return report.exit_code


def _guarded(flags: Mapping[str, Any], body: Callable[[], int], *, keep_log: bool = True) -> int:
    """`body`'s exit code, its errors as one line; the log on the screen at --log_level, and with
    `keep_log` kept for the folder the command writes (`engine.logging.write_log_to`)."""
    configure_logging(json=flags["log_json"], level=flags["log_level"], keep=keep_log)
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
        "run",
        help="run a runner (default spec) on a data set; with no models, the toy demo (trained toy models)",
        add_help=False,
    )
    for name, (text, _) in passthrough.items():
        commands.add_parser(name, help=text, add_help=False)
    handlers = add_commands(commands)
    if argv[:1] and argv[0] in passthrough:
        return passthrough[argv[0]][1](argv[1:])
    if argv[:1] == ["run"]:
        return run_runner("spec", argv[1:], choose_runner=True, after_run=after_run)
    args = parser.parse_args(argv)
    # Of these commands, only serve writes a folder to keep its log in (its servers' logs).
    return _guarded(vars(args), lambda: handlers[args.command](args), keep_log=args.command == "serve")
