"""Diverse verifier tree search (search-and-learn `search/diverse_verifier_tree_search.py`).

n / beam_width independent subtrees per problem. Each iteration every live subtree samples
beam_width next steps (with optional greedy lookahead), scores each candidate on its step plus
lookahead, and keeps the best candidate's step (never its lookahead). A subtree ends when the kept
step was empty or ended the sequence, or its text holds "boxed{". Each subtree gives its last
expansion's beam_width siblings as completions, subtree after subtree: n in all.

In the reference only the chosen sibling went on, so the others could be unfinished solutions
(seed-algorithms-2.md 2.10). Here every sibling that has not ended is written to the end of the
sequence and rescored, and a finished sibling scored with a lookahead is rescored without it, so
each completion is a whole solution scored as it stands.

The siblings not kept by a subtree that goes on are recorded as pruned (`Searcher.pruned`) at that
iteration, scored as they were compared (on step plus lookahead).
"""

from __future__ import annotations

from dataclasses import dataclass, field

from engine.reasoning.search.beams import LOWER_SCORE, Beam, Searcher, best_index
from engine.reasoning.search.solve import search_strategy

ANSWER_MARK = "boxed{"


@dataclass
class Subtree:
    beam: Beam = field(default_factory=Beam)
    siblings: list[Beam] = field(default_factory=list)
    ahead: list[bool] = field(default_factory=list)
    done: bool = False


def is_whole(beam: Beam) -> bool:
    return beam.ended or ANSWER_MARK in beam.text


async def dvts(searcher: Searcher) -> list[Beam]:
    settings = searcher.settings
    trees = [Subtree() for _ in range(settings.n // settings.beam_width)]
    for iteration in range(settings.num_iterations):
        live = [(t, tree) for t, tree in enumerate(trees) if not tree.done]
        if not live:
            break
        final = iteration == settings.num_iterations - 1
        dropped = await searcher.gather(_expand(searcher, tree, key=(t, iteration), final=final) for t, tree in live)
        # Recorded here, subtree after subtree, not as each expansion ends: the record's order is fixed.
        for (_, tree), siblings in zip(live, dropped, strict=True):
            searcher.prune(siblings, [tree.beam], iteration=iteration, reason=LOWER_SCORE)
    finished = await searcher.gather(
        _finish(searcher, sibling, lookahead, key=("dvts_finish", t, j))
        for t, tree in enumerate(trees)
        for j, (sibling, lookahead) in enumerate(zip(tree.siblings, tree.ahead, strict=True))
    )
    return finished


async def _expand(searcher: Searcher, tree: Subtree, *, key: tuple, final: bool) -> list[Beam]:
    """Grow the subtree by its best of beam_width candidates. Returns the candidates when the subtree
    goes on (all but the kept one are dropped), none when it is done (they are its completions)."""
    width = searcher.settings.beam_width
    steps = await searcher.gather(
        searcher.next_step(tree.beam.text, final=final, key=("dvts", *key, j)) for j in range(width)
    )
    tree.siblings = await searcher.gather(searcher.scored_candidate(tree.beam, s) for s in steps)
    tree.ahead = [bool(s.lookahead) for s in steps]
    tree.beam = tree.siblings[best_index(tree.siblings, searcher.settings.agg_strategy)]
    tree.done = final or is_whole(tree.beam)
    return [] if tree.done else tree.siblings


async def _finish(searcher: Searcher, sibling: Beam, scored_with_lookahead: bool, *, key: tuple) -> Beam:
    if not is_whole(sibling):
        return await searcher.finish(sibling, key=key)
    if scored_with_lookahead:
        await searcher.rate(sibling)
    return sibling


DVTS = search_strategy(
    "dvts",
    "search-and-learn DVTS: N / beam_width subtrees, each keeping its best of beam_width steps",
    dvts,
    split_by_width=True,
)
