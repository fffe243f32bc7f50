"""SpecReason: one track; the small model drafts each step, the big model scores it and rewrites
it when the score is under --score_threshold.

Usage: python -m runners.spec --dataset_name aime --problem_id 60-89 --repeat_id 0-2 ...
(`--help` lists its flags, `--strategy NAME --help` that method's too; each has a kebab-case spelling.)
"""

import sys

from engine.run.cli import run_runner


def main(argv: list[str] | None = None) -> int:
    return run_runner("spec", argv)


if __name__ == "__main__":
    sys.exit(main())
