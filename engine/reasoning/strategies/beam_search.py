"""Beam search against a step scorer (search-and-learn `search/beam_search.py`).

n beams start empty. Each iteration the active beams are cycled to exactly n copies, each writes
one step (the last iteration writes to the end of the sequence), and is scored; beams whose step
was empty or ended the sequence are set aside as completed, and the top n / beam_width of the rest
go on (n need not be a multiple of beam_width; when n < beam_width all of them go on, as the
reference's slice `[-0:]` keeps every beam). The result is the first n completed beams (the top n
with `sort_completed`), cycled when fewer completed. Every beam dropped on the way is recorded
(`Searcher.pruned`): at the iteration it fell out of the top, or was filtered as a duplicate, or,
for a completion past the n kept, the iteration it completed at. No beam is dropped for running
out of iterations: the last one writes every active beam to the end.

Every score is of the beam's whole text split at "\\n\\n" (`Searcher.rate`): with `--prm_split
reference` a step's kept "\\n\\n" leaves an empty last paragraph whose score is the last one, so
with `--agg_strategy last` every pruning decision rests on that empty step, as in the reference.

Unlike the reference, which generated lookahead steps but scored the beam without them
(seed-algorithms-2.md 2.10), a candidate is scored on its step plus its lookahead; the lookahead is
never kept. All n candidates of an iteration are generated and scored concurrently.
"""

from __future__ import annotations

from engine.reasoning.search.beams import DUPLICATE, LOWER_SCORE, SURPLUS, Beam, PrunedBeam, Searcher, cycled
from engine.reasoning.search.solve import search_strategy


async def beam_search(searcher: Searcher) -> list[Beam]:
    settings = searcher.settings
    how, keep = settings.agg_strategy, settings.n // settings.beam_width
    active = [Beam() for _ in range(settings.n)]
    completed: list[tuple[int, Beam]] = []  # (the iteration it completed at, the beam)
    for iteration in range(settings.num_iterations):
        final = iteration == settings.num_iterations - 1
        active = cycled(active, settings.n)
        steps = await searcher.gather(
            searcher.next_step(b.text, final=final, key=("beam", iteration, i)) for i, b in enumerate(active)
        )
        grown = await searcher.gather(searcher.scored_candidate(b, s) for b, s in zip(active, steps, strict=True))
        # The last iteration wrote to the end of the sequence: all its beams are complete.
        completed += [(iteration, b) for b in grown if b.ended or final]
        active = [b for b in grown if not (b.ended or final)]
        if settings.filter_duplicates:
            unique = first_of_each_text(active)
            searcher.prune(active, unique, iteration=iteration, reason=DUPLICATE)
            active = unique
        if not active:
            break
        top = top_in_order(active, keep, how)
        searcher.prune(active, top, iteration=iteration, reason=LOWER_SCORE)
        active = top
    if settings.sort_completed:
        completed = sorted(completed, key=lambda ib: ib[1].score(how), reverse=True)
    # Completions past the first (or top) n are dropped: recorded as pruned where they completed.
    searcher.pruned += [PrunedBeam(b, iteration, SURPLUS) for iteration, b in completed[settings.n :]]
    return cycled([b for _, b in completed[: settings.n]], settings.n)


def first_of_each_text(beams: list[Beam]) -> list[Beam]:
    """The first beam of each text, in their order (the reference's `unique_beam_dict`)."""
    first: dict[str, Beam] = {}
    for beam in beams:
        first.setdefault(beam.text, beam)
    return list(first.values())


def top_in_order(beams: list[Beam], keep: int, how: str) -> list[Beam]:
    """The `keep` top-scored beams (all when `keep` is 0), in their own order: the reference marks
    the others pruned and goes on with the rest as they were, which decides how they are cycled.
    Ties as the reference's `np.argsort(scores)[-keep:]` breaks them: of equal scores the later
    beam is kept (numpy sorts equal values in index order; checked for 4 to 256 beams)."""
    ranked = sorted(range(len(beams)), key=lambda i: (beams[i].score(how), i))[-keep:]
    return [beams[i] for i in sorted(ranked)]


BEAM_SEARCH = search_strategy(
    "beam_search",
    "search-and-learn beam search: N beams, the top N / beam_width go on each step",
    beam_search,
    split_by_width=False,
)
