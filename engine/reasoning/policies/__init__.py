"""How one reasoning step is produced: the table of step policies, by name.

Adding a policy is one file in this package (a `PolicySpec`, see `base.py`) and one entry here.
"""

from engine.reasoning.policies.base import PolicySpec
from engine.reasoning.policies.lookahead import LOOKAHEAD
from engine.reasoning.policies.single import BIG, SMALL
from engine.reasoning.policies.spec import SPEC
from engine.reasoning.policies.splitreason.logprob_subselect import LOGPROB_SUBSELECT
from engine.reasoning.policies.splitreason.random_switch import RANDOM_SWITCH
from engine.reasoning.policies.splitreason.spec_reason import SPEC_REASON
from engine.reasoning.policies.takeover import TAKEOVER

POLICIES: dict[str, PolicySpec] = {
    spec.name: spec
    for spec in (
        BIG,
        SMALL,
        SPEC,
        RANDOM_SWITCH,
        LOGPROB_SUBSELECT,
        SPEC_REASON,
        LOOKAHEAD,
        TAKEOVER,
    )
}
