"""search-and-learn: best-of-N, beam search or DVTS against a process reward model.

Usage: python -m runners.search --approach beam_search --n 16 --beam_width 4 \
    --small_model meta-llama/Llama-3.2-1B-Instruct --prm_model RLHFlow/Llama3.1-8B-PRM-Deepseek-Data ...
or with a recipe: python -m runners.search --config recipe.yaml --n 64 (flags override the recipe).
(`--help` lists its flags, `--strategy NAME --help` that method's too; each has a kebab-case spelling.)
"""

import sys

from engine.run.cli import run_runner


def main(argv: list[str] | None = None) -> int:
    return run_runner("search", argv)


if __name__ == "__main__":
    sys.exit(main())
