"""SplitReason's modes, one per run, chosen by exactly one mode flag: --random_switch
(--switch_ratio, --switch_chunk), --logprob_subselect (--sgen, --stok, --sdecay, --ltok, --lbound,
--max_iterations), --spec_reason (the learned <bigmodel> offload), --big_model_only,
--small_model_only. --max_tokens (default 16384) is the track's token budget.

Usage: python -m runners.split --spec_reason --dataset_name aime --problem_id 60-89 ...
(`--help` lists its flags, `--strategy NAME --help` that method's too; each has a kebab-case spelling.)
"""

import sys

from engine.run.cli import run_runner


def main(argv: list[str] | None = None) -> int:
    return run_runner("split", argv)


if __name__ == "__main__":
    sys.exit(main())
