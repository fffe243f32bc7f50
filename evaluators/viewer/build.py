"""Runs -> the viewer file: grade each run as the evaluators do, put its payload in the page, and,
for two runs, list the problems where one is right and the other wrong."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import structlog

from engine.data.answers import DEFAULT_TIMEOUT_S
from evaluators import summary
from evaluators.runs import Run
from evaluators.summary import GradedRecord, RunSummary
from evaluators.viewer import page
from evaluators.viewer.payload import run_payload

log = structlog.get_logger(__name__)

VIEWER_FILE = "viewer.html"


def write_viewer(
    out: Path,
    runs: list[Run],
    graded: list[list[GradedRecord]] | None = None,
    summaries: list[RunSummary] | None = None,
    *,
    timeout_s: float = DEFAULT_TIMEOUT_S,
) -> Path:
    """Write the viewer of `runs` to `out`; grades and summaries are computed when not given."""
    graded = graded or [summary.grade_run(one, timeout_s=timeout_s) for one in runs]
    if summaries is None:
        summaries = [summary.summarize_run(one, g, timeout_s=timeout_s) for one, g in zip(runs, graded, strict=True)]
    payloads = [run_payload(one, g, s, timeout_s=timeout_s) for one, g, s in zip(runs, graded, summaries, strict=True)]
    plots = [p.pop("plots") for p in payloads]
    # The traces are most of the file: apart, the page unpacks a problem's when it shows it.
    traces = [[_trace(problem) for problem in p["problems"]] for p in payloads]
    data: dict[str, Any] = {"runs": payloads, "compare": None, "common": 0}
    if len(payloads) == 2:
        data["compare"], data["common"] = disagreements(payloads[0]["problems"], payloads[1]["problems"])
    title = "spectra viewer: " + " vs ".join(one.name for one in runs)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page.render(data, traces, plots, title), encoding="utf-8")
    log.info("viewer_written", path=str(out), runs=len(runs), bytes=out.stat().st_size)
    return out


def disagreements(first: list[dict[str, Any]], second: list[dict[str, Any]]) -> tuple[list[list[int]], int]:
    """([index in first, index in second] of each (problem, repeat) right in one run and wrong in
    the other, in the first run's order; how many (problem, repeat) both graded)."""
    graded_second = {(p["id"], p["rep"]): j for j, p in enumerate(second) if p["ok"] is not None}
    pairs, common = [], 0
    for i, p in enumerate(first):
        j = graded_second.get((p["id"], p["rep"]))
        if j is None or p["ok"] is None:
            continue
        common += 1
        if p["ok"] != second[j]["ok"]:
            pairs.append([i, j])
    return pairs, common


def _trace(problem: dict[str, Any]) -> dict[str, Any]:
    """What of a problem's payload is packed apart: its tracks, and a search's pruned beams."""
    trace = {"tracks": problem.pop("tracks")}
    if "pruned" in problem:
        trace["pruned"] = problem.pop("pruned")
    return trace
