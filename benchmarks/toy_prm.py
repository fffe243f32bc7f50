"""The toy process reward model on the toy world (issue 32): how well it judges the small model's own
steps, and search-and-learn's strategies searching with it as their default scorer.
`benchmarks.toy_world --rows prm` runs these on `--problems`.

Judging: every step of the small model's solutions (the `small` mode: SpecReason's sampling, T=0.6,
as the big judge's AUC is measured) scored by spectra's `PRMScorer` through `/pooling`, one request a
solution, against labels recomputed from the problem (`judge_label`): pooled AUC, within-problem AUC
(right against wrong steps of the same problem), and at RSD's threshold 0.7 the right steps kept and
the wrong ones caught. Search: best-of-N and DVTS at N = 16 and beam search at N = 1, 4 and 16,
scored by the PRM (`--scorer prm`, search-and-learn's split with its empty last step), a completion
worth its weakest step (`--agg_strategy min`, as the judge's rows: the PRM rates each step on its
own), against one sample.
"""

from __future__ import annotations

import asyncio

import aiohttp

from benchmarks.toy_speed import Mode
from engine.reasoning.judges.base import ScoreQuery
from engine.reasoning.judges.prm import PRMScorer
from engine.records import ProblemRecord
from engine.run.config import ModelConfig
from engine.serving.chat import Message, load_chat_format
from engine.serving.client import ModelClient
from engine.serving.models import Model
from engine.toy.task import held_out_problems, judge_label
from evaluators.metrics import auc, within_group_auc

PRM_THRESHOLD = 0.7  # RSD's --prm_threshold
PRM_CONCURRENCY = 8
PRM_SEARCH_FLAGS = ("--scorer", "prm", "--agg_strategy", "min", "--beam_width", "4")
PRM_SEARCH_MODES = (
    Mode("prm_best_of_n16", "search", ("--approach", "best_of_n", "--n", "16", *PRM_SEARCH_FLAGS)),
    *(
        Mode(f"prm_beam_search{n}", "search", ("--approach", "beam_search", "--n", str(n), *PRM_SEARCH_FLAGS))
        for n in (1, 4, 16)
    ),
    Mode("prm_dvts16", "search", ("--approach", "dvts", "--n", "16", *PRM_SEARCH_FLAGS)),
)
# Issue 32's targets on the small model's held-out steps.
TARGETS = {"auc": 0.95, "right_kept": 0.95, "wrong_caught": 0.90}


async def prm_step_scores(records: list[ProblemRecord], prm: ModelConfig) -> list[tuple[int, list[float], list[bool]]]:
    """(problem index, the PRM's score of each step, each step's label) of every track of `records`."""
    problems = held_out_problems()
    solutions = []
    for record in records:
        problem = problems[int(record.problem_id)]
        for track in record.tracks:
            # A single-request track (the seeds' base runners) holds its whole reasoning in one step.
            texts = [chunk for s in track.steps for chunk in s.text.split("\n\n") if chunk.strip()]
            labels = [judge_label(problem, texts[:i], text) for i, text in enumerate(texts)]
            if texts:
                query = ScoreQuery(
                    problem=record.problem, messages=(Message("user", record.problem),), steps=tuple(texts)
                )
                solutions.append((int(record.problem_id), query, labels))
    gate = asyncio.Semaphore(PRM_CONCURRENCY)
    async with aiohttp.ClientSession() as session:
        model = Model("prm", ModelClient(session, prm.model, list(prm.urls)), load_chat_format(prm.model))
        scorer = PRMScorer(model)

        async def score(query: ScoreQuery) -> list[float]:
            async with gate:
                return (await scorer.score(query)).values

        scores = await asyncio.gather(*(score(query) for _, query, _ in solutions))
    return [(index, values, labels) for (index, _, labels), values in zip(solutions, scores, strict=True)]


def separation(scored: list[tuple[int, list[float], list[bool]]]) -> dict:
    """Pooled and within-problem AUC; right steps kept and wrong ones caught at `PRM_THRESHOLD`."""
    pairs = [(s, ok) for _, values, labels in scored for s, ok in zip(values, labels, strict=True)]
    right, wrong = [s for s, ok in pairs if ok], [s for s, ok in pairs if not ok]
    by_problem: dict[int, tuple[list[float], list[float]]] = {}
    for index, values, labels in scored:
        mine = by_problem.setdefault(index, ([], []))
        for value, ok in zip(values, labels, strict=True):
            mine[0 if ok else 1].append(value)
    within, within_pairs = within_group_auc(list(by_problem.values()))
    return {
        "right": len(right),
        "wrong": len(wrong),
        "auc": auc(right, wrong),
        "within_auc": within,
        "within_pairs": within_pairs,
        "right_kept": sum(s >= PRM_THRESHOLD for s in right) / max(1, len(right)),
        "wrong_caught": sum(s < PRM_THRESHOLD for s in wrong) / max(1, len(wrong)),
    }


def prm_rows(figures: dict, command: str) -> list[tuple[str, ...]]:
    """The PRM's separation of the small model's steps beside issue 32's targets."""

    def verdict(name: str) -> str:
        return "PASS" if figures[name] is not None and figures[name] >= TARGETS[name] else "MISS"

    within = "-" if figures["within_auc"] is None else f"{figures['within_auc']:.3f}"
    return [
        (
            "toy PRM: pooled AUC on small's steps",
            "-"
            if figures["auc"] is None
            else f"{figures['auc']:.3f} ({figures['right']} right, {figures['wrong']} wrong)",
            f">= {TARGETS['auc']}",
            verdict("auc"),
            command + "  # then PRMScorer on every step",
        ),
        (
            "toy PRM: within-problem AUC",
            f"{within} ({figures['within_pairs']} right-wrong pairs)",
            "for the record",
            "",
            command,
        ),
        (
            f"toy PRM at {PRM_THRESHOLD}: right kept, wrong caught",
            f"{figures['right_kept']:.1%}, {figures['wrong_caught']:.1%}",
            f">= {TARGETS['right_kept']:.0%}, >= {TARGETS['wrong_caught']:.0%}",
            "PASS" if verdict("right_kept") == verdict("wrong_caught") == "PASS" else "MISS",
            command,
        ),
    ]
