"""DeepConf offline, replayed on a finished run whose tracks kept their tokens' confidences (strategy
`deepconf`): `python -m evaluators.deepconf RUN_DIR [--window 2048] [--token_score confidence]`.

For each budget k (1, 2, 4, ... N: the first k tracks of every record, as the paper subsamples), the
accuracy of the plain majority vote beside each DeepConf variant: a measure (mean, bottom10, lowest,
tail) and a kept share (the paper's 10% and 90%), the kept traces voting with their confidence as
weight (`engine.reasoning.strategies.deepconf`); `--token_score logprob` measures the sampled tokens'
logprobs instead of their top-k confidence. Records without a reference answer are left out.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from engine.data.answers import is_correct
from engine.errors import SpectraError, UsageError
from engine.logging import configure_logging
from engine.reasoning.aggregate import decide
from engine.reasoning.confidence import (
    MEASURES,
    TOKEN_SCORES,
    keep_most_confident,
    trace_confidence,
    trace_tokens,
)
from engine.reasoning.strategies.deepconf import weighted_vote
from engine.records import STOPPED_EARLY, ProblemRecord
from evaluators.metrics import default_ks
from evaluators.runs import load_runs

KEEP_PERCENTS = (10.0, 90.0)


def variant_answer(
    record: ProblemRecord, k: int, measure: str | None, keep: float, window: int, token_score: str = "confidence"
) -> str | None:
    """The answer of the first `k` answered tracks: majority when `measure` is None, else DeepConf's
    confidence-weighted vote of the top `keep`% by `measure`."""
    tracks = [t for t in record.tracks if t.answer is not None and t.finish_reason not in STOPPED_EARLY][:k]
    multiple_choice = record.is_multiple_choice
    if measure is None:
        return decide(tracks, "majority", multiple_choice=multiple_choice).answer
    measured = {
        t.track_id: c
        for t in tracks
        if (c := trace_confidence(trace_tokens(t, token_score), measure, window)) is not None
    }
    if not measured:
        return None
    kept = keep_most_confident(measured, keep)
    return weighted_vote(tracks, {i: measured[i] for i in kept}, token_score, multiple_choice=multiple_choice).answer


def replay(
    records: list[ProblemRecord], window: int, token_score: str = "confidence"
) -> tuple[list[int], dict[str, dict[int, float]]]:
    """The budgets, and per variant ("majority", "bottom10@10%", ...) the accuracy at each budget."""
    scored = [r for r in records if r.reference_answer is not None]
    if not scored:
        raise UsageError("no record has a reference answer: accuracy cannot be computed")
    ks = default_ks(max(len(r.tracks) for r in scored))
    variants = [("majority", None, 100.0)] + [(f"{m}@{p:g}%", m, p) for m in MEASURES for p in KEEP_PERCENTS]
    table = {}
    for name, measure, keep in variants:
        table[name] = {
            k: sum(
                bool(is_correct(variant_answer(r, k, measure, keep, window, token_score), r.reference_answer))
                for r in scored
            )
            / len(scored)
            for k in ks
        }
    return ks, table


def main(argv: list[str] | None = None) -> int:
    configure_logging()
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m evaluators.deepconf", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run", type=Path, help="a run folder whose tracks kept token confidences")
    parser.add_argument("--window", type=int, default=2048, help="tokens of a confidence group (default 2048)")
    parser.add_argument(
        "--token_score",
        choices=TOKEN_SCORES,
        default="confidence",
        help="per-token value measured: confidence (top-k, the paper's) or logprob (the sampled token's)",
    )
    args = parser.parse_args(argv)
    try:
        run = load_runs([args.run])[0]
        if not any(trace_tokens(t, args.token_score) for r in run.records for t in r.tracks):
            raise UsageError(f"{run.name}: no step kept token confidences; run it with --strategy deepconf")
        ks, table = replay(run.records, args.window, args.token_score)
    except SpectraError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    width = max(len(name) for name in table)
    lines = [
        f"{run.name}: accuracy at budget k (first k tracks)",
        "variant".ljust(width) + "".join(f"{k:>9}" for k in ks),
    ]
    for name, by_k in table.items():
        lines.append(name.ljust(width) + "".join(f"{100 * by_k[k]:>8.1f}%" for k in ks))
    sys.stdout.write("\n".join(lines) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
