"""What a run prints on stdout, graded from the records it wrote: a table per problem, and for the
demo (several methods on the same problems) one line per method against the big model alone."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from engine.data.answers import is_correct
from engine.records import ProblemRecord

# A method's name and its records, in the order of its problems.
Run = tuple[str, list[ProblemRecord]]

COLUMNS = (
    f"{'problem':<14}{'rep':>4}  {'answer':<14}{'ref':<10}{'ok':<4}{'kept':>5}{'rewr':>5}"
    f"{'small tok':>10}{'big tok':>9}{'sec':>8}"
)


def format_summary(records: list[ProblemRecord]) -> str:
    """Per problem: answer, reference, right or wrong, steps kept and rewritten, tokens per model,
    seconds; then the accuracy and the big model's share of the generated tokens."""
    lines = [COLUMNS, *(_row(r) for r in records)]
    if records:
        right = sum(_right(r) for r in records)
        generated = {m: sum(_tokens(r, m) for r in records) for m in ("small", "big")}
        total = sum(generated.values())
        share = f"{generated['big'] / total:.0%}" if total else "-"
        lines.append(
            f"accuracy {right}/{len(records)} ({right / len(records):.0%}); big model's share of tokens {share}"
        )
    return "\n".join(lines)


def format_runs(runs: Sequence[Run]) -> str:
    """Several methods' runs as one table: a row per method and problem, the method named first."""
    width = max(len(name) for name, _ in runs) + 2
    lines = [f"{'method':<{width}}{COLUMNS}"]
    lines += [f"{name:<{width}}{_row(r)}" for name, records in runs for r in records]
    return "\n".join(lines)


@dataclass(frozen=True)
class Figures:
    """A method's figures on its problems: right answers of `problems`, and per problem the big
    model's generated tokens and the seconds it took."""

    right: int
    problems: int
    big_tokens: float
    seconds: float


def figures(records: list[ProblemRecord]) -> Figures:
    count = len(records) or 1
    return Figures(
        right=sum(_right(r) for r in records),
        problems=len(records),
        big_tokens=sum(_tokens(r, "big") for r in records) / count,
        seconds=sum(r.latency_s for r in records) / count,
    )


def against_big_alone(runs: Sequence[Run], alone: Run) -> list[str]:
    """One line per method of `runs` against the big model alone (`alone`) on the same problems:
    accuracy, big-model tokens and seconds a problem, and its latency as a multiple of the big
    model's; then the big model's own line."""
    width = max(len(name) for name, _ in [*runs, alone]) + 1
    base = figures(alone[1])
    lines = []
    for name, records in runs:
        own = figures(records)
        ratio = f"{own.seconds / base.seconds:.2f}x" if base.seconds else "-"
        lines.append(f"{name + ':':<{width}} {_figures_text(own)}, {ratio} the big model's latency")
    lines.append(f"{alone[0] + ':':<{width}} {_figures_text(base)}")
    return lines


def _figures_text(own: Figures) -> str:
    return (
        f"{own.right}/{own.problems} right, {own.big_tokens:.0f} big-model tokens a problem, "
        f"{own.seconds:.2f} s a problem"
    )


def _row(r: ProblemRecord) -> str:
    steps = [s for t in r.tracks for s in t.steps]
    kept = sum(1 for s in steps if s.accepted)
    rewritten = sum(1 for s in steps if s.accepted is False)
    ok = "yes" if _right(r) else "no"
    return (
        f"{r.problem_id[:13]:<14}{r.repeat_id:>4}  {str(r.answer)[:13]:<14}{str(r.reference_answer)[:9]:<10}"
        f"{ok:<4}{kept:>5}{rewritten:>5}{_tokens(r, 'small'):>10}{_tokens(r, 'big'):>9}{r.latency_s:>8.1f}"
    )


def _tokens(record: ProblemRecord, model: str) -> int:
    return record.usage[model].completion_tokens if model in record.usage else 0


def _right(record: ProblemRecord) -> bool:
    return bool(is_correct(record.answer, record.reference_answer, multiple_choice=record.is_multiple_choice))
