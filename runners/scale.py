"""SpecLRM's scale_reason: --tracks parallel tracks of one model (--model big|small), role-prompted
with --use_role_prompts, voted on.

Usage: python -m runners.scale --dataset_name aime --problem_id 60-89 --repeat_id 0-2 ...
(`--help` lists its flags, `--strategy NAME --help` that method's too; each has a kebab-case spelling.)
"""

import sys

from engine.run.cli import run_runner


def main(argv: list[str] | None = None) -> int:
    return run_runner("scale", argv)


if __name__ == "__main__":
    sys.exit(main())
