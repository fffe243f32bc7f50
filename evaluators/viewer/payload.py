"""Graded runs as the compact JSON the viewer page reads.

Keys are short (a run of 500 problems x 16 tracks must stay a file a browser opens at once) and
values left out when empty. Every text is kept exactly as the model or data set wrote it: the page
shows it as text. Which view a problem gets follows its record: search strategies get the tree of
their beams (completions, and the beams beam search and DVTS pruned), RAST its chunks, SplitReason's
policies the text marked by writer, every other vote the step tracks side by side.
"""

from __future__ import annotations

from typing import Any

from engine.data.answers import DEFAULT_TIMEOUT_S
from engine.reasoning.policies import POLICIES
from engine.records import STOPPED_EARLY, FinishReason, ModelUsage, ProblemRecord, StepRecord, TrackRecord
from evaluators import metrics
from evaluators.ledger import ledger_of
from evaluators.runs import Run
from evaluators.search import Completions, is_search_record, selected_indices
from evaluators.summary import GradedRecord, RunSummary
from evaluators.viewer import plots
from evaluators.viewer.settings import changed_flags


def run_payload(run: Run, graded: list[GradedRecord], summary: RunSummary, *, timeout_s: float) -> dict[str, Any]:
    """One run: its config, figures, plots and every problem's trace."""
    manifest = run.manifest
    config = manifest.get("config") or {}
    scored = [float(g.correct) for g in graded if g.correct is not None]
    policy = str(manifest.get("policy") or config.get("policy") or "")
    return {
        "name": run.name,
        "path": str(run.path),
        "runner": manifest.get("runner"),
        "policy": policy,
        "strategy": manifest.get("strategy") or config.get("strategy") or _common(g.record.strategy for g in graded),
        "dataset": run.dataset,
        "models": run.models,
        "flags": [[name, _shown(value), _shown(default)] for name, value, default in changed_flags(manifest)],
        "accuracy": summary.accuracy,
        "ci": metrics.bootstrap_mean_ci(scored) if scored else None,
        "scored": len(scored),
        "records": len(graded),
        "acceptance": summary.steps.acceptance_rate,
        "checked": summary.steps.scored_steps,
        "latency": summary.latency,
        "tokens": summary.tokens.completion_per_record,
        "notes": summary.notes,
        "plots": plots.run_plots(summary, [g.record.latency_s for g in graded]),
        "problems": [problem_payload(g, policy, timeout_s=timeout_s) for g in graded],
    }


def problem_payload(g: GradedRecord, policy: str, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> dict[str, Any]:
    record = g.record
    correct_by_track = dict(zip((t.track_id for t in g.finished_tracks), g.track_correct, strict=False))
    tracks = [track_payload(t, correct_by_track.get(t.track_id)) for t in record.tracks]
    failed = sum(t.finish_reason == FinishReason.FAILED for t in record.tracks)
    out: dict[str, Any] = {
        "id": record.problem_id,
        "rep": record.repeat_id,
        "q": record.problem,
        "ref": record.reference_answer,
        "ans": record.answer,
        "ok": g.correct,
        "st": _status(g),
        "es": record.early_stopped,
        "fail": failed,
        "tok": sum(u.completion_tokens for u in record.usage.values()),
        "use": _usage(record.usage),
        "led": ledger_payload(record),
        "lat": round(record.latency_s, 3),
        "strat": record.strategy,
        "view": _view(record, policy),
        "agg": record.aggregation,
        "votes": record.votes,
        "cancel": record.cancelled_tracks,
        "saved": record.tokens_saved,
        "nt": len(tracks),
        "tracks": tracks,
    }
    details = dict(record.details or {})
    if out["view"] == "search":
        out["pick"] = _search_picks(g, timeout_s)
        if "pruned" in details:  # absent: nothing to prune (best-of-N), or a record from before it was kept
            out["pruned"] = [pruned_payload(entry) for entry in details.pop("pruned")]
    if details:
        out["details"] = details
    if record.method_selection:
        out["msel"] = record.method_selection
    return out


def ledger_payload(record: ProblemRecord) -> dict[str, dict[str, Any]]:
    """Per model role, the record's server time (`evaluators.ledger`): `n` requests, `s` request
    seconds, `c` requests timed by the client alone, `b` busy seconds per server, `ch` the share of
    prompt tokens cached, `q` the queue share; figures no request reported are left out."""
    out = {}
    for role, ledger in ledger_of([record]).items():
        figures = {
            "n": ledger.requests,
            "s": round(ledger.request_s, 4),
            "c": ledger.client_timed or None,
            "b": {server: round(seconds, 4) for server, seconds in ledger.busy_s.items()} or None,
            "ch": ledger.cached_share,
            "q": ledger.queue_share,
        }
        out[role] = {key: value for key, value in figures.items() if value is not None}
    return out


def track_payload(track: TrackRecord, correct: bool | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": track.track_id,
        "label": track.role or track.method or f"track {track.track_id}",
        "fr": track.finish_reason,
        "ans": track.answer,
        "am": track.answer_model,
        "ok": correct,
        "tok": sum(u.completion_tokens for u in track.usage.values()) or track.thinking_tokens + track.answer_tokens,
        "lat": round(track.latency_s, 3),
        "steps": [step_payload(s) for s in track.steps],
    }
    for key, value in (("err", track.error), ("score", track.score), ("atext", _answer_phase(track))):
        if value is not None:
            out[key] = value
    return out


def step_payload(step: StepRecord) -> dict[str, Any]:
    out: dict[str, Any] = {"w": step.writer, "o": step.outcome, "t": step.text, "n": step.tokens}
    optional = (
        ("s", step.score),
        ("j", step.judge),
        ("d", step.score_distribution),
        ("dr", step.draft),
        ("e", step.ending or None),
        ("x", step.detail),
        ("u", _usage(step.usage) or None),
    )
    out.update({key: value for key, value in optional if value is not None})
    return out


def pruned_payload(entry: dict[str, Any]) -> dict[str, Any]:
    """A beam a search pruned (`engine.reasoning.search.beams.pruned_details`): `at` the iteration (from 0),
    `why` the reason, `score` its aggregate score, `from` ["track" or "pruned", its id or index, k]
    when its first k steps are that beam's, and `steps` its own, keyed as a track's steps are."""
    out: dict[str, Any] = {"at": entry["iteration"], "why": entry["reason"], "score": entry.get("score")}
    prefix = entry.get("prefix")
    if prefix:
        kind = "track" if "track" in prefix else "pruned"
        out["from"] = [kind, prefix[kind], prefix["steps"]]
    out["steps"] = [_pruned_step(s) for s in entry.get("steps", [])]
    return out


def _pruned_step(step: dict[str, Any]) -> dict[str, Any]:
    keys = (("t", "text"), ("n", "tokens"), ("s", "score"), ("x", "detail"))
    return {short: step[name] for short, name in keys if step.get(name) is not None}


def _answer_phase(track: TrackRecord) -> str | None:
    """The answer text when an answer phase wrote it apart from the steps (not a copy of them)."""
    steps_text = "".join(s.text for s in track.steps)
    text = track.answer_text
    return text if text and text not in steps_text else None


def _status(g: GradedRecord) -> str:
    if g.record.answer is None:
        return "none"
    if g.correct is None:
        return "unscored"
    return "right" if g.correct else "wrong"


def _view(record: ProblemRecord, policy: str) -> str:
    if is_search_record(record):
        return "search"
    if record.strategy == "rast":
        return "rast"
    # A continuous policy (SplitReason's) writes one text that switches writer mid-way: marked text.
    return "text" if policy in POLICIES and POLICIES[policy].continuous else "steps"


def _search_picks(g: GradedRecord, timeout_s: float) -> dict[str, int | None]:
    """The completion naive, weighted and majority selection pick (indices into the tracks)."""
    tracks = [t for t in g.record.tracks if t.finish_reason not in STOPPED_EARLY]
    if not tracks:
        return {}
    correct = g.track_correct or [False] * len(tracks)
    c = Completions([t.answer for t in tracks], [t.score or 0.0 for t in tracks], correct, g.multiple_choice)
    picked = selected_indices(c, len(tracks), timeout_s)
    position = {i: g.record.tracks.index(t) for i, t in enumerate(tracks)}
    return {selection: None if i is None else position[i] for selection, i in picked.items()}


def _usage(usage: dict[str, ModelUsage]) -> dict[str, list[int]]:
    """Per model: [completion tokens, prompt tokens, requests]."""
    return {m: [u.completion_tokens, u.prompt_tokens, u.requests] for m, u in usage.items()}


def _shown(value: Any) -> Any:
    return value if isinstance(value, str | int | float | bool) or value is None else str(value)


def _common(values: Any) -> str:
    return ",".join(sorted(set(values)))
