"""Figures of one run: accuracy, pass@k, maj@k, tokens, speculative steps, latency.

Definitions (a "record" is one (problem, repeat); a "finished track" is a track whose
`finish_reason` is not "cancelled" or "skipped", since a track stopped by early stop was
never a complete sample; failed tracks count, as wrong):

- accuracy: share of records whose voted answer (`ProblemRecord.answer`) is correct, over
  the records with a reference answer. accuracy_mean / accuracy_std: the mean and sample
  standard deviation of the accuracy of each repeat (records sharing a `repeat_id`).
- track_accuracy: share of finished tracks whose own answer is correct; by_label splits it
  by the track's role, else method, else "track <id>".
- pass@k (tracks): per record, the unbiased estimator with n = finished tracks and c = the
  correct ones, averaged over records with n >= k. pass@k (repeats): per problem, n = its
  repeats and c = repeats whose voted answer is correct, averaged over problems with n >= k.
- maj@k (tracks): per record, the answers of the first k finished tracks (by track id) are
  grouped by equivalence; the largest group wins, a tie goes to the answer given first;
  correct when the winner is. Averaged over records with at least k finished tracks.
  maj@k (repeats): the same over the voted answers of a problem's first k repeats.
- pass@k and maj@k (sampled), as RAST reports them: over the repeat ids every scored problem
  has, 10 random picks of k of them (one pick when k is all); per pick, a problem passes when one
  of its picked repeats is correct, and its maj@k is the maj@k above over the picked repeats;
  each figure is the mean over picks of the mean over problems. RAST's `average` is
  accuracy_mean (over all repeats, where RAST scores only its first run).
- tokens: per-model usage summed over a record (`ProblemRecord.usage`), averaged per
  record; big_share_generated = big completion tokens / all completion tokens, over the
  run; big_share_kept = tokens of kept steps written by "big" / tokens of all kept steps;
  thinking tokens per model are the kept steps' tokens by writer, answer tokens per model
  the tracks' answer tokens by `answer_model`. wasted: completion tokens and requests of work
  thrown away (pipelined speculation: drafts made ahead of a rejected one, their scores, work
  cancelled at a track's end; the tracks' `wasted`), per record, apart from the tokens above. A
  request cancelled mid-generation counts as a request with no tokens, so wasted tokens are a
  lower bound.
- steps (speculative modes, steps with a score; not search records): acceptance_rate = scored steps kept as
  drafted / scored steps; score_histogram counts floor(score) in bins 0-9 (a PRM's reward in tenths).
- latency: mean, p50, p95 of `latency_s` per record. requests: per record, all models.
- ledger: per model role, server time: request seconds, each server's busy seconds, the share of
  prompt tokens served from cache and the queue share; defined in `evaluators.ledger`.
- search runs (best-of-N, beam search, DVTS): naive@k, weighted@k, maj@k and pass@k over the
  first k completions, and their cost; defined in `evaluators.search`.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

from engine.data.answers import DEFAULT_TIMEOUT_S, group_equivalent, is_correct
from engine.records import CHECKED, STOPPED_EARLY, ProblemRecord, Role, StepOutcome, TrackRecord, sum_usage
from evaluators import metrics
from evaluators.details import DetailFigures, summarize_details
from evaluators.ledger import RoleLedger, ledger_of
from evaluators.runs import Run
from evaluators.search import Completions, SearchSummary, is_search_record, summarize_search


@dataclass
class GradedRecord:
    """A record with its answers checked; `correct` is None when it has no reference answer."""

    record: ProblemRecord
    multiple_choice: bool
    correct: bool | None
    finished_tracks: list[TrackRecord]
    track_correct: list[bool]


@dataclass
class TokenSummary:
    completion_per_record: dict[str, float]
    prompt_per_record: dict[str, float]
    requests_per_record: dict[str, float]
    thinking_per_record: float
    answer_per_record: float
    answer_tokens_by_model: dict[str, float]
    kept_step_tokens_by_writer: dict[str, float]
    big_share_generated: float | None
    big_share_kept: float | None
    total_completion_per_record: float
    total_requests_per_record: float
    wasted_completion_per_record: float = 0.0
    wasted_requests_per_record: float = 0.0


@dataclass
class StepSummary:
    scored_steps: int
    accepted_steps: int
    acceptance_rate: float | None
    score_histogram: list[int]


@dataclass
class RunSummary:
    """Every figure of one run; see the module docstring for definitions."""

    name: str
    path: str
    run_id: str
    method: str
    dataset: str
    models: dict[str, str]
    records: int
    problems: int
    repeats: int
    scored_records: int
    skipped_lines: int
    partial_tail: bool
    duplicates: int
    accuracy: float | None
    accuracy_by_repeat: dict[int, float]
    accuracy_mean: float | None
    accuracy_std: float | None
    track_accuracy: float | None
    track_accuracy_by_label: dict[str, dict[str, float]]
    pass_at_k_tracks: dict[int, float]
    pass_at_k_repeats: dict[int, float]
    maj_at_k_tracks: dict[int, float]
    maj_at_k_repeats: dict[int, float]
    pass_at_k_sampled: dict[int, float]
    maj_at_k_sampled: dict[int, float]
    tokens: TokenSummary
    steps: StepSummary
    latency: dict[str, float | None]
    early_stopped_records: int
    tokens_saved_total: int
    tokens_saved_per_record: float
    notes: list[str] = field(default_factory=list)
    search: SearchSummary | None = None
    # A method's own figures, key by key (`evaluators.details`).
    details: dict[str, DetailFigures] = field(default_factory=dict)
    # Server time per model role over all records (`evaluators.ledger`).
    ledger: dict[str, RoleLedger] = field(default_factory=dict)


def grade_run(run: Run, *, timeout_s: float = DEFAULT_TIMEOUT_S) -> list[GradedRecord]:
    """Check the voted answer and each finished track's answer of every record."""
    graded = []
    for record in run.records:
        choice = run.multiple_choice(record)
        finished = sorted((t for t in record.tracks if t.finish_reason not in STOPPED_EARLY), key=lambda t: t.track_id)
        reference = record.reference_answer
        if reference is None:
            graded.append(GradedRecord(record, choice, None, finished, []))
            continue
        track_correct = [is_correct(t.answer, reference, multiple_choice=choice, timeout_s=timeout_s) for t in finished]
        correct = is_correct(record.answer, reference, multiple_choice=choice, timeout_s=timeout_s)
        graded.append(GradedRecord(record, choice, correct, finished, track_correct))
    return graded


def summarize_run(
    run: Run, graded: list[GradedRecord], *, ks: Sequence[int] | None = None, timeout_s: float = DEFAULT_TIMEOUT_S
) -> RunSummary:
    """All figures of a graded run. `ks` are the k of pass@k and maj@k (default: 1, 2, 4, ... n)."""
    scored = [g for g in graded if g.correct is not None]
    by_problem = _repeats_by_problem(scored)
    max_tracks = max((len(g.finished_tracks) for g in scored), default=0)
    max_repeats = max((len(v) for v in by_problem.values()), default=0)
    ks_tracks = list(ks) if ks else metrics.default_ks(max_tracks)
    ks_repeats = list(ks) if ks else metrics.default_ks(max_repeats)
    per_repeat = _accuracy_by_repeat(scored)
    records = [g.record for g in graded]
    notes = [] if scored else ["no record has a reference answer: accuracy not computed"]
    return RunSummary(
        name=run.name,
        path=str(run.path),
        run_id=run.run_id,
        method=run.method,
        dataset=run.dataset,
        models=run.models,
        records=len(graded),
        problems=len({r.problem_id for r in records}),
        repeats=len({r.repeat_id for r in records}),
        scored_records=len(scored),
        skipped_lines=len(run.bad_lines),
        partial_tail=run.partial_tail,
        duplicates=run.duplicates,
        accuracy=metrics.mean([float(g.correct) for g in scored]),
        accuracy_by_repeat=per_repeat,
        accuracy_mean=metrics.mean(list(per_repeat.values())),
        accuracy_std=metrics.sample_std(list(per_repeat.values())),
        track_accuracy=metrics.mean([float(c) for g in scored for c in g.track_correct]),
        track_accuracy_by_label=_track_accuracy_by_label(scored),
        pass_at_k_tracks=_mean_by_k(ks_tracks, [(len(g.track_correct), sum(g.track_correct)) for g in scored]),
        pass_at_k_repeats=_mean_by_k(
            ks_repeats, [(len(rs), sum(bool(g.correct) for g in rs)) for rs in by_problem.values()]
        ),
        maj_at_k_tracks=_majority_by_k(
            ks_tracks, [([t.answer for t in g.finished_tracks], g) for g in scored], timeout_s
        ),
        maj_at_k_repeats=_majority_by_k(
            ks_repeats, [([g.record.answer for g in rs], rs[0]) for rs in by_problem.values()], timeout_s
        ),
        **_sampled_by_k(ks_repeats, by_problem, timeout_s),
        tokens=_token_summary(records),
        steps=_step_summary(records),
        latency=_latency(records),
        early_stopped_records=sum(r.early_stopped for r in records),
        tokens_saved_total=sum(r.tokens_saved for r in records),
        tokens_saved_per_record=metrics.mean([r.tokens_saved for r in records]) or 0.0,
        notes=notes,
        search=_search_summary(graded, ks, timeout_s),
        details=summarize_details(records),
        ledger=ledger_of(records),
    )


def _search_summary(graded: list[GradedRecord], ks: Sequence[int] | None, timeout_s: float) -> SearchSummary | None:
    pairs = []
    for g in graded:
        answers = [t.answer for t in g.finished_tracks]
        scores = [t.score or 0.0 for t in g.finished_tracks]
        completions = Completions(answers, scores, g.track_correct, g.multiple_choice)
        pairs.append((g.record, completions if g.correct is not None else None))
    return summarize_search(pairs, ks=ks, timeout_s=timeout_s)


def _repeats_by_problem(scored: list[GradedRecord]) -> dict[str, list[GradedRecord]]:
    by_problem: dict[str, list[GradedRecord]] = defaultdict(list)
    for g in sorted(scored, key=lambda g: g.record.repeat_id):
        by_problem[g.record.problem_id].append(g)
    return dict(by_problem)


def _accuracy_by_repeat(scored: list[GradedRecord]) -> dict[int, float]:
    outcomes: dict[int, list[float]] = defaultdict(list)
    for g in scored:
        outcomes[g.record.repeat_id].append(float(g.correct))
    return {repeat: sum(v) / len(v) for repeat, v in sorted(outcomes.items())}


def _track_label(track: TrackRecord) -> str:
    return track.role or track.method or f"track {track.track_id}"


def _track_accuracy_by_label(scored: list[GradedRecord]) -> dict[str, dict[str, float]]:
    outcomes: dict[str, list[bool]] = defaultdict(list)
    for g in scored:
        for track, correct in zip(g.finished_tracks, g.track_correct, strict=True):
            outcomes[_track_label(track)].append(correct)
    return {label: {"accuracy": sum(v) / len(v), "tracks": len(v)} for label, v in sorted(outcomes.items())}


def _mean_by_k(ks: Sequence[int], samples: list[tuple[int, int]]) -> dict[int, float]:
    """Mean pass@k over (n, c) pairs with n >= k, for each k that at least one pair allows."""
    result = {}
    for k in ks:
        values = [metrics.pass_at_k(n, c, k) for n, c in samples if n >= k]
        if values:
            result[k] = sum(values) / len(values)
    return result


def _majority_by_k(
    ks: Sequence[int], votes: list[tuple[list[str | None], GradedRecord]], timeout_s: float
) -> dict[int, float]:
    """maj@k for each k over (answers in order, the graded record holding the reference) pairs."""
    result = {}
    for k in ks:
        outcomes = [_majority_correct(answers[:k], g, timeout_s) for answers, g in votes if len(answers) >= k]
        if outcomes:
            result[k] = sum(outcomes) / len(outcomes)
    return result


def _sampled_by_k(
    ks: Sequence[int], by_problem: dict[str, list[GradedRecord]], timeout_s: float
) -> dict[str, dict[int, float]]:
    """RAST's subsampled pass@k and maj@k over the repeat ids all problems share."""
    shared = (
        set.intersection(*({g.record.repeat_id for g in rs} for rs in by_problem.values())) if by_problem else set()
    )
    passes, majorities = {}, {}
    for k in (k for k in ks if k <= len(shared)):
        pass_means, majority_means = [], []
        for pick in metrics.subsample_picks(sorted(shared), k):
            chosen = [[g for g in rs if g.record.repeat_id in pick] for rs in by_problem.values()]
            pass_means.append(sum(any(g.correct for g in gs) for gs in chosen) / len(chosen))
            outcomes = [_majority_correct([g.record.answer for g in gs], gs[0], timeout_s) for gs in chosen]
            majority_means.append(sum(outcomes) / len(outcomes))
        passes[k], majorities[k] = sum(pass_means) / len(pass_means), sum(majority_means) / len(majority_means)
    return {"pass_at_k_sampled": passes, "maj_at_k_sampled": majorities}


def _majority_correct(answers: list[str | None], graded: GradedRecord, timeout_s: float) -> float:
    given = [a for a in answers if a is not None]
    groups = group_equivalent(given, multiple_choice=graded.multiple_choice, timeout_s=timeout_s)
    winner = metrics.majority_group(groups)
    if winner is None:
        return 0.0
    answer = given[groups[winner][0]]
    reference = graded.record.reference_answer
    return float(is_correct(answer, reference, multiple_choice=graded.multiple_choice, timeout_s=timeout_s))


def _per_record(records: list[ProblemRecord], value: Callable[[ProblemRecord], float]) -> float:
    return metrics.mean([value(r) for r in records]) or 0.0


def _token_summary(records: list[ProblemRecord]) -> TokenSummary:
    total = sum_usage([r.usage for r in records])
    roles = list(Role)  # the speculative pair first, then the other roles, then any other name
    models = sorted(total, key=lambda m: (roles.index(m) if m in roles else len(roles), m))
    kept: dict[str, int] = defaultdict(int)
    answers: dict[str, int] = defaultdict(int)
    for record in records:
        for track in record.tracks:
            for step in track.steps:
                kept[step.writer] += step.tokens
            if track.answer_model is not None:
                answers[track.answer_model] += track.answer_tokens
    count = len(records)
    all_completion = sum(u.completion_tokens for u in total.values())
    wasted = sum_usage([t.wasted for r in records for t in r.tracks]).values()
    return TokenSummary(
        completion_per_record={m: total[m].completion_tokens / count for m in models},
        prompt_per_record={m: total[m].prompt_tokens / count for m in models},
        requests_per_record={m: total[m].requests / count for m in models},
        thinking_per_record=_per_record(records, lambda r: sum(t.thinking_tokens for t in r.tracks)),
        answer_per_record=_per_record(records, lambda r: sum(t.answer_tokens for t in r.tracks)),
        answer_tokens_by_model={m: n / count for m, n in sorted(answers.items())},
        kept_step_tokens_by_writer={w: n / count for w, n in sorted(kept.items())},
        big_share_generated=metrics.ratio(
            total[Role.BIG].completion_tokens if Role.BIG in total else 0, all_completion
        ),
        big_share_kept=metrics.ratio(kept.get(Role.BIG, 0), sum(kept.values())),
        total_completion_per_record=all_completion / count,
        total_requests_per_record=sum(u.requests for u in total.values()) / count,
        wasted_completion_per_record=sum(u.completion_tokens for u in wasted) / count,
        wasted_requests_per_record=sum(u.requests for u in wasted) / count,
    )


def _step_summary(records: list[ProblemRecord]) -> StepSummary:
    # Drafts a policy checked (scored or verified) and then kept, rewrote or replaced; search
    # records score steps in [0, 1] and keep every step: not drafts judged 0-9.
    checked = [s for r in records if not is_search_record(r) for t in r.tracks for s in t.steps if s.outcome in CHECKED]
    accepted = sum(s.outcome == StepOutcome.ACCEPTED for s in checked)
    return StepSummary(
        scored_steps=len(checked),
        accepted_steps=accepted,
        acceptance_rate=metrics.ratio(accepted, len(checked)),
        # On the 0-9 judge's scale: a PRM's reward in [0, 1] counts in tenths.
        score_histogram=metrics.score_histogram(
            [s.score * 10 if s.judge == "prm" else s.score for s in checked if s.score is not None]
        ),
    )


def _latency(records: list[ProblemRecord]) -> dict[str, float | None]:
    latencies = [r.latency_s for r in records]
    return {
        "mean": metrics.mean(latencies),
        "p50": metrics.percentile(latencies, 50),
        "p95": metrics.percentile(latencies, 95),
    }
