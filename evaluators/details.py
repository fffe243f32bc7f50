"""A method's own figures, whatever the method: the `details` a strategy writes on each record
(RAST: acceptance, chunks, requests per token, top-k fills) and the `detail` a policy writes on
each step (SplitReason: why a span ended, each round's scores), summarised key by key.

Nothing here knows a method: a new strategy's or policy's keys show up as tables on their own.
Values are summarised by kind: numbers by mean, min and max; booleans by the share that is true;
texts by their most common values; lists by their mean length (and the mean of their numbers);
a mapping's keys become keys of their own (`chunks.accepted`).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from engine.records import ProblemRecord

# Texts with more distinct values than this are shown by their most common ones only.
MOST_COMMON = 4


@dataclass
class DetailFigures:
    """One key over a run: where it comes from ("strategy" or "policy"), how many records or steps
    carry it, and a one-line summary of its values."""

    source: str
    count: int
    summary: str


def summarize_details(records: list[ProblemRecord]) -> dict[str, DetailFigures]:
    """Every key of the records' `details` and of their steps' `detail`, summarised; keyed by
    "strategy: KEY" or "policy: KEY"."""
    values: dict[tuple[str, str], list[Any]] = {}
    for record in records:
        _collect(values, "strategy", record.details or {})
        for track in record.tracks:
            for step in track.steps:
                _collect(values, "policy", step.detail or {})
    return {
        f"{source}: {key}": DetailFigures(source, len(found), summarize_values(found))
        for (source, key), found in sorted(values.items())
    }


def _collect(into: dict[tuple[str, str], list[Any]], source: str, details: dict[str, Any], prefix: str = "") -> None:
    for key, value in details.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            _collect(into, source, value, prefix=f"{name}.")
        elif value is not None:
            into.setdefault((source, name), []).append(value)


def summarize_values(values: list[Any]) -> str:
    """A one-line summary of a key's values, by their kind (see the module docstring)."""
    if all(isinstance(v, bool) for v in values):
        return f"true in {sum(values) / len(values):.1%}"
    if all(_is_number(v) for v in values):
        return _numbers(values)
    if all(isinstance(v, list | tuple) for v in values):
        lengths = [len(v) for v in values]
        flat = [x for v in values for x in v]
        text = f"length mean {sum(lengths) / len(lengths):.2f}"
        if flat and all(_is_number(x) for x in flat):
            text += f"; items {_numbers(flat)}"
        return text
    common = Counter(str(v) for v in values).most_common(MOST_COMMON)
    shown = ", ".join(f"{value[:30]} x{n}" for value, n in common)
    distinct = len({str(v) for v in values})
    return shown + (f" ({distinct} distinct)" if distinct > MOST_COMMON else "")


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _numbers(values: list[float]) -> str:
    return f"mean {sum(values) / len(values):.4g}, min {min(values):.4g}, max {max(values):.4g}"
