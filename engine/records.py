"""What a run produces: plain dataclasses, one `ProblemRecord` per (problem, repeat).

Every layer speaks these: the serving layer counts `ModelUsage` and enters each request as a
`RequestCost`, tracks fill `StepRecord` and `TrackRecord`, strategies return a `ProblemRecord`;
`engine.run.store` writes them as JSON lines. The closed vocabularies of the records (`Role`,
`FinishReason`, `StepOutcome`, `StepEnding`) are defined here once; as `StrEnum`s they are written as
their strings, so the JSON is what it was before they were named.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any, TypeVar

T = TypeVar("T")
# Records written before `record_version` existed read as version 1; version 2 names the runner and
# the track's policy (where version 1 said `mode`) and enters every request as a `RequestCost`.
RECORD_VERSION = 2


class Vocabulary(StrEnum):
    """A closed vocabulary of the records: its members are their strings, in JSON, logs and messages."""

    def __repr__(self) -> str:
        return repr(self.value)


class Role(Vocabulary):
    """The part a model plays in a run."""

    SMALL = "small"  # drafts (speculative policies), or writes alone
    BIG = "big"  # checks, rewrites, takes over, or writes alone
    PRM = "prm"  # a process reward model a search scores steps with
    EMBEDDER = "embedder"  # lookahead's embedding verifier
    JUDGE = "judge"  # Lookahead Reasoning's judge of two steps (the reference's --judge_model)
    BASE = "base"  # RAST's big base model
    POSITIVE = "positive"  # RAST's small RL-tuned model
    NEGATIVE = "negative"  # RAST's small model before RL


class FinishReason(Vocabulary):
    """Why a track ended (`TrackRecord.finish_reason`)."""

    ANSWER = "answer"  # a step stated the answer
    BUDGET = "budget"  # the kept steps reached the thinking budget
    REPEAT = "repeat"  # a step repeated the previous one
    MAX_STEPS = "max_steps"  # the track kept --max_steps steps
    EOS = "eos"  # a one-request baseline (or, with --answer_phase, a model) ended the sequence
    THINK_END = "think_end"  # --answer_phase, or a continuous policy: thinking was closed
    PROBE = "probe"  # Dynasor-CoT: the last probes agreed
    CANCELLED = "cancelled"  # stopped by early stop while running
    SKIPPED = "skipped"  # never started: early stop came first
    STOPPED = "stopped"  # a strategy ended it mid-way (DeepConf's online pruning); no answer
    FAILED = "failed"  # an error, kept in `TrackRecord.error`
    # A search's completion ends as its last request did (`StepEnding`): at the token limit, or (DVTS)
    # at a delimiter after the step that stated the answer. Under `--stop_rule rsd` a track ends at a
    # step that hit the token limit (length) or ended the sequence (eos).
    LENGTH = "length"
    DELIMITER = "delimiter"


class StepOutcome(Vocabulary):
    """What became of a step (`StepRecord.outcome`), set by the policy that produced it."""

    WRITTEN = "written"  # one model wrote it and nothing checked it
    ACCEPTED = "accepted"  # a draft was checked (scored, verified) and kept
    REWRITTEN = "rewritten"  # a draft was checked, rejected, and the step written anew by another model
    REPLACED = "replaced"  # a draft was checked against another model's own step and replaced by it
    TAKEN_OVER = "taken_over"  # the policy handed the step to another model without a draft


class StepEnding(Vocabulary):
    """How a step's generation stopped (`StepRecord.ending`)."""

    DELIMITER = "delimiter"  # at the step delimiter
    THINK_END = "think_end"  # at `</think>` (--answer_phase), or a continuous policy ended thinking
    EOS = "eos"  # the model ended its sequence (the seeds keep reasoning after it)
    LENGTH = "length"  # at the request's token limit


# Data sets whose answers are option letters, recognised by name in records that predate
# `ProblemRecord.multiple_choice`.
MULTIPLE_CHOICE_PREFIXES = ("gpqa",)
# Finish reasons of tracks that early stop ended before they had an answer: not samples.
STOPPED_EARLY = (FinishReason.CANCELLED, FinishReason.SKIPPED, FinishReason.STOPPED)
# Outcomes of a draft that was checked: acceptance is ACCEPTED over these.
CHECKED = (StepOutcome.ACCEPTED, StepOutcome.REWRITTEN, StepOutcome.REPLACED)


@dataclass
class ModelUsage:
    """Tokens and requests one model spent, summed over requests."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0

    def add(self, other: ModelUsage) -> None:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        self.requests += other.requests


@dataclass
class RequestCost:
    """One request as the client saw it: who asked (`role`) and why (`purpose`, a
    `engine.serving.models.Purpose`), where it went (`server`, the endpoint URL; None when it was
    cancelled before an endpoint answered) and what it cost.

    `client_s` is how long the client waited, retries included; `started_at`/`ended_at` are wall
    clock (`time.time()`), so a ledger can union the intervals per server. `cached_prompt_tokens`
    is the server's `usage.prompt_tokens_details.cached_tokens` (None when it reports none). The
    server's own timings (`queue_s`, `prefill_s`, `generation_s`) are left None until a server reports
    them. `wasted`: the request's result was thrown away (work done ahead, a draft replaced);
    `cancelled`: it was cancelled in flight, its tokens unknown. `requests` is 1, except where one
    entry stands for many requests to one server (RAST's one-token requests, a sample's each).
    A step judge's requests name the judge that ruled (`judge`, an `engine.reasoning.judges` name)
    and the value it gave (`verdict`: the 0-9 score, or the PRM's reward of the judged step).
    """

    role: str
    purpose: str
    server: str | None
    model: str
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_prompt_tokens: int | None = None
    client_s: float = 0.0
    started_at: float | None = None
    ended_at: float | None = None
    attempts: int = 1
    requests: int = 1
    wasted: bool = False
    cancelled: bool = False
    queue_s: float | None = None
    prefill_s: float | None = None
    generation_s: float | None = None
    judge: str | None = None
    verdict: float | None = None

    @property
    def usage(self) -> ModelUsage:
        return ModelUsage(self.prompt_tokens, self.completion_tokens, self.requests)

    def to_dict(self) -> dict[str, Any]:
        """The fields that differ from their defaults: a run writes one of these per request."""
        return {f.name: getattr(self, f.name) for f in _COST_FIELDS if getattr(self, f.name) != f.default}


_COST_FIELDS = dataclasses.fields(RequestCost)


def thrown_away(costs: Iterable[RequestCost]) -> list[RequestCost]:
    """Copies of `costs` marked wasted: requests whose results were thrown away."""
    return [dataclasses.replace(cost, wasted=True) for cost in costs]


def usage_of_costs(costs: Iterable[RequestCost]) -> dict[str, ModelUsage]:
    """Per role, the tokens and requests of `costs`."""
    total: dict[str, ModelUsage] = {}
    for cost in costs:
        total.setdefault(cost.role, ModelUsage()).add(cost.usage)
    return total


def _charge(costs: Iterable[RequestCost], into: list[RequestCost], used: dict, wasted: dict) -> None:
    for cost in costs:
        into.append(cost)
        (wasted if cost.wasted else used).setdefault(cost.role, ModelUsage()).add(cost.usage)


@dataclass
class StepRecord:
    """One reasoning step as kept in the track.

    `writer` is the model whose text was kept (a `Role`). In `spec` mode `score`
    is the judge's value of the small model's draft (the big model's 0-9, or a PRM's reward in
    [0, 1]: `judge` names it) and `score_distribution`
    the renormalised probabilities of the digits found in the top logprobs; when the draft
    was rejected, `draft` keeps its text. `costs` holds every request made for the step (draft,
    score, rewrite, probe); `usage` sums those whose results the step used, per model; `wasted` those
    thrown away (pipelined speculation: drafts and scores made on top of a rejected draft), see
    `charge`. `detail` holds what a policy records beyond that (SplitReason: why an offloaded span
    ended, the candidates' scores of each round). `outcome` says what became of the step: written,
    a draft accepted, rewritten or replaced, or taken over by another model.
    """

    index: int
    text: str
    writer: str
    tokens: int
    score: float | None = None
    score_distribution: dict[str, float] | None = None
    # The judge that rated the draft (`engine.reasoning.judges`): `score` is its value, 0-9 or a reward.
    judge: str | None = None
    draft: str | None = None
    usage: dict[str, ModelUsage] = field(default_factory=dict)
    latency_s: float = 0.0
    # How the kept text's generation stopped (a `StepEnding`).
    ending: str = ""
    wasted: dict[str, ModelUsage] = field(default_factory=dict)
    detail: dict[str, Any] | None = None
    outcome: str = StepOutcome.WRITTEN
    # Asked for by a strategy that weighs tracks by confidence (`engine.reasoning.confidence`): per
    # generated token, DeepConf's token confidence and the sampled token's own logprob.
    token_confidence: list[float] | None = None
    token_logprob: list[float] | None = None
    costs: list[RequestCost] = field(default_factory=list)

    @property
    def accepted(self) -> bool | None:
        """True when a checked draft was kept, False when it was rewritten or replaced, None when
        no draft was checked."""
        return None if self.outcome not in CHECKED else self.outcome == StepOutcome.ACCEPTED

    def charge(self, costs: Iterable[RequestCost]) -> None:
        """Enter requests made for this step: counted in `usage`, or in `wasted` when thrown away."""
        _charge(costs, self.costs, self.usage, self.wasted)


@dataclass
class TrackRecord:
    """One reasoning track on one problem: its steps, its answer and what it cost.

    `policy` is the step policy that wrote it (`engine.reasoning.policies.POLICIES`); None for the
    completions of a search or RAST's sample, which run no step policy (the problem record's
    `strategy` names what made them). `finish_reason` is a `FinishReason`. `answer_model` wrote the
    answer: the writer of the last step when the answer was taken from the steps, or the answer
    model of --answer_phase. `costs` holds the track's own requests (the answer's; work the policy
    had started ahead when the track ended, wasted); `usage` counts the requests whose results the
    track used (its steps' and its own), `wasted` the work it threw away (its steps' and its own),
    apart from `usage`. A request cancelled mid-generation counts as one request with no tokens: the
    engine does not know how many the server had generated.
    """

    track_id: int
    policy: str | None = None
    role: str | None = None
    method: str | None = None
    seed: int | None = None
    steps: list[StepRecord] = field(default_factory=list)
    answer_text: str = ""
    answer: str | None = None
    answer_model: str | None = None
    finish_reason: str = ""
    error: str | None = None
    usage: dict[str, ModelUsage] = field(default_factory=dict)
    thinking_tokens: int = 0
    answer_tokens: int = 0
    latency_s: float = 0.0
    finished_at: float | None = None
    wasted: dict[str, ModelUsage] = field(default_factory=dict)
    score: float | None = None
    costs: list[RequestCost] = field(default_factory=list)

    @property
    def mean_score(self) -> float | None:
        scores = [s.score for s in self.steps if s.score is not None]
        return sum(scores) / len(scores) if scores else None

    def charge(self, costs: Iterable[RequestCost]) -> None:
        """Enter the track's own requests: counted in `usage`, or in `wasted` when thrown away."""
        _charge(costs, self.costs, self.usage, self.wasted)


@dataclass
class ProblemRecord:
    """Everything a run learned about one (problem, repeat): tracks, votes, choice, timings.

    `runner` names the runner that made it (`runners/`), `strategy` how the problem was solved.
    `costs` holds the requests a strategy made itself (a search's steps and scores, method
    selection); `usage` counts those and every track's.
    """

    run_id: str
    dataset: str
    problem_id: str
    repeat_id: int
    runner: str
    problem: str
    reference_answer: str | None
    tracks: list[TrackRecord] = field(default_factory=list)
    answer: str | None = None
    aggregation: str = "majority"
    votes: dict[str, float] = field(default_factory=dict)
    early_stopped: bool = False
    cancelled_tracks: list[int] = field(default_factory=list)
    tokens_saved: int = 0
    method_selection: dict[str, Any] | None = None
    usage: dict[str, ModelUsage] = field(default_factory=dict)
    latency_s: float = 0.0
    started_at: float = 0.0
    finished_at: float = 0.0
    config_digest: str = ""
    # Whether the answers are option letters; None in records written before spectra stored it.
    multiple_choice: bool | None = None
    # A strategy's own figures (RAST: acceptance per chunk, requests per token, top-k fills; beam
    # search and DVTS: the beams they pruned, `engine.reasoning.search.beams.pruned_details`).
    details: dict[str, Any] | None = None
    # The strategy that produced the record (`engine.reasoning.strategies.STRATEGIES`).
    strategy: str = "vote"
    # An error inside the problem that ended its strategy (a search, RAST): {"kind", "message"}.
    failure: dict[str, str] | None = None
    costs: list[RequestCost] = field(default_factory=list)
    record_version: int = RECORD_VERSION

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.repeat_id)

    @property
    def failed(self) -> bool:
        """The strategy failed, or every track did (servers down, a bug): the problem was not
        really solved, so a resumed run does it again."""
        return self.failure is not None or (
            bool(self.tracks) and all(t.finish_reason == FinishReason.FAILED for t in self.tracks)
        )

    @property
    def is_multiple_choice(self) -> bool:
        """`multiple_choice` as stored, or, for older records, guessed from the data set's name."""
        if self.multiple_choice is not None:
            return self.multiple_choice
        return self.dataset.lower().startswith(MULTIPLE_CHOICE_PREFIXES)

    def to_dict(self) -> dict[str, Any]:
        """The record as plain data; each cost entry keeps only what differs from its defaults."""
        data = dataclasses.asdict(self)
        for owner, record in ((data, self), *_tracks_and_steps(data, self)):
            owner["costs"] = [cost.to_dict() for cost in record.costs]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProblemRecord:
        """A record from its JSON; lines written before version 2 read as they meant (`mode`)."""
        data = dict(data)
        data.setdefault("record_version", 1)
        if "strategy" not in data:
            data["strategy"] = _legacy_strategy(data)
        if "mode" in data:  # version 1: the record's `mode` named the runner
            data.setdefault("runner", data.pop("mode"))
        data["tracks"] = [_track_from_dict(t, data["strategy"]) for t in data.get("tracks", [])]
        data["usage"] = _usage_from_dict(data.get("usage", {}))
        data["costs"] = _costs_from_dict(data.get("costs", []))
        return _built(cls, data)


def _tracks_and_steps(data: dict[str, Any], record: ProblemRecord):
    for track_data, track in zip(data["tracks"], record.tracks, strict=True):
        yield track_data, track
        yield from zip(track_data["steps"], track.steps, strict=True)


def sum_usage(parts: list[dict[str, ModelUsage]]) -> dict[str, ModelUsage]:
    """Per-model usage summed over several records' usage dicts."""
    total: dict[str, ModelUsage] = {}
    for part in parts:
        for model, usage in part.items():
            total.setdefault(model, ModelUsage()).add(usage)
    return total


def _legacy_strategy(data: dict[str, Any]) -> str:
    """The strategy of a record written before records named it: a search scored every completion
    (its tracks' mode is the search), RAST ran under its own runner, everything else voted."""
    tracks = data.get("tracks") or []
    if tracks and all(t.get("score") is not None for t in tracks):
        return tracks[0]["mode"]
    return "rast" if data.get("mode") == "rast" else "vote"


def _built(cls: type[T], data: dict[str, Any]) -> T:
    """`cls` from a line's fields; fields it does not know (a line of a later version's) are dropped.
    Tried whole first: a run reads an entry per request, and filtering each one doubled its reading."""
    try:
        return cls(**data)
    except TypeError:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


def _usage_from_dict(data: dict[str, Any]) -> dict[str, ModelUsage]:
    return {model: ModelUsage(**u) for model, u in data.items()}


def _costs_from_dict(data: list[dict[str, Any]]) -> list[RequestCost]:
    return [_built(RequestCost, cost) for cost in data]


def _track_from_dict(data: dict[str, Any], strategy: str) -> TrackRecord:
    data = dict(data)
    if "mode" in data:
        # Version 1: a track's `mode` named its policy, or, for a search's completions and RAST's
        # sample, the strategy itself (they run no policy).
        mode = data.pop("mode")
        data.setdefault("policy", None if mode == strategy else mode)
    data["steps"] = [_step_from_dict(s) for s in data.get("steps", [])]
    data["usage"] = _usage_from_dict(data.get("usage", {}))
    data["wasted"] = _usage_from_dict(data.get("wasted", {}))
    data["costs"] = _costs_from_dict(data.get("costs", []))
    return _built(TrackRecord, data)


def _step_from_dict(data: dict[str, Any]) -> StepRecord:
    data = dict(data)
    if "outcome" not in data:
        # Written before steps had an outcome: a scored step was a checked draft, kept unless it
        # carries the rejected draft's text.
        scored = data.get("score") is not None
        rewritten = StepOutcome.REWRITTEN if data.get("draft") is not None else StepOutcome.ACCEPTED
        data["outcome"] = rewritten if scored else StepOutcome.WRITTEN
    data["usage"] = _usage_from_dict(data.get("usage", {}))
    data["wasted"] = _usage_from_dict(data.get("wasted", {}))
    data["costs"] = _costs_from_dict(data.get("costs", []))
    return _built(StepRecord, data)
