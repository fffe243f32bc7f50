"""SpecLRM's spec_scale_reason_2: a selector model picks --method_num solution methods from
the prompt set's library, one speculative track follows each, and their answers are voted on.

Usage: python -m runners.spec_scale_methods --dataset_name aime --problem_id 60-89 --repeat_id 0-2 ...
(`--help` lists its flags, `--strategy NAME --help` that method's too; each has a kebab-case spelling.)
"""

import sys

from engine.run.cli import run_runner


def main(argv: list[str] | None = None) -> int:
    return run_runner("spec_scale_methods", argv)


if __name__ == "__main__":
    sys.exit(main())
