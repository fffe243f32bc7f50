"""The contracts of the judges: a step judge's (what it reads, `ScoreQuery`; what it answers,
`ScoredSteps`; how a search turns step scores into one, `aggregate_step_scores`, search-and-learn's
`aggregate_scores`) and a pair judge's (`StepPair` in, `PairVerdict` out).

`StepScorer` is the one interface of everything that scores steps: SpecReason's 0-9 judge
(`judges/specreason.py`) and process reward models (`judges/prm.py`); policies and search
strategies share it. `PairJudge` is the interface of what tells whether two steps written at the
same position say the same thing (Lookahead Reasoning's verifiers: `judges/aligned.py`,
`judges/equivalence.py`, `judges/embedding.py`).
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


@dataclass(frozen=True)
class StepPair:
    """What a pair judge reads: the big model's own step and the small model's draft written at the
    same position, and what came before them (the problem, the track's conversation, the reasoning)."""

    problem: str
    messages: tuple[Message, ...]
    reasoning: str
    step: str
    draft: str


@dataclass
class PairVerdict:
    """A pair judge's ruling: whether the draft says what the step says; `value` is what it was
    decided on (a rating, a similarity; None for a judge that answers yes or no), `said` the text
    the judge wrote (None: it wrote none), `costs` the entries of its requests."""

    same: bool
    value: float | None = None
    distribution: dict[str, float] | None = None
    said: str | None = None
    costs: list[RequestCost] = field(default_factory=list)


class PairJudge(Protocol):
    """Anything that tells whether a draft says what the big model's step at its position says."""

    name: str

    async def compare(self, pair: StepPair) -> PairVerdict: ...

    def cancelled(self) -> list[RequestCost]:
        """The entries of its requests for one pair, cancelled in flight."""
        ...


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
