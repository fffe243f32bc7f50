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

from engine.data.problems import PRESETS
from engine.errors import UsageError
from engine.run.cli import run_runner

# RAST's --dataset names (vllm/tests/RAST_decode/run.py) -> spectra's presets.
RAST_DATASETS = {"math": "math500", "aime": "aime24", "amc": "amc23", "gsm8k": "gsm8k"}


def translate(argv: list[str]) -> list[str]:
    """RAST's `--dataset` and `--num_runs` as spectra's `--dataset_name` and `--repeat_id`."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--dataset")
    parser.add_argument("--num_runs", "--num-runs", type=int)
    known, rest = parser.parse_known_args(argv)
    if known.dataset is not None:
        preset = RAST_DATASETS.get(known.dataset.lower())
        if preset is None or preset not in PRESETS:
            raise UsageError(
                f"--dataset {known.dataset} has no spectra preset ({', '.join(sorted(PRESETS))}); "
                "pass the data with --dataset_name FILE_OR_HUB_ID instead"
            )
        rest += ["--dataset_name", preset]
    if known.num_runs is not None:
        if known.num_runs < 1:
            raise UsageError(f"--num_runs must be at least 1, not {known.num_runs}")
        rest += ["--repeat_id", f"0-{known.num_runs - 1}"]
    return rest


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        argv = translate(argv)
    except UsageError as exc:
        print(f"spectra: error: {exc}", file=sys.stderr)
        return exc.exit_code
    return run_runner("rast", argv)


if __name__ == "__main__":
    sys.exit(main())
