"""Best-of-N (search-and-learn `search/best_of_n.py`): n whole solutions per problem, each scored
step by step; the answer is the top-scored one's.

The reference's first version repeated the problem list (p1, p2, p1, p2) while slicing the
completions in blocks of n, mixing problems (commit 179c75b, issues #23 and #28); here each problem
samples its own n solutions.
"""

from __future__ import annotations

from engine.reasoning.search.beams import Beam, Searcher, split_steps
from engine.reasoning.search.solve import search_strategy


async def best_of_n(searcher: Searcher) -> list[Beam]:
    """n solutions to the end of the sequence, each split at "\\n\\n" and scored; in sampling order.
    A solution that ends with "\\n\\n" has an empty last paragraph, scored too under `--prm_split reference`."""

    async def one(index: int) -> Beam:
        step = await searcher.next_step("", final=True, key=("best_of_n", index))
        steps = split_steps(step.text)
        # The solution's tokens belong to its last step: it was generated in one request.
        beam = Beam(steps=steps, step_tokens=[0] * (len(steps) - 1) + [step.tokens], ending=step.ending)
        await searcher.rate(beam)
        return beam

    return await searcher.gather(one(i) for i in range(searcher.settings.n))


BEST_OF_N = search_strategy(
    "best_of_n",
    "search-and-learn best-of-N: N whole solutions scored step by step; the top-scored one answers",
    best_of_n,
    split_by_width=False,
    prunes=False,
)
