"""RAST: sample a big base model from base + alpha * (positive - negative) over three vLLM servers.

Usage: python -m runners.rast --dataset MATH --base_model Qwen/Qwen2.5-14B \
  --positive_model hkust-nlp/Qwen-2.5-1.5B-SimpleRL-Zoo --negative_model Qwen/Qwen2.5-1.5B \
  --cd_decoding_alpha 1.0 --decoding_temperature 1.0 --top_p 0.95 --num_runs 32

RAST's own flags are kept: `--dataset` (MATH, AIME, AMC, GSM8K, as its runner spells them; or any
`--dataset_name`) and `--num_runs N` (repeats 0..N-1, each a resumable record; 10 by default, as
RAST's runner). Its second and third pairs (`--positive_model1` ...) are refused: spectra runs one
pair. `--help` lists the rest, among them `--rast_mode token|speculative`, `--gamma`, `--base_url`
(repeat for replicas).
"""

import sys

from engine.run.cli import run_runner


def main(argv: list[str] | None = None) -> int:
    return run_runner("rast", argv)


if __name__ == "__main__":
    sys.exit(main())
