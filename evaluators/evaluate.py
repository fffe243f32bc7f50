"""Evaluate run folders: `python -m evaluators.evaluate RUN_DIR [RUN_DIR ...] [--baseline RUN_DIR] [--report DIR]`.

`--report DIR` also writes the trace viewer (`evaluators.view`) there, linked from report.md.

The shard folders of one run split with `--shard` are read as one run (see evaluators.runs).

`spectra eval` is the same command: it adds these arguments with `add_arguments` and
calls `run`. The tables go to stdout; logs go to stderr.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import structlog

from engine.data.answers import DEFAULT_TIMEOUT_S
from engine.errors import SpectraError, UsageError
from engine.logging import LOG_LEVELS, SCREEN_LEVEL, configure_logging
from evaluators import compare, report, summary, tables
from evaluators.runs import Run, load_runs, version_difference
from evaluators.viewer.build import VIEWER_FILE, write_viewer

log = structlog.get_logger(__name__)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the evaluation arguments (seed spellings `--results_dir`, `--dataset_name` included)."""
    parser.add_argument(
        "runs",
        nargs="*",
        type=Path,
        metavar="RUN_DIR",
        help="run folders to evaluate (the shard folders of one run, or the folder holding them, make one run)",
    )
    parser.add_argument(
        "--results-dir", "--results_dir", dest="results_dirs", action="append", type=Path, default=[],
        metavar="RUN_DIR", help="a run folder (the seeds' spelling; may be repeated)",
    )  # fmt: skip
    parser.add_argument(
        "--baseline", metavar="RUN_DIR",
        help="run to compare the others with (a folder, given or not among RUN_DIR, or a run's folder name); "
        "default: the first run when there are several",
    )  # fmt: skip
    parser.add_argument("--report", type=Path, metavar="DIR", help="write report.md, summary.json and PNG plots here")
    parser.add_argument("--json", type=Path, metavar="PATH", help="write the JSON summary here ('-': stdout)")
    parser.add_argument(
        "--dataset-name", "--dataset_name", dest="dataset", metavar="NAME",
        help="evaluate only the records of this data set (name or prefix: 'aime' keeps aime24 and aime25)",
    )  # fmt: skip
    parser.add_argument(
        "--k", type=int, nargs="+", metavar="K", help="k values of pass@k and maj@k (default: 1, 2, 4, ... n)"
    )
    parser.add_argument(
        "--answer-timeout", "--answer_timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
        help="time allowed to check one answer against another with math-verify",
    )  # fmt: skip
    parser.add_argument(
        "--bootstrap", type=int, default=2000, metavar="N", help="bootstrap resamples of the accuracy difference"
    )
    parser.add_argument(
        "--log-level", "--log_level", default=SCREEN_LEVEL, choices=LOG_LEVELS,
        help=f"what the screen (stderr) shows of the log (default {SCREEN_LEVEL})",
    )  # fmt: skip


def build_parser(prog: str = "python -m evaluators.evaluate") -> argparse.ArgumentParser:
    """The parser of the evaluation command, named `prog` in its usage line."""
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog=prog,
        description="Accuracy, pass@k, maj@k and cost of run folders, compared with a baseline run.",
    )
    add_arguments(parser)
    return parser


def run(args: argparse.Namespace) -> int:
    """Evaluate the runs named by parsed arguments; raises UsageError on bad input. Returns 0."""
    _check_arguments(args)
    runs = _load_runs(args)
    differing = version_difference({one.name: one.spectra_version for one in runs})
    if differing:
        log.warning("spectra_versions_differ", versions=differing, hint="defaults and records change: see CHANGES.md")
    base = _baseline_index(args.baseline, runs)
    started = time.monotonic()
    summaries, figures, all_graded = [], [], []
    for one in runs:
        graded = summary.grade_run(one, timeout_s=args.answer_timeout)
        all_graded.append(graded)
        summaries.append(summary.summarize_run(one, graded, ks=args.k, timeout_s=args.answer_timeout))
        figures.append(compare.problem_figures(graded))
        log.info(
            "run_evaluated", run=one.name, records=len(one.records), elapsed_s=round(time.monotonic() - started, 2)
        )
    baseline_name = runs[base].name if base is not None else None
    comparisons = [
        compare.compare(
            one.name,
            figures[i],
            runs[base].name,
            figures[base],
            resamples=args.bootstrap,
            concurrency_note=_concurrency_note(one, runs[base]),
        )
        for i, one in enumerate(runs)
        if base is not None and i != base
    ]
    all_tables = tables.all_tables(summaries, comparisons)
    data = report.summary_json(summaries, comparisons, baseline_name)
    if args.json == Path("-"):
        sys.stdout.write(report.json_text(data))
    else:
        sys.stdout.write("\n\n".join(tables.render_text(t) for t in all_tables) + "\n")
        if args.json is not None:
            args.json.write_text(report.json_text(data), encoding="utf-8")
            log.info("summary_written", path=str(args.json))
    if args.report is not None:
        viewer = write_viewer(args.report / VIEWER_FILE, runs, all_graded, summaries, timeout_s=args.answer_timeout)
        path = report.write_report(args.report, summaries, comparisons, all_tables, baseline_name, viewer=viewer)
        log.info("report_written", path=str(path))
    return 0


def _concurrency_note(one: Run, baseline: Run) -> str | None:
    note = compare.concurrency_difference(one.manifest, baseline.manifest)
    if note:
        log.warning("concurrency_differs", run=one.name, baseline=baseline.name, difference=note)
    return note


def _check_arguments(args: argparse.Namespace) -> None:
    if not args.runs and not args.results_dirs:
        raise UsageError("no run folder given: name one or more RUN_DIR (or --results_dir DIR)")
    if args.k is not None and min(args.k) < 1:
        raise UsageError(f"--k values must be 1 or more, got {args.k}")
    if args.answer_timeout <= 0:
        raise UsageError(f"--answer-timeout must be positive, got {args.answer_timeout}")
    if args.bootstrap < 1:
        raise UsageError(f"--bootstrap must be 1 or more, got {args.bootstrap}")


def _load_runs(args: argparse.Namespace) -> list[Run]:
    paths = list(dict.fromkeys(p.resolve() for p in [*args.runs, *args.results_dirs]))
    # A baseline folder that is not among the runs is evaluated too, and listed first.
    if args.baseline is not None and Path(args.baseline).is_dir():
        baseline = Path(args.baseline).resolve()
        if baseline not in paths:
            paths.insert(0, baseline)
    runs = load_runs(paths, dataset=args.dataset)
    names = [one.name for one in runs]
    if len(set(names)) < len(names):
        for one in runs:
            one.name = str(one.path)
    return runs


def _baseline_index(choice: str | None, runs: list[Run]) -> int | None:
    if choice is not None:
        return compare.pick_baseline(choice, [(one.name, one.path) for one in runs])
    return 0 if len(runs) > 1 else None


def main(argv: list[str] | None = None, *, prog: str = "python -m evaluators.evaluate") -> int:
    """Command-line entry: set logging up, parse `argv`, evaluate; the exit code (2 for usage errors)."""
    args = build_parser(prog).parse_args(argv)
    configure_logging(level=args.log_level)
    try:
        return run(args)
    except SpectraError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code


if __name__ == "__main__":
    sys.exit(main())
