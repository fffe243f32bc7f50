"""RSD (Reward-Guided Speculative Decoding): one track; the small model drafts each step, a process
reward model judges it, and the big model writes the step itself when the reward is under
--prm_threshold. RSD's flags and defaults (main_online.py); its raw ChatML prompt (prompt set rsd).

Usage: python -m runners.rsd --dataset_name math500 --small_model Qwen/Qwen2.5-Math-1.5B-Instruct \
    --big_model Qwen/Qwen2.5-Math-7B-Instruct --prm_model Qwen/Qwen2.5-Math-PRM-7B ...
(`--help` lists its flags; each has a kebab-case spelling.)
"""

import sys

from engine.run.cli import run_runner


def main(argv: list[str] | None = None) -> int:
    return run_runner("rsd", argv)


if __name__ == "__main__":
    sys.exit(main())
