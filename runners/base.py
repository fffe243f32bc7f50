"""One model reasons alone on one track: the big-only baseline (SpecLRM's base_test) or, with
--model small, the small-only baseline.

Usage: python -m runners.base --dataset_name aime --problem_id 60-89 --repeat_id 0-2 ...
(`--help` lists its flags, `--strategy NAME --help` that method's too; each has a kebab-case spelling.)
"""

import sys

from engine.run.cli import run_runner


def main(argv: list[str] | None = None) -> int:
    return run_runner("base", argv)


if __name__ == "__main__":
    sys.exit(main())
