"""How one problem is solved: the table of strategies, by name.

Adding a strategy is one file in this package (a `StrategySpec`, see `base.py`) and one entry here.
"""

from engine.strategies.base import StrategySpec
from engine.strategies.rast import RAST
from engine.strategies.vote import VOTE

STRATEGIES: dict[str, StrategySpec] = {spec.name: spec for spec in (VOTE, RAST)}
