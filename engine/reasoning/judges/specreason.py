"""Scores of a drafted step from the big model's logprobs of one scoring token (SpecReason).

The big model reads the conversation with the new step, a user turn asking for a 0-9
rating and an assistant prefix ("I think the quality score is: "); it generates one token
at temperature 0 with the top 10 logprobs. `greedy` takes the generated token when it is a
digit, else 0; `average` renormalises the probabilities of the digit tokens among the top
logprobs and takes the expected digit (0 when no digit is among them).

The `StepScorer` contract it fulfils is in `engine.reasoning.judges.base`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
from dataclasses import dataclass

from engine.data.prompts import PromptSet
from engine.reasoning.judges.base import ScoredSteps, ScoreQuery
from engine.serving.chat import Message
from engine.serving.models import Model, Purpose

SCORE_METHODS = ("greedy", "average")
SCORE_TOP_LOGPROBS = 10
# The score digits. Not str.isdigit: it also accepts "²" or "٣", which int() and float() refuse.
DIGITS = frozenset("0123456789")


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
        if digit in DIGITS and logprob is not None and math.isfinite(logprob):
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
        value = float(token) if token in DIGITS else 0.0
    elif method == "average":
        value = sum(int(d) * p for d, p in distribution.items())
    else:
        raise ValueError(f"unknown score method {method!r}; use one of {SCORE_METHODS}")
    return StepScore(value=value, distribution=distribution)


MAX_JUDGE_SCORE = 9.0


class JudgeScorer:
    """SpecReason's judge: the model reads the conversation with the new step, is asked for a
    0-9 rating, and the score comes from the logprobs of the one token it writes."""

    name = "judge"

    def __init__(self, model: Model, prompts: PromptSet, *, method: str, delimiter: str):
        self.model = model
        self.prompts = prompts
        self.method = method
        self.delimiter = delimiter

    def prompt(self, query: ScoreQuery) -> str:
        """The conversation with the steps in the assistant turn, the rating request, the score prefix."""
        chat, step = self.model.chat, query.steps[-1]
        # SpecReason's scoring turn: "<think>" + every step, the judged one too, each followed by
        # the delimiter (its `"\n\n".join(steps) + "\n\n"`).
        reasoning = chat.think_open + "".join(s + self.delimiter for s in query.steps)
        request = self.prompts.render_score(query.problem, step)
        messages = [*query.messages, Message("assistant", reasoning), Message("user", request)]
        return chat.render(messages, self.prompts.render_score_prefix())

    async def score(self, query: ScoreQuery) -> ScoredSteps:
        judged = await self.model.complete(
            self.prompt(query), purpose=Purpose.SCORE, max_tokens=1, temperature=0.0, logprobs=SCORE_TOP_LOGPROBS
        )
        top = judged.top_logprobs[0] if judged.top_logprobs else {}
        score = score_from_logprobs(judged.text, top, self.method)
        return ScoredSteps(
            values=[score.value / MAX_JUDGE_SCORE],
            raw=score.value,
            distribution=score.distribution,
            costs=[judged.cost],
        )


class EveryStepJudge:
    """The judge asked about every step of a solution, one request per step, as a process reward
    model scores every step: so `last`, `min` and `prod` aggregate real step scores. A step's verdict
    depends only on the steps up to it, so each prefix is judged once per problem (the search asks
    about the same prefixes again as a beam grows, and beams that share a prefix ask at the same
    time: the later asker awaits the first one's request) and the server's prefix cache shares the
    rest. A verdict's costs are entered by the call that sent its request."""

    name = "judge"

    def __init__(self, judge: JudgeScorer):
        self.judge = judge
        self.known: dict[tuple[str, ...], asyncio.Future[ScoredSteps]] = {}

    async def score(self, query: ScoreQuery) -> ScoredSteps:
        prefixes = [query.steps[: i + 1] for i in range(len(query.steps))]
        asked = [p for p in dict.fromkeys(prefixes) if p not in self.known]
        for prefix in asked:
            self.known[prefix] = asyncio.ensure_future(self.judge.score(dataclasses.replace(query, steps=prefix)))
        verdicts = dict(zip(prefixes, await asyncio.gather(*(self.known[p] for p in prefixes)), strict=True))
        costs = [cost for prefix in asked for cost in verdicts[prefix].costs]
        return ScoredSteps(values=[verdicts[p].values[0] for p in prefixes], costs=costs)
