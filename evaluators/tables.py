"""The evaluation as tables of text cells, rendered for a terminal or as Markdown."""

from __future__ import annotations

from dataclasses import dataclass

from engine.records import Role
from evaluators.compare import Comparison
from evaluators.search import SELECTIONS
from evaluators.summary import RunSummary

DASH = "-"
# Accuracy of a run none of whose records has a reference answer (API traffic, unlabelled data).
NOT_APPLICABLE = "n/a"


@dataclass
class Table:
    title: str
    headers: list[str]
    rows: list[list[str]]


def pct(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:.1f}%"


def num(value: float | None, digits: int = 1) -> str:
    return DASH if value is None else f"{value:,.{digits}f}"


def accuracy_table(summaries: list[RunSummary]) -> Table:
    rows = []
    for s in summaries:
        spread = DASH if s.accuracy_mean is None else f"{pct(s.accuracy_mean)} ± {pct(s.accuracy_std)}"
        skipped = str(s.skipped_lines) + (" (cut tail)" if s.partial_tail else "")
        rows.append(
            [
                s.name,
                s.method,
                s.dataset,
                f"{s.problems} x {s.repeats}",
                f"{s.scored_records}/{s.records}",
                pct(s.accuracy) if s.scored_records else NOT_APPLICABLE,
                spread,
                pct(s.track_accuracy),
                skipped,
            ]
        )
    headers = ["run", "method", "data set", "problems x repeats", "scored", "accuracy"]
    headers += ["mean ± std over repeats", "track accuracy", "skipped lines"]
    return Table("Accuracy (voted answer)", headers, rows)


def k_table(summaries: list[RunSummary]) -> Table:
    ks = sorted(
        {k for s in summaries for d in (s.pass_at_k_tracks, s.pass_at_k_repeats, s.pass_at_k_sampled) for k in d}
        | {k for s in summaries for d in (s.maj_at_k_tracks, s.maj_at_k_repeats, s.maj_at_k_sampled) for k in d}
    )
    rows = []
    for s in summaries:
        for over, passes, majs in (
            ("tracks", s.pass_at_k_tracks, s.maj_at_k_tracks),
            ("repeats", s.pass_at_k_repeats, s.maj_at_k_repeats),
            ("repeats, sampled (RAST)", s.pass_at_k_sampled, s.maj_at_k_sampled),
        ):
            if passes or majs:
                rows.append([s.name, over] + [pct(passes.get(k)) for k in ks] + [pct(majs.get(k)) for k in ks])
    headers = ["run", "over"] + [f"pass@{k}" for k in ks] + [f"maj@{k}" for k in ks]
    return Table("pass@k and maj@k", headers, rows)


def track_table(summaries: list[RunSummary]) -> Table:
    rows = [
        [s.name, label, str(int(figures["tracks"])), pct(figures["accuracy"])]
        for s in summaries
        for label, figures in s.track_accuracy_by_label.items()
    ]
    return Table("Accuracy per track", ["run", "track", "finished tracks", "accuracy"], rows)


def cost_table(summaries: list[RunSummary]) -> Table:
    rows = []
    for s in summaries:
        t = s.tokens
        rows.append(
            [
                s.name,
                num(s.latency["mean"], 2),
                num(s.latency["p50"], 2),
                num(s.latency["p95"], 2),
                num(t.total_completion_per_record, 0),
                num(t.completion_per_record.get(Role.SMALL), 0),
                num(t.completion_per_record.get(Role.BIG), 0),
                pct(t.big_share_generated),
                pct(t.big_share_kept),
                pct(s.steps.acceptance_rate),
                num(t.total_requests_per_record, 1),
                num(s.tokens_saved_per_record, 0),
                f"{num(t.wasted_completion_per_record, 0)} ({num(t.wasted_requests_per_record, 1)} req)",
            ]
        )
    headers = ["run", "latency mean s", "p50 s", "p95 s", "tokens/record", "small", "big"]
    headers += ["big share", "big share kept", "step acceptance", "requests/record", "saved/record", "wasted/record"]
    return Table("Cost per record (problem x repeat)", headers, rows)


def ledger_table(summaries: list[RunSummary]) -> Table:
    """Server time per record and model role (`evaluators.ledger`): what the tokens cost on the servers."""
    rows = []
    for s in summaries:
        for role, ledger in s.ledger.items():
            client = f"{ledger.client_timed} of {ledger.requests}" if ledger.client_timed else DASH
            busy = "; ".join(f"{_server_name(server)} {num(seconds, 1)}" for server, seconds in ledger.busy_s.items())
            rows.append(
                [
                    s.name,
                    role,
                    num(ledger.requests / s.records, 1),
                    num(ledger.request_s / s.records, 2),
                    client,
                    busy or DASH,
                    pct(ledger.cached_share),
                    pct(ledger.queue_share),
                ]
            )
    headers = ["run", "role", "requests/record", "request-s/record", "client-timed requests", "busy s per server"]
    headers += ["prompt cached", "queue share"]
    return Table("Server time per record, by role (request-s: the sum over requests)", headers, rows)


def _server_name(url: str) -> str:
    """A server's URL without its scheme: host:port."""
    return url.split("://", 1)[-1]


def search_table(summaries: list[RunSummary]) -> Table:
    """Accuracy of each answer selection over the first N completions (search runs)."""
    searched = [s for s in summaries if s.search is not None]
    ks = sorted({k for s in searched for by_k in s.search.accuracy_at_k.values() for k in by_k})
    rows = [
        [s.name, selection] + [pct(s.search.accuracy_at_k[selection].get(k)) for k in ks]
        for s in searched
        for selection in SELECTIONS
    ]
    return Table(
        "Search: accuracy against N (first N completions)", ["run", "selection"] + [f"N={k}" for k in ks], rows
    )


def search_cost_table(summaries: list[RunSummary]) -> Table:
    """What a search record cost: every generated token (lookahead included), every scorer request."""
    rows = [
        [
            s.name,
            num(s.search.completions_per_record, 1),
            num(s.search.policy_tokens_per_record, 0),
            num(s.search.scorer_tokens_per_record, 0),
            num(s.tokens.total_completion_per_record, 0),
            num(s.search.scorer_requests_per_record, 1),
            num(s.search.scorer_prompt_tokens_per_record, 0),
            num(s.tokens.total_requests_per_record, 1),
        ]
        for s in summaries
        if s.search is not None
    ]
    headers = ["run", "completions", "policy tokens", "scorer tokens", "all tokens", "scorer requests"]
    headers += ["scorer prompt tokens", "all requests"]
    return Table("Search cost per record", headers, rows)


def comparison_table(comparisons: list[Comparison]) -> Table:
    rows = []
    for c in comparisons:
        ci = (
            DASH
            if c.accuracy_diff_ci is None
            else f"[{_signed(c.accuracy_diff_ci[0])}, {_signed(c.accuracy_diff_ci[1])}]"
        )
        speedup = DASH if c.speedup is None else f"{c.speedup:.2f}x"
        ratio = DASH if c.token_ratio is None else f"{c.token_ratio:.2f}"
        server = DASH if c.request_s_ratio is None else f"{c.request_s_ratio:.2f}"
        rows.append([c.run, str(c.common_problems), speedup, ratio, server, _signed(c.accuracy_diff), ci])
    baseline = comparisons[0].baseline if comparisons else DASH
    headers = ["run", "common problems", "speedup", "token ratio", "request-s ratio", "accuracy diff", "95% CI"]
    if any(c.concurrency_note for c in comparisons):
        headers.append("note")
        for row, c in zip(rows, comparisons, strict=True):
            row.append(f"other concurrency: {c.concurrency_note}" if c.concurrency_note else DASH)
    return Table(f"Against baseline {baseline}", headers, rows)


def _signed(value: float | None) -> str:
    return DASH if value is None else f"{100 * value:+.1f} pts"


def detail_tables(summaries: list[RunSummary]) -> list[Table]:
    """One table per key of a method's own details (`evaluators.details`), a row per run with it."""
    keys = sorted({key for s in summaries for key in s.details})
    tables = []
    for key in keys:
        rows = [[s.name, str(s.details[key].count), s.details[key].summary] for s in summaries if key in s.details]
        counted = "steps" if key.startswith("policy") else "records"
        tables.append(Table(f"Details, {key}", ["run", counted, "values"], rows))
    return tables


def all_tables(summaries: list[RunSummary], comparisons: list[Comparison]) -> list[Table]:
    """The tables of an evaluation, in reading order; empty ones left out."""
    tables = [accuracy_table(summaries), k_table(summaries), track_table(summaries), cost_table(summaries)]
    tables.append(ledger_table(summaries))
    tables += [search_table(summaries), search_cost_table(summaries), *detail_tables(summaries)]
    if comparisons:
        tables.append(comparison_table(comparisons))
    return [t for t in tables if t.rows]


def render_text(table: Table) -> str:
    """Aligned columns for a terminal: columns of figures to the right, text to the left."""
    columns = list(zip(table.headers, *table.rows, strict=True))
    widths = [max(len(cell) for cell in column) for column in columns]
    right = [all(_is_figure(cell) for cell in column[1:]) for column in columns]
    lines = [table.title, _text_row(table.headers, widths, right), "  ".join("-" * w for w in widths)]
    lines += [_text_row(row, widths, right) for row in table.rows]
    return "\n".join(lines)


def _is_figure(cell: str) -> bool:
    return cell == DASH or cell[:1].isdigit() or cell[:1] in ("+", "-", "[")


def _text_row(cells: list[str], widths: list[int], right: list[bool]) -> str:
    padded = (c.rjust(w) if r else c.ljust(w) for c, w, r in zip(cells, widths, right, strict=True))
    return "  ".join(padded).rstrip()


def render_markdown(table: Table) -> str:
    """A Markdown table under a level-3 heading."""
    lines = [f"### {table.title}", "", "| " + " | ".join(table.headers) + " |"]
    lines.append("|" + "|".join("---" for _ in table.headers) + "|")
    lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in table.rows]
    return "\n".join(lines)
