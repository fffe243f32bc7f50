"""The trace viewer: `python -m evaluators.view RUN_DIR [RUN_DIR ...] [--out FILE.html]`.

Writes one self-contained HTML file (no server, no network) showing each run problem by problem:
the config, accuracy, plots, a sortable and searchable problem table, and each problem's trace as
its method recorded it. With two runs, the problems where they disagree, side by side.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.data.answers import DEFAULT_TIMEOUT_S
from engine.errors import SpectraError, UsageError
from engine.logging import configure_logging
from evaluators.runs import load_runs
from evaluators.viewer.build import VIEWER_FILE, write_viewer


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        allow_abbrev=False,
        prog="python -m evaluators.view",
        description="Write a self-contained HTML viewer of run folders' traces.",
    )
    parser.add_argument("runs", nargs="+", type=Path, metavar="RUN_DIR", help="run folders (two: also compared)")
    parser.add_argument(
        "--out", type=Path, metavar="FILE.html", help=f"where to write it (default: {VIEWER_FILE} in the first run)"
    )
    parser.add_argument(
        "--answer-timeout", "--answer_timeout", type=float, default=DEFAULT_TIMEOUT_S, metavar="SECONDS",
        help="time allowed to check one answer against another with math-verify",
    )  # fmt: skip
    return parser


def run(args: argparse.Namespace) -> Path:
    """Write the viewer the parsed arguments ask for; raises UsageError on bad input."""
    if args.answer_timeout <= 0:
        raise UsageError(f"--answer-timeout must be positive, got {args.answer_timeout}")
    if args.out is not None and args.out.suffix.lower() not in (".html", ".htm"):
        raise UsageError(f"--out {args.out}: the viewer is an HTML file; give a name ending in .html")
    runs = load_runs(list(dict.fromkeys(p.resolve() for p in args.runs)))
    out = args.out or runs[0].path / VIEWER_FILE
    return write_viewer(out, runs, timeout_s=args.answer_timeout)


def write_for_run(folder: Path) -> Path:
    """The viewer of one run folder, written into it (the hook `spectra run` calls)."""
    return write_viewer(folder / VIEWER_FILE, load_runs([folder]))


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    args = build_parser().parse_args(argv)
    try:
        path = run(args)
    except SpectraError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    sys.stdout.write(f"viewer: {path}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
