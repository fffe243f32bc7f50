"""Runs against a baseline run, on the problems both ran.

Each figure is paired by problem. Per problem, a run's accuracy is the share of its scored
repeats answered correctly, its latency the mean `latency_s` of its repeats and its cost
the mean completion tokens (all models) of its repeats.

- speedup = baseline mean latency / run mean latency, over the common problems (> 1: faster).
- token_ratio = run mean tokens / baseline mean tokens, over the common problems (< 1: cheaper).
- request_s_ratio = the same for request seconds, the server time of every request (`evaluators.ledger`);
  None when the baseline's records hold none (written before requests were entered one by one).
- accuracy_diff = run accuracy - baseline accuracy over the problems both scored, with a
  paired percentile bootstrap 95% interval (problems resampled with replacement).
- concurrency_note says how the two runs' concurrency (problems and tracks in flight, requests
  per server, replicas; from their manifests) differs: latencies measured under different load
  are not comparable (the papers ran one problem at a time).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from engine.errors import UsageError
from evaluators import metrics
from evaluators.ledger import request_seconds
from evaluators.summary import GradedRecord


@dataclass
class ProblemFigures:
    """One problem of one run, its repeats averaged; `accuracy` None when none was scored."""

    accuracy: float | None
    latency_s: float
    completion_tokens: float
    request_s: float = 0.0


@dataclass
class Comparison:
    """One run against the baseline; see the module docstring for definitions."""

    run: str
    baseline: str
    common_problems: int
    scored_common_problems: int
    speedup: float | None
    token_ratio: float | None
    accuracy_diff: float | None
    accuracy_diff_ci: tuple[float, float] | None
    concurrency_note: str | None = None
    request_s_ratio: float | None = None


def problem_figures(graded: list[GradedRecord]) -> dict[str, ProblemFigures]:
    """Per problem id: accuracy, latency and completion tokens averaged over its repeats."""
    by_problem: dict[str, list[GradedRecord]] = defaultdict(list)
    for g in graded:
        by_problem[g.record.problem_id].append(g)
    figures = {}
    for problem_id, repeats in by_problem.items():
        scored = [float(g.correct) for g in repeats if g.correct is not None]
        figures[problem_id] = ProblemFigures(
            accuracy=metrics.mean(scored),
            latency_s=sum(g.record.latency_s for g in repeats) / len(repeats),
            completion_tokens=sum(_completion_tokens(g) for g in repeats) / len(repeats),
            request_s=sum(request_seconds(g.record) for g in repeats) / len(repeats),
        )
    return figures


def _completion_tokens(graded: GradedRecord) -> int:
    return sum(u.completion_tokens for u in graded.record.usage.values())


def compare(
    name: str,
    run: dict[str, ProblemFigures],
    baseline_name: str,
    baseline: dict[str, ProblemFigures],
    *,
    resamples: int = 2000,
    concurrency_note: str | None = None,
) -> Comparison:
    """Compare one run's per-problem figures with the baseline's."""
    common = sorted(run.keys() & baseline.keys())
    scored = [p for p in common if run[p].accuracy is not None and baseline[p].accuracy is not None]
    diffs = [run[p].accuracy - baseline[p].accuracy for p in scored]
    run_latency = sum(run[p].latency_s for p in common)
    base_latency = sum(baseline[p].latency_s for p in common)
    run_tokens = sum(run[p].completion_tokens for p in common)
    base_tokens = sum(baseline[p].completion_tokens for p in common)
    run_seconds = sum(run[p].request_s for p in common)
    base_seconds = sum(baseline[p].request_s for p in common)
    return Comparison(
        run=name,
        baseline=baseline_name,
        common_problems=len(common),
        scored_common_problems=len(scored),
        speedup=metrics.ratio(base_latency, run_latency) if common else None,
        token_ratio=metrics.ratio(run_tokens, base_tokens) if common else None,
        accuracy_diff=metrics.mean(diffs),
        accuracy_diff_ci=metrics.bootstrap_mean_ci(diffs, resamples=resamples),
        concurrency_note=concurrency_note,
        request_s_ratio=metrics.ratio(run_seconds, base_seconds) if common else None,
    )


CONCURRENCY_KEYS = ("max_problems_in_flight", "max_tracks_in_flight", "max_in_flight_per_endpoint", "replicas")


def concurrency_difference(run_manifest: dict[str, Any], baseline_manifest: dict[str, Any]) -> str | None:
    """How two runs' recorded concurrency differs ("max_problems_in_flight 8 vs 1; ..."), or None
    when it is the same or either run predates the record."""
    run, base = run_manifest.get("concurrency"), baseline_manifest.get("concurrency")
    if not isinstance(run, dict) or not isinstance(base, dict):
        return None
    differing = [
        f"{key} {run.get(key)} vs {base.get(key)}" for key in CONCURRENCY_KEYS if run.get(key) != base.get(key)
    ]
    return "; ".join(differing) or None


def pick_baseline(choice: str, runs: list[tuple[str, Path]]) -> int:
    """Index of the baseline among (name, path) runs; `choice` is a run's path or name.

    Raises UsageError naming the runs when none matches.
    """
    chosen = Path(choice).resolve()
    for index, (name, path) in enumerate(runs):
        if path.resolve() == chosen or name == choice:
            return index
    names = ", ".join(name for name, _ in runs)
    raise UsageError(f"unknown baseline {choice!r}: give one of the evaluated runs ({names}) or its folder")
