"""The step judges, by name: what `--scorer` chooses, for `spec` and the searches alike.

A judge rates a drafted step: SpecReason's 0-9 score from the big model (`judge`), or a process
reward model's step reward (`prm`, RSD's judge and search-and-learn's scorer). `spec` keeps a
draft whose value reaches the judge's bar (`--score_threshold` on the 0-9 scale, `--prm_threshold`
on the reward); a search ranks solutions by every step's value. Adding a judge is one file in this
package and one entry in `JUDGES`.

A pair judge tells whether two steps written at the same position say the same thing: what
Lookahead Reasoning's `--verifier` chooses (`PAIR_JUDGES`): the reference's judge model shown only
the two steps (`judge`), the big model's 0-9 rating in context (`big_rating`), or the cosine of the
steps' embeddings (`embedding`).
"""

from __future__ import annotations

import asyncio
import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

from engine.data.prompts import PromptSet
from engine.reasoning.judges.aligned import AlignedJudge
from engine.reasoning.judges.base import PairJudge, ScoredSteps, ScoreQuery, StepScorer
from engine.reasoning.judges.embedding import EmbeddingSimilarity
from engine.reasoning.judges.equivalence import EquivalenceRating
from engine.reasoning.judges.prm import (
    PRM_TOP_LOGPROBS,
    PRMScorer,
    TagTokenPRMScorer,
    TokenPRMScorer,
    prm_kind_of,
)
from engine.reasoning.judges.specreason import SCORE_TOP_LOGPROBS, EveryStepJudge, JudgeScorer
from engine.reasoning.settings import setting
from engine.records import RequestCost, Role
from engine.serving.models import Model, Purpose

PRM_KINDS = ("auto", "pooling", "token", "tag_token")


def scorer_setting(default: str) -> str:
    """`--scorer`: one knob of every method that judges steps (its default is the method's)."""
    return setting(
        default,
        "who judges a step: judge (the big model's 0-9, SpecReason) or prm (a process reward model, --prm_model)",
        tuple(JUDGES),
        shared=True,
    )


def prm_kind_setting() -> str:
    """`--prm_kind`: how the PRM is read, for every method that judges with one."""
    return setting(
        "auto",
        "with --scorer prm: pooling (Qwen2.5-Math-PRM style), token (RLHFlow '+'/'-'), auto: from the model's "
        "config; tag_token (spectra's): a causal LM writing '+'/'-' after the step tag, a generated token a step, "
        "prefix-cached",
        PRM_KINDS,
        shared=True,
    )


@dataclass(frozen=True)
class JudgeInputs:
    """What building a judge reads: its model's handle, the prompt set (the 0-9 judge's templates),
    the step delimiter, how the 0-9 score is read, and how the PRM is read."""

    model: Model
    prompts: PromptSet
    delimiter: str
    score_method: str = "greedy"
    prm_kind: str = "auto"


@dataclass(frozen=True)
class JudgeSpec:
    """A registered step judge. `last_step(inputs)` rates the last step of a query (what `spec`
    asks); `every_step(inputs)` rates each step of a solution (what a search asks). `value` is what
    the judge's bar is compared with; `top_logprobs(prm_kind)` the logprobs its requests ask of its
    model (checked against the server before a run)."""

    name: str
    description: str
    role: str
    purpose: Purpose
    threshold_flag: str
    last_step: Callable[[JudgeInputs], StepScorer]
    every_step: Callable[[JudgeInputs], StepScorer]
    value: Callable[[ScoredSteps], float]
    top_logprobs: Callable[[str], int | None]


class ProcessRewardJudge:
    """A PRM as a judge, read as `kind` says (auto: from the model's config, found at its first score)."""

    name = "prm"

    def __init__(self, model: Model, kind: str, *, every_step: bool):
        self.model, self.kind, self.every_step = model, kind, every_step
        self._scorer: StepScorer | None = None

    async def score(self, query: ScoreQuery) -> ScoredSteps:
        if self._scorer is None:
            kind = self.kind
            if kind == "auto":
                kind = await asyncio.to_thread(prm_kind_of, self.model.source or self.model.client.model)
            self._scorer = prm_scorer(self.model, kind, every_step=self.every_step)
        return await self._scorer.score(query)


def prm_scorer(model: Model, kind: str, *, every_step: bool) -> StepScorer:
    """The PRM of `kind`: pooling and token PRMs score every step in one request; the tag-token PRM
    rates the last step, and is asked about each prefix when every step is wanted."""
    if kind == "tag_token":
        return EveryStepJudge(TagTokenPRMScorer(model)) if every_step else TagTokenPRMScorer(model)
    return PRMScorer(model) if kind == "pooling" else TokenPRMScorer(model)


def _big_judge(inputs: JudgeInputs, method: str) -> JudgeScorer:
    return JudgeScorer(inputs.model, inputs.prompts, method=method, delimiter=inputs.delimiter)


# The searches rank by the judge's expected digit (ties broken), spec keeps SpecReason's reading.
SEARCH_SCORE_METHOD = "average"

JUDGES: dict[str, JudgeSpec] = {
    spec.name: spec
    for spec in (
        JudgeSpec(
            name="judge",
            description="SpecReason: the big model rates the step 0-9 from the logprobs of one greedy token",
            role=Role.BIG,
            purpose=Purpose.SCORE,
            threshold_flag="score_threshold",
            last_step=lambda inputs: _big_judge(inputs, inputs.score_method),
            every_step=lambda inputs: EveryStepJudge(_big_judge(inputs, SEARCH_SCORE_METHOD)),
            value=lambda verdict: verdict.raw,
            top_logprobs=lambda prm_kind: SCORE_TOP_LOGPROBS,
        ),
        JudgeSpec(
            name="prm",
            description="RSD: a process reward model's reward of the step, in [0, 1]",
            role=Role.PRM,
            purpose=Purpose.PRM,
            threshold_flag="prm_threshold",
            last_step=lambda inputs: ProcessRewardJudge(inputs.model, inputs.prm_kind, every_step=False),
            every_step=lambda inputs: ProcessRewardJudge(inputs.model, inputs.prm_kind, every_step=True),
            value=lambda verdict: verdict.values[-1],
            top_logprobs=lambda prm_kind: None if prm_kind == "pooling" else PRM_TOP_LOGPROBS,
        ),
    )
}


@dataclass(frozen=True)
class PairJudgeSpec:
    """A registered pair judge: the model role it asks, `build(model, prompts, bar)`, the flag of its
    bar (None: it answers yes or no), and the logprobs its requests ask of its model (checked
    against the server before a run)."""

    name: str
    description: str
    role: str
    build: Callable[[Model, PromptSet, float | None], PairJudge]
    threshold_flag: str | None = None
    top_logprobs: int | None = None


PAIR_JUDGES: dict[str, PairJudgeSpec] = {
    spec.name: spec
    for spec in (
        PairJudgeSpec(
            name="judge",
            description="Lookahead Reasoning's: a judge model (--judge_model) shown only the two steps writes one "
            "greedy token; [aligned] keeps the draft",
            role=Role.JUDGE,
            build=lambda model, prompts, bar: AlignedJudge(model, prompts),
        ),
        PairJudgeSpec(
            name="big_rating",
            description="spectra's: the big model rates 0-9, after the track's reasoning, whether the two steps are "
            "equivalent (the prompt set's equivalence question); kept at --equivalence_threshold",
            role=Role.BIG,
            build=lambda model, prompts, bar: EquivalenceRating(model, prompts, bar),
            threshold_flag="equivalence_threshold",
            top_logprobs=SCORE_TOP_LOGPROBS,
        ),
        PairJudgeSpec(
            name="embedding",
            description="spectra's: the cosine of the two steps' embeddings by --embedder_model; kept at "
            "--embedding_threshold",
            role=Role.EMBEDDER,
            build=lambda model, prompts, bar: EmbeddingSimilarity(model, bar),
            threshold_flag="embedding_threshold",
        ),
    )
}


def ruled(costs: list[RequestCost], judge: str, value: float) -> list[RequestCost]:
    """The judge's cost entries, marked with the judge that ruled and the value it gave."""
    return [dataclasses.replace(cost, judge=judge, verdict=round(value, 4)) for cost in costs]


@dataclass(frozen=True)
class StepJudge:
    """A judge as one track's policy uses it: its scorer of the last step, the model it asks, and
    the bar a draft's value must reach."""

    spec: JudgeSpec
    scorer: StepScorer
    model: Model
    threshold: float

    @classmethod
    def of(cls, name: str, inputs: JudgeInputs, threshold: float) -> StepJudge:
        spec = JUDGES[name]
        return cls(spec, spec.last_step(inputs), inputs.model, threshold)

    async def score(self, query: ScoreQuery) -> ScoredSteps:
        """The verdict on the query's last step, its cost entries marked with this judge and its value."""
        verdict = await self.scorer.score(query)
        return dataclasses.replace(verdict, costs=ruled(verdict.costs, self.spec.name, self.value(verdict)))

    def value(self, verdict: ScoredSteps) -> float:
        return self.spec.value(verdict)

    def passes(self, verdict: ScoredSteps) -> bool:
        return self.value(verdict) >= self.threshold

    def cancelled(self) -> RequestCost:
        """The entry of this judge's request cancelled in flight."""
        return self.model.cancelled(self.spec.purpose)
