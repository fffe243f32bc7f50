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
from engine.logging import LOG_FILE, configure_logging
from engine.records import ProblemRecord
from engine.run import demo, report
from engine.run.commands import add_commands
from engine.run.config import RunConfig
from engine.run.configure import build_config
from engine.run.execute import RunOutcome, execute, failure_report
from engine.run.flags import ArgumentParser, parse_run_flags
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
    if demo.compares_methods(plan, flags):
        return _run_demo(plan, flags, after_run)
    # The environment's keys join here, at the door: build_config is a function of the flags alone.
    config = with_environment_keys(build_config(plan, flags), os.environ)
    run = execute(config, overwrite=bool(flags["overwrite"]), progress=not flags["no_progress"], warm_up=True)
    outcome = loop.run(run)
    print(report.format_summary(outcome.records))
    _print_folder(outcome, after_run)
    return _failures(outcome.records)


def _run_demo(plan: RunnerPlan, flags: Mapping[str, Any], after_run: AfterRun | None) -> int:
    """The demo of a speculative runner: each judge, then the big model alone; one table, the run
    folders, and one line per method against the big model."""
    runs: list[tuple[str, RunConfig]] = []
    for method in demo.demo_runs(plan, flags):
        folder = {"output_dir": runs[0][1].output_dir + method.folder_suffix} if runs else {}
        config = build_config(RUNNERS[method.runner] if method.runner else plan, {**method.flags, **folder})
        runs.append((method.name, with_environment_keys(config, os.environ)))
    log_file = Path(runs[0][1].output_dir) / LOG_FILE
    _say(f"spectra's toy demo: {', '.join(name for name, _ in runs)}, on the same problems; the whole log: {log_file}")
    progress, overwrite = not flags["no_progress"], bool(flags["overwrite"])
    outcomes = loop.run(demo.run_demo(runs, overwrite=overwrite, progress=progress, say=_say))
    named = [(name, outcome.records) for (name, _), outcome in zip(runs, outcomes, strict=True)]
    print(report.format_runs(named), end="\n\n")
    for outcome in outcomes:
        _print_folder(outcome, after_run)
    print()
    print("\n".join(report.against_big_alone(named[:-1], named[-1])))
    return _failures([r for outcome in outcomes for r in outcome.records])


def _say(line: str) -> None:
    """What is happening, for the person at the screen (stderr: stdout is for the results)."""
    print(line, file=sys.stderr, flush=True)


def _print_folder(outcome: RunOutcome, after_run: AfterRun | None) -> None:
    print(f"records: {outcome.store.records_path} ({outcome.new} new, {outcome.resumed} already done)")
    if after_run is not None and outcome.records:
        print(f"viewer: {after_run(outcome.store.folder)} (open it in a browser)")


def _failures(records: list[ProblemRecord]) -> int:
    failures = failure_report(records)
    if failures.line():
        print(failures.line(), file=sys.stderr)
    return failures.exit_code


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
