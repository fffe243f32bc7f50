"""Scores of a drafted step from the big model's logprobs of one scoring token (SpecReason).

The big model reads the conversation with the new step, a user turn asking for a 0-9
rating and an assistant prefix ("I think the quality score is: "); it generates one token
at temperature 0 with the top 10 logprobs. `greedy` takes the generated token when it is a
digit, else 0; `average` renormalises the probabilities of the digit tokens among the top
logprobs and takes the expected digit (0 when no digit is among them).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from engine.chat import Message
from engine.results import ModelUsage

SCORE_METHODS = ("greedy", "average")
SCORE_TOP_LOGPROBS = 10


@dataclass(frozen=True)
class StepScore:
    value: float
    distribution: dict[str, float]


def digit_distribution(top_logprobs: dict[str, float]) -> dict[str, float]:
    """Probabilities of the digits 0-9 among the top logprobs, renormalised to sum to 1.

    Tokens are stripped of surrounding white space (" 7" is 7); when a digit occurs as several
    tokens their probabilities add up. Empty when no digit is among them.
    """
    mass: dict[str, float] = {}
    for token, logprob in top_logprobs.items():
        digit = token.strip()
        if len(digit) == 1 and digit.isdigit() and logprob is not None and math.isfinite(logprob):
            mass[digit] = mass.get(digit, 0.0) + math.exp(logprob)
    total = sum(mass.values())
    if total <= 0:
        return {}
    return {digit: p / total for digit, p in sorted(mass.items())}


def score_from_logprobs(generated: str, top_logprobs: dict[str, float], method: str) -> StepScore:
    """The step's score under `method` ("greedy" or "average") and its digit distribution."""
    distribution = digit_distribution(top_logprobs)
    if method == "greedy":
        token = generated.strip()
        value = float(token) if len(token) == 1 and token.isdigit() else 0.0
    elif method == "average":
        value = sum(int(d) * p for d, p in distribution.items())
    else:
        raise ValueError(f"unknown score method {method!r}; use one of {SCORE_METHODS}")
    return StepScore(value=value, distribution=distribution)


# --- Step scorers (issue 10's seam; shape fixed in the brief, reconciled with main on merge) ---


@dataclass(frozen=True)
class ScoreQuery:
    """A partial solution to judge: the problem, the policy's messages, the steps so far (the last
    is the one to judge)."""

    problem: str
    messages: tuple[Message, ...]
    steps: tuple[str, ...]


@dataclass
class ScoredSteps:
    """A scorer's answer: `values` in [0, 1], one per step it rates (a PRM rates every step, a judge
    only the last); `raw` the judge's 0-9 value; `usage` what the scoring requests cost, per role."""

    values: list[float]
    raw: float | None = None
    distribution: dict[str, float] | None = None
    usage: dict[str, ModelUsage] = field(default_factory=dict)


class StepScorer(Protocol):
    """Anything that scores reasoning steps: SpecReason's judge, a process reward model."""

    name: str

    async def score(self, query: ScoreQuery) -> ScoredSteps: ...


STEP_SCORE_AGGREGATIONS = ("last", "min", "prod")


def aggregate_step_scores(values: Sequence[float], how: str) -> float:
    """One score for a solution from its step scores (search-and-learn's `aggregate_scores`):
    the last, the smallest, or the product."""
    if not values:
        raise ValueError("no step scores to aggregate")
    if how == "last":
        return values[-1]
    if how == "min":
        return min(values)
    if how == "prod":
        return math.prod(values)
    raise ValueError(f"unknown step score aggregation {how!r}; use one of {STEP_SCORE_AGGREGATIONS}")
