"""What early stop would have saved a vote run made without it:
`python -m evaluators.early_stop RUN_DIR --tracks_in_flight K [K ...] [--confidence C [C ...]]`.

The replay follows `--tracks_in_flight K --early_stop [--early_stop_confidence C]` on the records:
tracks start in track-id order, K at a time, and finish in id order (the tracks of a problem take
about as many steps, so within a window they finish together); after each finish the run's
aggregation is checked with `engine.reasoning.aggregate.outcome_settled`, the tracks not finished counting as
open. At a stop the answer is the vote of the finished tracks; the tracks still running count with
all their tokens (they were about to finish: this over-counts), those never started with none.
Tokens are the tracks' completion tokens (a method selection's are left out).
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import dataclass
from pathlib import Path

from engine.data.answers import is_correct
from engine.errors import SpectraError, UsageError
from engine.logging import configure_logging
from engine.reasoning.aggregate import AGGREGATIONS, decide, outcome_settled
from engine.records import STOPPED_EARLY, ProblemRecord, TrackRecord
from evaluators.runs import Run, load_runs


@dataclass(frozen=True)
class Outcome:
    """One record replayed: the answer voted, the tokens spent, the tracks started."""

    answer: str | None
    tokens: int
    tracks_started: int


@dataclass(frozen=True)
class Replay:
    """A run replayed at one (K, C), beside the full vote it recorded; accuracies over `scored`."""

    tracks_in_flight: int
    confidence: float | None
    records: int
    scored: int
    full_accuracy: float | None
    accuracy: float | None
    full_tokens: int
    tokens: int
    full_tracks: int
    tracks_started: int

    @property
    def tokens_saved_share(self) -> float | None:
        return 1 - self.tokens / self.full_tokens if self.full_tokens else None


def track_tokens(track: TrackRecord) -> int:
    return sum(u.completion_tokens for u in track.usage.values())


def replay_record(
    record: ProblemRecord, tracks_in_flight: int, confidence: float | None, *, multiple_choice: bool
) -> Outcome:
    """`record` as early stop with this window and confidence would have run it."""
    tracks = sorted(record.tracks, key=lambda t: t.track_id)
    done = 0
    while done < len(tracks):
        done += 1
        open_tracks = len(tracks) - done
        if open_tracks and outcome_settled(
            tracks[:done], open_tracks, record.aggregation, multiple_choice=multiple_choice, confidence=confidence
        ):
            break
    # K start at once and one more at each finish before the last: those were started at the stop.
    started = min(len(tracks), done - 1 + tracks_in_flight)
    decision = decide(tracks[:done], record.aggregation, multiple_choice=multiple_choice)
    return Outcome(decision.answer, sum(track_tokens(t) for t in tracks[:started]), started)


def replay_run(run: Run, tracks_in_flight: int, confidence: float | None) -> Replay:
    """The run's records replayed at (K, C), graded against their reference answers."""
    check_replayable(run)
    full_right, right, scored = 0, 0, 0
    full_tokens, tokens, started = 0, 0, 0
    for record in run.records:
        choice = run.multiple_choice(record)
        outcome = replay_record(record, tracks_in_flight, confidence, multiple_choice=choice)
        full_tokens += sum(track_tokens(t) for t in record.tracks)
        tokens += outcome.tokens
        started += outcome.tracks_started
        if record.reference_answer is not None:
            scored += 1
            full_right += is_correct(record.answer, record.reference_answer, multiple_choice=choice)
            right += is_correct(outcome.answer, record.reference_answer, multiple_choice=choice)
    return Replay(
        tracks_in_flight=tracks_in_flight,
        confidence=confidence,
        records=len(run.records),
        scored=scored,
        full_accuracy=full_right / scored if scored else None,
        accuracy=right / scored if scored else None,
        full_tokens=full_tokens,
        tokens=tokens,
        full_tracks=sum(len(r.tracks) for r in run.records),
        tracks_started=started,
    )


def check_replayable(run: Run) -> None:
    """UsageError unless every record is a vote over tracks that all ran to their end."""
    for record in run.records:
        if record.aggregation not in AGGREGATIONS:
            raise UsageError(f"{run.path}: answers chosen by {record.aggregation!r}: replay runs of the vote strategy")
        if any(t.finish_reason in STOPPED_EARLY for t in record.tracks):
            stopped = f"{run.path}: problem {record.problem_id} has tracks stopped early"
            raise UsageError(f"{stopped}: replay a run made without --early_stop")


# (title, width) of the printed table's columns; "full" is the recorded vote of all tracks.
COLUMNS = (
    ("K", 2), ("confidence", 10), ("accuracy", 8), ("full", 8), ("tokens", 10), ("full", 10), ("saved", 8),
    ("tracks/r", 8), ("full", 6),
)  # fmt: skip


def _row(cells: list[str]) -> str:
    return " ".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, COLUMNS, strict=True))


def format_replay(replay: Replay) -> str:
    per_record = max(replay.records, 1)
    return _row(
        [
            str(replay.tracks_in_flight),
            "-" if replay.confidence is None else f"{replay.confidence:g}",
            _pct(replay.accuracy),
            _pct(replay.full_accuracy),
            str(replay.tokens),
            str(replay.full_tokens),
            _pct(replay.tokens_saved_share),
            f"{replay.tracks_started / per_record:.2f}",
            f"{replay.full_tracks / per_record:.2f}",
        ]
    )


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m evaluators.early_stop", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("run", type=Path, help="a run folder of the vote strategy made without --early_stop")
    parser.add_argument("--tracks_in_flight", "--tracks-in-flight", type=int, nargs="+", required=True)
    parser.add_argument("--confidence", type=float, nargs="+", default=[None], help="default: the vote rule only")
    return parser


def main(argv: list[str] | None = None) -> int:
    """Print one line per (K, C): replayed and full accuracy, tokens, tracks started per record."""
    configure_logging()
    args = build_parser().parse_args(argv)
    try:
        if any(k < 1 for k in args.tracks_in_flight):
            raise UsageError(f"--tracks_in_flight must be at least 1, not {min(args.tracks_in_flight)}")
        if any(c is not None and not 0.5 < c < 1 for c in args.confidence):
            raise UsageError(f"--confidence must be in (0.5, 1), not {args.confidence}")
        run = load_runs([args.run])[0]
        replays = [replay_run(run, k, c) for k in args.tracks_in_flight for c in args.confidence]
    except SpectraError as exc:
        sys.stderr.write(f"error: {exc}\n")
        return exc.exit_code
    sys.stdout.write(
        "\n".join(
            [
                f"{run.name}: {replays[0].records} records",
                _row([title for title, _ in COLUMNS]),
                *map(format_replay, replays),
            ]
        )
    )
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
