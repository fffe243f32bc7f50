"""Outputs of an evaluation: the JSON summary, and a Markdown report with PNG plots.

Plots are drawn on `matplotlib.figure.Figure` objects with the Agg canvas, never through
pyplot, so no display and no global pyplot state are involved.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from evaluators import compare, summary
from evaluators.compare import Comparison
from evaluators.metrics import SCORE_BINS
from evaluators.search import SELECTIONS
from evaluators.summary import RunSummary
from evaluators.tables import Table, render_markdown

SUMMARY_FILE = "summary.json"
REPORT_FILE = "report.md"


def summary_json(summaries: list[RunSummary], comparisons: list[Comparison], baseline: str | None) -> dict[str, Any]:
    """The whole evaluation as JSON-ready data: one entry per run, one per comparison."""
    return {
        "runs": [dataclasses.asdict(s) for s in summaries],
        "baseline": baseline,
        "comparisons": [dataclasses.asdict(c) for c in comparisons],
    }


def json_text(data: dict[str, Any]) -> str:
    """The summary as indented JSON text, ending in a newline."""
    return json.dumps(data, indent=2, ensure_ascii=False) + "\n"


def write_report(
    out_dir: Path,
    summaries: list[RunSummary],
    comparisons: list[Comparison],
    tables: list[Table],
    baseline: str | None,
    *,
    viewer: Path | None = None,
) -> Path:
    """Write report.md, summary.json and the plots into `out_dir`; return the report's path.
    `viewer`: the trace viewer's file, linked from the report."""
    out_dir.mkdir(parents=True, exist_ok=True)
    plots = [
        ("Accuracy against latency", plot_accuracy_latency(out_dir / "accuracy_latency.png", summaries, baseline)),
        ("Tokens per model", plot_tokens_per_model(out_dir / "tokens_per_model.png", summaries)),
    ]
    if any(s.steps.scored_steps for s in summaries):
        plots.append(("Step scores", plot_score_histogram(out_dir / "score_histogram.png", summaries)))
    if any(s.search is not None for s in summaries):
        plots.append(("Search: accuracy against N", plot_search_scaling(out_dir / "search_scaling.png", summaries)))
    (out_dir / SUMMARY_FILE).write_text(json_text(summary_json(summaries, comparisons, baseline)), encoding="utf-8")
    report_path = out_dir / REPORT_FILE
    report_path.write_text(_markdown(summaries, tables, plots, viewer), encoding="utf-8")
    return report_path


def _markdown(
    summaries: list[RunSummary], tables: list[Table], plots: list[tuple[str, Path]], viewer: Path | None
) -> str:
    parts = ["# Evaluation report", ""]
    if viewer is not None:
        parts += [f"Every problem's trace, step by step: [{viewer.name}]({viewer.name}) (open it in a browser).", ""]
    parts += ["## Runs", ""]
    for s in summaries:
        models = ", ".join(f"{role}: `{model}`" for role, model in s.models.items()) or "not recorded"
        parts.append(f"- **{s.name}** (`{s.path}`): method `{s.method}`, data set `{s.dataset}`, models {models}")
        parts += [f"  - {note}" for note in _data_notes(s)]
    parts += ["", "## Results", ""]
    for table in tables:
        parts += [render_markdown(table), ""]
    parts += ["## Plots", ""]
    for title, path in plots:
        parts += [f"### {title}", "", f"![{title}]({path.name})", ""]
    parts += ["## Definitions", "", (summary.__doc__ or "").strip(), "", (compare.__doc__ or "").strip(), ""]
    return "\n".join(parts)


def _data_notes(s: RunSummary) -> list[str]:
    notes = list(s.notes)
    if s.skipped_lines:
        notes.append(f"{s.skipped_lines} malformed line(s) in records.jsonl skipped")
    if s.partial_tail:
        notes.append("records.jsonl ends in a line cut short (the run stopped mid-write)")
    if s.duplicates:
        notes.append(f"{s.duplicates} duplicate record(s) of a (problem, repeat); the last was kept")
    return notes


def _new_figure(width: float = 6.4, height: float = 4.4) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def plot_accuracy_latency(path: Path, summaries: list[RunSummary], baseline: str | None) -> Path:
    """Each run as a point: mean latency per record against accuracy, spread over repeats as bars."""
    figure = _new_figure()
    axes = figure.add_subplot()
    for s in summaries:
        if s.accuracy is None or s.latency["mean"] is None:
            continue
        marker = "*" if s.name == baseline else "o"
        accuracy, std = 100 * s.accuracy, 100 * (s.accuracy_std or 0.0)
        # Bars of one standard deviation, cut at 0% and 100%.
        spread = [[min(std, accuracy)], [min(std, 100 - accuracy)]]
        axes.errorbar(s.latency["mean"], accuracy, yerr=spread, fmt=marker, markersize=9, capsize=4)
        axes.annotate(s.name, (s.latency["mean"], 100 * s.accuracy), textcoords="offset points", xytext=(6, 6))
    axes.set_xlabel("mean latency per record (s)")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 105)
    axes.set_xlim(left=0)
    axes.set_title("Accuracy against latency")
    axes.grid(alpha=0.3)
    figure.savefig(path, dpi=120)
    return path


def plot_tokens_per_model(path: Path, summaries: list[RunSummary]) -> Path:
    """Stacked bars: completion tokens per record, one segment per model."""
    figure = _new_figure()
    axes = figure.add_subplot()
    names = [s.name for s in summaries]
    models = list(dict.fromkeys(m for s in summaries for m in s.tokens.completion_per_record))
    bottoms = [0.0] * len(summaries)
    for model in models:
        heights = [s.tokens.completion_per_record.get(model, 0.0) for s in summaries]
        axes.bar(names, heights, bottom=bottoms, label=model)
        bottoms = [b + h for b, h in zip(bottoms, heights, strict=True)]
    axes.set_ylabel("completion tokens per record")
    axes.set_title("Tokens per model")
    if models:
        axes.legend()
    axes.tick_params(axis="x", labelrotation=20)
    figure.savefig(path, dpi=120)
    return path


def plot_score_histogram(path: Path, summaries: list[RunSummary]) -> Path:
    """Grouped bars: share of scored steps in each score bin 0-9, one colour per run."""
    figure = _new_figure()
    axes = figure.add_subplot()
    scored = [s for s in summaries if s.steps.scored_steps]
    width = 0.8 / len(scored)
    for index, s in enumerate(scored):
        shares = [100 * count / s.steps.scored_steps for count in s.steps.score_histogram]
        positions = [b - 0.4 + width * (index + 0.5) for b in range(SCORE_BINS)]
        axes.bar(positions, shares, width=width, label=s.name)
    axes.set_xticks(range(SCORE_BINS))
    axes.set_xlabel("step score (floor; a PRM's reward in tenths)")
    axes.set_ylabel("share of scored steps (%)")
    axes.set_title("Scores of drafted steps")
    axes.legend()
    figure.savefig(path, dpi=120)
    return path


def plot_search_scaling(path: Path, summaries: list[RunSummary]) -> Path:
    """Accuracy against the number of completions N (log 2 axis), one line per run and selection:
    the figure of search-and-learn's blog post."""
    figure = _new_figure(7.2, 4.8)
    axes = figure.add_subplot()
    styles = dict(zip(SELECTIONS, ("o-", "s-", "^--", ":"), strict=True))
    all_ks: set[int] = set()
    for s in summaries:
        if s.search is None:
            continue
        for selection, by_k in s.search.accuracy_at_k.items():
            if by_k:
                ks = sorted(by_k)
                all_ks.update(ks)
                label = f"{s.name} ({s.search.strategy}): {selection}"
                axes.plot(ks, [100 * by_k[k] for k in ks], styles[selection], label=label)
    axes.set_xscale("log", base=2)
    axes.set_xticks(sorted(all_ks), [str(k) for k in sorted(all_ks)])
    axes.set_xlabel("number of completions N")
    axes.set_ylabel("accuracy (%)")
    axes.set_ylim(0, 105)
    axes.set_title("Accuracy against N per strategy")
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.savefig(path, dpi=120)
    return path
