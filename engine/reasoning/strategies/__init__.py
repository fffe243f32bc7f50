"""How one problem is solved: the table of strategies, by name.

Adding a strategy is one file in this package (a `StrategySpec`, see `base.py`) and one entry here.
"""

from engine.reasoning.strategies.base import StrategySpec
from engine.reasoning.strategies.beam_search import BEAM_SEARCH
from engine.reasoning.strategies.best_of_n import BEST_OF_N
from engine.reasoning.strategies.deepconf import DEEPCONF
from engine.reasoning.strategies.dvts import DVTS
from engine.reasoning.strategies.rast import RAST
from engine.reasoning.strategies.vote import VOTE

STRATEGIES: dict[str, StrategySpec] = {spec.name: spec for spec in (VOTE, BEST_OF_N, BEAM_SEARCH, DVTS, RAST, DEEPCONF)}
