"""What a strategy declares on the seam: which pairs of strategy and step policy can work."""

import dataclasses

from engine.reasoning.policies import POLICIES
from engine.reasoning.strategies import STRATEGIES
from engine.reasoning.strategies.base import pairing_problem


def test_every_registered_pair_works_or_runs_no_policy():
    for strategy in STRATEGIES.values():
        for policy in POLICIES.values():
            assert pairing_problem(strategy, strategy.settings(), policy, policy.settings()) is None


def test_a_strategy_that_needs_token_logprobs_refuses_a_policy_that_gives_none():
    deepconf = STRATEGIES["deepconf"]
    mute = dataclasses.replace(POLICIES["small"], name="mute", gives_token_logprobs=False)
    problem = pairing_problem(deepconf, deepconf.settings(), mute, mute.settings())
    assert problem.startswith("strategy deepconf needs token logprobs, and policy mute gives none: choose")
    assert "random_switch" in problem and "mute" not in problem.split("choose")[1]
    # A vote needs none; a search runs no policy at all.
    vote, search = STRATEGIES["vote"], STRATEGIES["beam_search"]
    assert pairing_problem(vote, vote.settings(), mute, mute.settings()) is None
    assert not search.runs_policy and pairing_problem(search, search.settings(), mute, mute.settings()) is None
    assert [name for name, spec in STRATEGIES.items() if not spec.runs_policy] == [
        "best_of_n",
        "beam_search",
        "dvts",
        "rast",
    ]
