"""What the three search strategies (best-of-N, beam search, DVTS) share on the seam: their spec,
how one problem is solved from a search, and the step scorer they search against."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

import structlog

from engine.reasoning.judges import JUDGES, JudgeInputs
from engine.reasoning.judges.base import StepScorer
from engine.reasoning.search.beams import (
    STEP_DELIMITER,
    Beam,
    Sampling,
    Searcher,
    SearchSettings,
    best_index,
    completion_tracks,
    pruned_details,
)
from engine.reasoning.seeds import problem_seed
from engine.reasoning.strategies.base import SolveContext, StrategySpec
from engine.reasoning.track import track_messages
from engine.records import ProblemRecord, Role

log = structlog.get_logger(__name__)

# The model that writes the solutions; the judge (--scorer) is the big model or the PRM.
WRITER = Role.SMALL

SearchFunction = Callable[[Searcher], Awaitable[list[Beam]]]


def search_strategy(
    name: str, description: str, search: SearchFunction, *, split_by_width: bool, prunes: bool = True
) -> StrategySpec:
    """The registered strategy that runs `search` on each problem; all three share `SearchSettings`.
    `prunes`: the search drops beams on the way (beam search, DVTS), recorded in the record's
    `details["pruned"]` (best-of-N drops none and writes no details)."""

    def check_settings(settings: SearchSettings, prompts: object) -> None:
        # The spec's hook that runs before any server starts; this one checks settings, not prompts.
        if split_by_width:
            settings.check_width()

    return StrategySpec(
        name=name,
        description=description,
        settings=SearchSettings,
        templates=("problem", "system", "score", "score_prefix"),
        roles=(WRITER, Role.BIG, Role.PRM),
        needed_roles=lambda s: (WRITER, JUDGES[s.scorer].role),
        solve=lambda ctx: solve(ctx, name, search, prunes=prunes),
        # It writes its steps with its own `Searcher`, not the run's step policy.
        runs_policy=False,
        track_settings=("temperature", "top_p", "max_step_tokens", "seed"),
        check_prompts=check_settings,
    )


async def solve(ctx: SolveContext, name: str, search: SearchFunction, *, prunes: bool = True) -> ProblemRecord:
    """One problem: the search's completions as tracks; the answer is the top-scored one's (search-and-
    learn's `pred`); the record enters every request, lookahead and scoring included; with
    `prunes`, the beams the search dropped in `details["pruned"]` (`beams.pruned_details`)."""
    settings, reasoning = ctx.settings, ctx.reasoning
    seed = None if reasoning.seed is None else problem_seed(reasoning.seed, ctx.problem.id, ctx.repeat_id)
    searcher = Searcher(
        writer=ctx.models[WRITER].for_track(seed=seed),
        scorer=build_scorer(ctx),
        messages=track_messages(ctx.problem, ctx.prompts, None),
        problem=ctx.problem.problem,
        settings=settings,
        sampling=Sampling(reasoning.temperature, reasoning.top_p, reasoning.max_step_tokens),
    )
    # One problem's search counts as one track of the run's limit; its requests are bounded by the clients.
    async with ctx.track_slots:
        beams = await search(searcher)
    how = settings.agg_strategy
    tracks = completion_tracks(beams, how=how, writer=WRITER, choices=bool(ctx.problem.choices))
    answer = tracks[best_index(beams, how)].answer
    details = {"pruned": pruned_details(beams, searcher.pruned, how=how)} if prunes else None
    record = ctx.record(tracks=tracks, answer=answer, aggregation="naive", costs=searcher.costs, details=details)
    log.info(
        "problem_done",
        answer=answer,
        completions=len(tracks),
        pruned=len(searcher.pruned),
        seconds=round(record.latency_s, 2),
    )
    return record


def build_scorer(ctx: SolveContext) -> StepScorer:
    """The judge `--scorer` names, asked about every step of a solution."""
    settings = ctx.settings
    judge = JUDGES[settings.scorer]
    inputs = JudgeInputs(ctx.models[judge.role], ctx.prompts, STEP_DELIMITER, prm_kind=settings.prm_kind)
    return judge.every_step(inputs)
