"""One model reasons alone on one track: the big-only baseline (SpecLRM's base_test) or, with
--model small, the small-only baseline.

Usage: python -m runners.base --dataset_name aime --problem_id 60-89 --repeat_id 0-2 ...
(`--help` lists every flag; each has a kebab-case spelling too.)
"""

import sys

from engine.run.cli import run_runner


def main(argv: list[str] | None = None) -> int:
    return run_runner("base", argv)


if __name__ == "__main__":
    sys.exit(main())
