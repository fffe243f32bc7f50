"""What a run produces: plain dataclasses, written as one JSON line per (problem, repeat).

A run folder holds `manifest.json` (the config, model ids, package versions) and
`records.jsonl` (one `ProblemRecord` a line). Every line is written whole and flushed to
disk, so a crash leaves at most a partial last line; `read_records` reports and skips it.
While a runner uses the folder it holds its lock (`engine.folder_lock`): one runner per folder.
"""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import structlog

from engine.errors import UsageError

log = structlog.get_logger(__name__)

RECORDS_FILE = "records.jsonl"
MANIFEST_FILE = "manifest.json"

MODEL_ROLES = ("small", "big")
# Data sets whose answers are option letters, recognised by name in records that predate
# `ProblemRecord.multiple_choice`.
MULTIPLE_CHOICE_PREFIXES = ("gpqa",)
# Finish reasons of tracks that early stop ended before they had an answer: not samples.
STOPPED_EARLY = ("cancelled", "skipped")


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
    the candidates' scores of each round).
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

    @property
    def accepted(self) -> bool | None:
        """True when a scored draft was kept, False when it was rewritten, None if unscored."""
        return None if self.score is None else self.draft is None


@dataclass
class TrackRecord:
    """One reasoning track on one problem: its steps, its answer and what it cost.

    `finish_reason` is one of: "answer" (a step stated the answer), "budget" (the kept steps
    reached the thinking budget), "repeat" (a step repeated the previous one), "eos" (a
    one-request baseline ended without stating an answer; with --answer_phase, a model ended
    the sequence), "think_end" (--answer_phase: the model closed thinking), "cancelled"
    (stopped by early stop), "skipped" (never started: early stop came first under
    --tracks_in_flight; no tokens), "failed" (an error, kept in `error`). `answer_model`
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
    # A strategy's own figures (RAST: acceptance per chunk, requests per token, top-k fills).
    details: dict[str, Any] | None = None

    @property
    def key(self) -> tuple[str, int]:
        return (self.problem_id, self.repeat_id)

    @property
    def all_tracks_failed(self) -> bool:
        """Every track failed (servers down, a bug): the problem was not really solved, so a
        resumed run does it again."""
        return bool(self.tracks) and all(t.finish_reason == "failed" for t in self.tracks)

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
    data["usage"] = _usage_from_dict(data.get("usage", {}))
    data["wasted"] = _usage_from_dict(data.get("wasted", {}))
    return StepRecord(**_known_fields(StepRecord, data))


@dataclass
class ReadResult:
    """Records read from a file, and the lines that could not be read (1-based numbers)."""

    records: list[ProblemRecord]
    bad_lines: list[tuple[int, str]]
    partial_tail: bool


def read_records(path: Path) -> ReadResult:
    """Read a records file. Malformed lines are reported, not fatal.

    A last line without its newline is a write cut short by a crash: `partial_tail` says so.
    """
    records: list[ProblemRecord] = []
    bad: list[tuple[int, str]] = []
    if not path.exists():
        return ReadResult(records, bad, False)
    raw = path.read_bytes()
    partial_tail = bool(raw) and not raw.endswith(b"\n")
    for number, line in enumerate(raw.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(ProblemRecord.from_dict(json.loads(line)))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            bad.append((number, f"{type(exc).__name__}: {exc}"))
    return ReadResult(records, bad, partial_tail)


def append_record(path: Path, record: ProblemRecord) -> None:
    """Append one record as one complete line and force it to disk."""
    line = json.dumps(record.to_dict(), ensure_ascii=False) + "\n"
    with path.open("a", encoding="utf-8") as handle:
        handle.write(line)
        handle.flush()
        os.fsync(handle.fileno())


class RunStore:
    """A run folder: its manifest and its records, opened for a run that may be a resume.

    Opening it keeps the finished records, sets aside lines a crash cut short (the original
    file is kept beside it as `records.jsonl.damaged-<time>`), and refuses a folder whose
    manifest has another config digest, or another `--shard`, unless `overwrite` (then the old
    files are kept as `*.replaced-<time>`). The caller holds the folder's lock (`engine.folder_lock`).
    """

    def __init__(self, folder: Path, manifest: dict[str, Any], done: set[tuple[str, int]]):
        self.folder = folder
        self.manifest = manifest
        self.done = done

    @property
    def records_path(self) -> Path:
        return self.folder / RECORDS_FILE

    @staticmethod
    def finished_keys(folder: Path, manifest: dict[str, Any], *, overwrite: bool = False) -> set[tuple[str, int]]:
        """The (problem, repeat) pairs a run in `folder` has finished, read without writing anything.
        A record whose tracks all failed is not finished: the next run redoes it (and its new line
        supersedes the old one).

        Raises UsageError when the folder holds a run of another config and `overwrite` is off.
        """
        manifest_path = folder / MANIFEST_FILE
        if manifest_path.exists():
            old = _read_manifest(manifest_path)
            if old.get("config_digest") != manifest["config_digest"]:
                if not overwrite:
                    raise UsageError(
                        f"{folder} holds a run with another config (digest {old.get('config_digest')}, now "
                        f"{manifest['config_digest']}); use a new --output_dir, or --overwrite to replace it"
                    )
                return set()
            if old.get("shard") != manifest.get("shard"):
                if not overwrite:
                    raise UsageError(
                        f"{folder} holds {_shard_name(old)} of this config, not {_shard_name(manifest)}; "
                        "give each shard its own --output_dir, or --overwrite to replace it"
                    )
                return set()
        return finished_keys(read_records(folder / RECORDS_FILE).records)

    @classmethod
    def open(cls, folder: Path, manifest: dict[str, Any], *, overwrite: bool = False) -> RunStore:
        cls.finished_keys(folder, manifest, overwrite=overwrite)
        folder.mkdir(parents=True, exist_ok=True)
        manifest_path, records_path = folder / MANIFEST_FILE, folder / RECORDS_FILE
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S-%f")  # unique even for two in one second
        if manifest_path.exists():
            old = _read_manifest(manifest_path)
            if (old.get("config_digest"), old.get("shard")) != (manifest["config_digest"], manifest.get("shard")):
                for path in (manifest_path, records_path):
                    if path.exists():
                        path.rename(path.with_name(f"{path.name}.replaced-{stamp}"))
            else:
                manifest = {**manifest, "run_id": old.get("run_id", manifest["run_id"])}
        read = read_records(records_path)
        if read.bad_lines or read.partial_tail:
            kept = records_path.with_name(f"{RECORDS_FILE}.damaged-{stamp}")
            shutil.copyfile(records_path, kept)
            _write_atomically(
                records_path, "".join(json.dumps(r.to_dict(), ensure_ascii=False) + "\n" for r in read.records)
            )
            log.warning(
                "damaged_records_set_aside",
                bad_lines=[n for n, _ in read.bad_lines],
                partial_tail=read.partial_tail,
                original=str(kept),
            )
        _write_atomically(manifest_path, json.dumps(manifest, indent=2, ensure_ascii=False) + "\n")
        # Keys only: a long run must not hold every record it wrote in memory.
        return cls(folder, manifest, finished_keys(read.records))

    def append(self, record: ProblemRecord) -> None:
        append_record(self.records_path, record)
        if not record.all_tracks_failed:
            self.done.add(record.key)


def finished_keys(records: list[ProblemRecord]) -> set[tuple[str, int]]:
    """The keys whose latest record is finished (not every track failed)."""
    latest = {r.key: r for r in records}
    return {key for key, r in latest.items() if not r.all_tracks_failed}


def _shard_name(manifest: dict[str, Any]) -> str:
    shard = manifest.get("shard")
    return f"shard {shard['index']}/{shard['count']}" if shard else "the whole run (no --shard)"


def _read_manifest(path: Path) -> dict[str, Any]:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise UsageError(f"{path} is not valid JSON ({exc}); move it away or use --overwrite") from exc


def _write_atomically(path: Path, text: str) -> None:
    temporary = path.with_name(path.name + ".tmp")
    with temporary.open("w", encoding="utf-8") as handle:
        handle.write(text)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(temporary, path)
