"""RAST: sample a big base model from base + alpha * (positive - negative) over three vLLM servers.

Usage: python -m runners.rast --dataset MATH --base_model Qwen/Qwen2.5-14B \
  --positive_model hkust-nlp/Qwen-2.5-1.5B-SimpleRL-Zoo --negative_model Qwen/Qwen2.5-1.5B \
  --cd_decoding_alpha 1.0 --decoding_temperature 1.0 --top_p 0.95 --num_runs 32

RAST's own flags are kept: `--dataset` (MATH, AIME, AMC, GSM8K, as its runner spells them; or any
`--dataset_name`) and `--num_runs N` (repeats 0..N-1, each a resumable record). `--help` lists the
rest, among them `--rast_mode token|speculative`, `--gamma`, `--base_url` (repeat for replicas).
"""

import argparse
import sys
from collections.abc import Callable

from engine.data.problems import PRESETS
from engine.errors import UsageError
from engine.run.cli import run_runner

# RAST's --dataset names (vllm/tests/RAST_decode/run.py) -> spectra's presets.
RAST_DATASETS = {"math": "math500", "aime": "aime24", "amc": "amc23", "gsm8k": "gsm8k"}
RAST_NAMES = ("MATH", "AIME", "AMC", "GSM8K")


def own_flags(group) -> Callable[[argparse.Namespace], None]:
    """RAST's `--dataset` and `--num_runs`, turned into spectra's `--dataset_name` and `--repeat_id`."""
    group.add_argument("--dataset", help=f"RAST's data set name: {', '.join(RAST_NAMES)} (or use --dataset_name)")
    group.add_argument("--num_runs", "--num-runs", type=int, help="RAST's runs: repeats 0 to N-1 (--repeat_id)")
    return translate


def translate(args: argparse.Namespace) -> None:
    if args.dataset is not None:
        preset = RAST_DATASETS.get(args.dataset.lower())
        if preset is None or preset not in PRESETS:
            raise UsageError(
                f"--dataset {args.dataset} has no spectra preset ({', '.join(sorted(PRESETS))}); "
                "pass the data with --dataset_name FILE_OR_HUB_ID instead"
            )
        if args.dataset_name not in (None, preset):
            raise UsageError("--dataset is RAST's name for --dataset_name: give one of them")
        args.dataset_name = preset
    if args.num_runs is not None:
        if args.num_runs < 1:
            raise UsageError(f"--num_runs must be at least 1, not {args.num_runs}")
        if args.repeat_id is not None or args.num_repeats is not None:
            raise UsageError("--num_runs N means --repeat_id 0-(N-1): give one of them")
        args.repeat_id = f"0-{args.num_runs - 1}"
    args.dataset = args.num_runs = None  # consumed


def main(argv: list[str] | None = None) -> int:
    return run_runner("rast", argv, own_flags=own_flags)


if __name__ == "__main__":
    sys.exit(main())
