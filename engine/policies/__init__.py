"""How one reasoning step is produced: the table of step policies, by name.

Adding a policy is one file in this package (a `PolicySpec`, see `base.py`) and one entry here.
"""

from engine.policies.base import PolicySpec
from engine.policies.single import BIG, SMALL
from engine.policies.spec import SPEC

POLICIES: dict[str, PolicySpec] = {spec.name: spec for spec in (BIG, SMALL, SPEC)}
