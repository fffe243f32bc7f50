"""Beam search against a step scorer (search-and-learn `search/beam_search.py`).

n beams start empty. Each iteration the active beams are cycled to exactly n copies, each writes
one step (the last iteration writes to the end of the sequence), and is scored; beams whose step
was empty or ended the sequence are set aside as completed, and the top n / beam_width of the rest
go on. The result is the first n completed beams (the top n with `sort_completed`), cycled when
fewer completed.

Unlike the reference, which generated lookahead steps but scored the beam without them
(seed-algorithms-2.md 2.10), a candidate is scored on its step plus its lookahead; the lookahead is
never kept. All n candidates of an iteration are generated and scored concurrently.
"""

from __future__ import annotations

from engine.reasoning.beams import Beam, Searcher, cycled
from engine.reasoning.strategies.search import search_strategy


async def beam_search(searcher: Searcher) -> list[Beam]:
    settings = searcher.settings
    how, keep = settings.agg_strategy, max(1, settings.n // settings.beam_width)
    active, completed = [Beam() for _ in range(settings.n)], []
    for iteration in range(settings.num_iterations):
        final = iteration == settings.num_iterations - 1
        active = cycled(active, settings.n)
        steps = await searcher.gather(
            searcher.next_step(b.text, final=final, key=("beam", iteration, i)) for i, b in enumerate(active)
        )
        grown = await searcher.gather(searcher.scored_candidate(b, s) for b, s in zip(active, steps, strict=True))
        # The last iteration wrote to the end of the sequence: all its beams are complete.
        completed += [b for b in grown if b.ended or final]
        active = [b for b in grown if not (b.ended or final)]
        if settings.filter_duplicates:
            active = list({b.text: b for b in active[::-1]}.values())[::-1]  # the first of equal texts
        if not active:
            break
        active = top_in_order(active, keep, how)
    if settings.sort_completed:
        completed = sorted(completed, key=lambda b: b.score(how), reverse=True)
    return cycled(completed[: settings.n], settings.n)


def top_in_order(beams: list[Beam], keep: int, how: str) -> list[Beam]:
    """The `keep` top-scored beams, in their own order: the reference marks the others pruned and
    goes on with the rest as they were, which decides how they are cycled. Of equal scores the
    earlier beam is kept (the reference's argsort leaves ties unspecified)."""
    ranked = sorted(range(len(beams)), key=lambda i: (-beams[i].score(how), i))[:keep]
    return [beams[i] for i in sorted(ranked)]


BEAM_SEARCH = search_strategy(
    "beam_search",
    "search-and-learn beam search: N beams, the top N / beam_width go on each step",
    beam_search,
    split_by_width=True,
)
