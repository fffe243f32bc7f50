"""The run page's small plots as inline SVG text: tokens per model, the latency distribution, the
scores of checked drafts. Labels are escaped: model names come from the manifest."""

from __future__ import annotations

from html import escape

from engine.records import Role
from evaluators.summary import RunSummary

WIDTH, BAR_HEIGHT, LABEL_WIDTH = 320, 18, 90
COLOURS = {Role.SMALL: "#3b82c4", Role.BIG: "#e08a1e"}
OTHER_COLOUR = "#7a7a7a"
HISTOGRAM_BINS = 12


def run_plots(summary: RunSummary, latencies: list[float]) -> dict[str, str]:
    """SVG text of each plot the run has data for, keyed by "tokens", "latency", "scores"."""
    out = {}
    if summary.tokens.completion_per_record:
        out["tokens"] = bars(summary.tokens.completion_per_record, "completion tokens per problem")
    if latencies:
        out["latency"] = histogram(latencies, "seconds per problem")
    if summary.steps.scored_steps:
        counts = dict(enumerate(summary.steps.score_histogram))
        out["scores"] = columns(
            {str(k): float(v) for k, v in counts.items()},
            "judge score of checked drafts (0-9; a PRM's reward in tenths)",
        )
    return out


def bars(values: dict[str, float], caption: str) -> str:
    """Horizontal bars, one per key, coloured by model role."""
    top = max(values.values()) or 1.0
    rows = []
    for i, (label, value) in enumerate(values.items()):
        y = i * (BAR_HEIGHT + 6)
        length = (WIDTH - LABEL_WIDTH - 60) * value / top
        colour = COLOURS.get(label, OTHER_COLOUR)
        rows.append(
            f'<text x="0" y="{y + 13}">{escape(label[:14])}</text>'
            f'<rect x="{LABEL_WIDTH}" y="{y}" width="{length:.1f}" height="{BAR_HEIGHT}" fill="{colour}"/>'
            f'<text x="{LABEL_WIDTH + length + 4:.1f}" y="{y + 13}">{value:,.0f}</text>'
        )
    height = len(values) * (BAR_HEIGHT + 6) + 18
    return _svg(height, "".join(rows), caption)


def histogram(values: list[float], caption: str) -> str:
    """Counts of values in equal bins from the least to the largest, with the range on the axis."""
    low, high = min(values), max(values)
    span = (high - low) or 1.0
    counts = [0] * HISTOGRAM_BINS
    for v in values:
        counts[min(int((v - low) / span * HISTOGRAM_BINS), HISTOGRAM_BINS - 1)] += 1
    body = _columns_body(counts, [])
    body += f'<text x="0" y="112">{low:.2f}</text><text x="{WIDTH}" y="112" text-anchor="end">{high:.2f}</text>'
    return _svg(118, body, caption)


def columns(values: dict[str, float], caption: str) -> str:
    """Vertical columns labelled by their keys."""
    return _svg(118, _columns_body(list(values.values()), list(values)), caption)


def _columns_body(counts: list[float], labels: list[str]) -> str:
    top = max(counts) or 1
    width = WIDTH / len(counts)
    parts = []
    for i, count in enumerate(counts):
        height = 80 * count / top
        x = i * width
        parts.append(
            f'<rect x="{x + 1:.1f}" y="{92 - height:.1f}" width="{width - 2:.1f}" height="{height:.1f}" fill="#5b8c5a">'
            f"<title>{count:g}</title></rect>"
        )
        if labels:
            parts.append(f'<text x="{x + width / 2:.1f}" y="106" text-anchor="middle">{escape(labels[i])}</text>')
        if count:
            parts.append(f'<text x="{x + width / 2:.1f}" y="{88 - height:.1f}" text-anchor="middle">{count:g}</text>')
    return "".join(parts)


def _svg(height: int, body: str, caption: str) -> str:
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" class="plot" width="{WIDTH + 40}" height="{height + 16}" '
        f'viewBox="-4 -14 {WIDTH + 40} {height + 16}" role="img" aria-label="{escape(caption)}">'
        f'<text x="0" y="-3" class="cap">{escape(caption)}</text>{body}</svg>'
    )
