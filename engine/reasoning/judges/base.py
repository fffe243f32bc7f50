"""The contract of a step judge: what it reads (`ScoreQuery`), what it answers (`ScoredSteps`), and
how a search turns step scores into one (`aggregate_step_scores`, search-and-learn's `aggregate_scores`).

`StepScorer` is the one interface of everything that scores steps: SpecReason's 0-9 judge
(`judges/specreason.py`) and process reward models (`judges/prm.py`); policies and search
strategies share it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Protocol

from engine.records import ModelUsage, RequestCost, usage_of_costs
from engine.serving.chat import Message


@dataclass(frozen=True)
class ScoreQuery:
    """What a step scorer reads: the problem, the track's conversation, and the steps so far
    (the last one is the step being judged)."""

    problem: str
    messages: tuple[Message, ...]
    steps: tuple[str, ...]


@dataclass
class ScoredSteps:
    """A scorer's verdict. `values` are in [0, 1], one per step the scorer rates: a judge rates the
    last step only, a process reward model every step. `raw` is the judge's own 0-9 value; `costs`
    the entries of the requests it took."""

    values: list[float]
    raw: float | None = None
    distribution: dict[str, float] | None = None
    costs: list[RequestCost] = field(default_factory=list)

    @property
    def usage(self) -> dict[str, ModelUsage]:
        return usage_of_costs(self.costs)


class StepScorer(Protocol):
    """Anything that scores reasoning steps: SpecReason's judge, a process reward model."""

    name: str

    async def score(self, query: ScoreQuery) -> ScoredSteps: ...


STEP_SCORE_AGGREGATIONS = ("last", "min", "prod")


def aggregate_step_scores(values: list[float], how: str) -> float:
    """One score for a sequence of step scores (search-and-learn's `aggregate_scores`)."""
    if not values:
        raise ValueError("no step scores to aggregate")
    if how == "last":
        return values[-1]
    if how == "min":
        return min(values)
    if how == "prod":
        return math.prod(values)
    raise ValueError(f"unknown step score aggregation {how!r}; use one of {STEP_SCORE_AGGREGATIONS}")
