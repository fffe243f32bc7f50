"""What a run produces: plain dataclasses, one `ProblemRecord` per (problem, repeat).

Every layer speaks these: the serving layer counts `ModelUsage`, tracks fill `StepRecord` and
`TrackRecord`, strategies return a `ProblemRecord`; `engine.run.store` writes them as JSON lines.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

MODEL_ROLES = ("small", "big")
# Data sets whose answers are option letters, recognised by name in records that predate
# `ProblemRecord.multiple_choice`.
MULTIPLE_CHOICE_PREFIXES = ("gpqa",)
# Finish reasons of tracks that early stop ended before they had an answer: not samples.
STOPPED_EARLY = ("cancelled", "skipped", "stopped")

# What became of a step (`StepRecord.outcome`), set by the policy that produced it.
WRITTEN = "written"  # one model wrote it and nothing checked it
ACCEPTED = "accepted"  # a draft was checked (scored, verified) and kept
REWRITTEN = "rewritten"  # a draft was checked, rejected, and the step written anew by another model
REPLACED = "replaced"  # a draft was checked against another model's own step and replaced by it
TAKEN_OVER = "taken_over"  # the policy handed the step to another model without a draft
STEP_OUTCOMES = (WRITTEN, ACCEPTED, REWRITTEN, REPLACED, TAKEN_OVER)
# Outcomes of a draft that was checked: acceptance is ACCEPTED over these.
CHECKED = (ACCEPTED, REWRITTEN, REPLACED)


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
class StepRecord:
    """One reasoning step as kept in the track.

    `writer` is the model whose text was kept ("small" or "big"). In `spec` mode `score`
    is the big model's 0-9 judgement of the small model's draft and `score_distribution`
    the renormalised probabilities of the digits found in the top logprobs; when the draft
    was rejected, `draft` keeps its text. `usage` counts every request made for the step
    (draft, score, rewrite), per model; `wasted` counts work done ahead for this step and thrown
    away (pipelined speculation: drafts and scores made on top of a rejected draft).
    `detail` holds what a policy records beyond that (SplitReason: why an offloaded span ended,
    the candidates' scores of each round). `outcome` says what became of the step (`STEP_OUTCOMES`):
    written, a draft accepted, rewritten or replaced, or taken over by another model.
    """

    index: int
    text: str
    writer: str
    tokens: int
    score: float | None = None
    score_distribution: dict[str, float] | None = None
    draft: str | None = None
    usage: dict[str, ModelUsage] = field(default_factory=dict)
    latency_s: float = 0.0
    # How the kept text's generation stopped: "delimiter", "eos" (the model ended its sequence;
    # the seeds keep reasoning after it), "think_end" (--answer_phase) or "length".
    ending: str = ""
    wasted: dict[str, ModelUsage] = field(default_factory=dict)
    detail: dict[str, Any] | None = None
    outcome: str = WRITTEN
    # Asked for by a strategy that weighs tracks by confidence (`engine.reasoning.confidence`): per
    # generated token, DeepConf's token confidence and the sampled token's own logprob.
    token_confidence: list[float] | None = None
    token_logprob: list[float] | None = None

    @property
    def accepted(self) -> bool | None:
        """True when a checked draft was kept, False when it was rewritten or replaced, None when
        no draft was checked."""
        return None if self.outcome not in CHECKED else self.outcome == ACCEPTED


@dataclass
class TrackRecord:
    """One reasoning track on one problem: its steps, its answer and what it cost.

    `finish_reason` is one of: "answer" (a step stated the answer), "budget" (the kept steps
    reached the thinking budget), "repeat" (a step repeated the previous one), "eos" (a
    one-request baseline ended without stating an answer; with --answer_phase, a model ended
    the sequence), "think_end" (--answer_phase: the model closed thinking), "cancelled"
    (stopped by early stop), "skipped" (never started: early stop came first under
    --tracks_in_flight; no tokens), "stopped" (a strategy ended it mid-way: DeepConf's online
    pruning of a low-confidence trace; no answer), "failed" (an error, kept in `error`). `answer_model`
    wrote the answer: the writer of the last step when the answer was taken from the steps, or
    the answer model of --answer_phase. `usage` counts the requests whose results the track used;
    `wasted` the work it threw away (its steps' `wasted`, and the work ahead cancelled when it
    ended), apart from `usage`. A request cancelled mid-generation counts as one request with
    no tokens: the engine does not know how many the server had generated.
    """

    track_id: int
    mode: str
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

    @property
    def mean_score(self) -> float | None:
        scores = [s.score for s in self.steps if s.score is not None]
        return sum(scores) / len(scores) if scores else None


@dataclass
class ProblemRecord:
    """Everything a run learned about one (problem, repeat): tracks, votes, choice, timings."""

    run_id: str
    dataset: str
    problem_id: str
    repeat_id: int
    mode: str
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

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.repeat_id)

    @property
    def failed(self) -> bool:
        """The strategy failed, or every track did (servers down, a bug): the problem was not
        really solved, so a resumed run does it again."""
        return self.failure is not None or (bool(self.tracks) and all(t.finish_reason == "failed" for t in self.tracks))

    @property
    def is_multiple_choice(self) -> bool:
        """`multiple_choice` as stored, or, for older records, guessed from the data set's name."""
        if self.multiple_choice is not None:
            return self.multiple_choice
        return self.dataset.lower().startswith(MULTIPLE_CHOICE_PREFIXES)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ProblemRecord:
        data = dict(data)
        data.setdefault("strategy", _legacy_strategy(data))
        data["tracks"] = [_track_from_dict(t) for t in data.get("tracks", [])]
        data["usage"] = _usage_from_dict(data.get("usage", {}))
        return cls(**_known_fields(cls, data))


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


def _known_fields(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


def _usage_from_dict(data: dict[str, Any]) -> dict[str, ModelUsage]:
    return {model: ModelUsage(**u) for model, u in data.items()}


def _track_from_dict(data: dict[str, Any]) -> TrackRecord:
    data = dict(data)
    data["steps"] = [_step_from_dict(s) for s in data.get("steps", [])]
    data["usage"] = _usage_from_dict(data.get("usage", {}))
    data["wasted"] = _usage_from_dict(data.get("wasted", {}))
    return TrackRecord(**_known_fields(TrackRecord, data))


def _step_from_dict(data: dict[str, Any]) -> StepRecord:
    data = dict(data)
    if "outcome" not in data:
        # Written before steps had an outcome: a scored step was a checked draft, kept unless it
        # carries the rejected draft's text.
        scored = data.get("score") is not None
        data["outcome"] = (REWRITTEN if data.get("draft") is not None else ACCEPTED) if scored else WRITTEN
    data["usage"] = _usage_from_dict(data.get("usage", {}))
    data["wasted"] = _usage_from_dict(data.get("wasted", {}))
    return StepRecord(**_known_fields(StepRecord, data))
