"""Every (strategy, policy) pair of the tables either runs one problem on the scripted fake server
and answers it, or is refused by `build_config` before anything starts (`spectra run --strategy S
--policy P`). A strategy that runs no policy also runs with none given."""

import pytest

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.errors import UsageError
from engine.reasoning.policies import POLICIES
from engine.reasoning.strategies import STRATEGIES
from engine.run.configure import build_config, roles_of_command
from engine.run.runner_plans import RUNNERS
from engine.run.scheduler import Scheduler, WorkItem
from tests.fake_openai import FakeOpenAIServer

# The fake server answers each request by its purpose: ratings for judges, RAST's own, a step otherwise.
from tests.unit.reasoning.test_registry import ANY_REQUEST, a_step, any_pooling

PROBLEM = Problem(id="p", problem="What is 2 + 2?", answer="4")
PAIRS = [(s, p) for s in STRATEGIES for p in POLICIES] + [
    (s, None) for s, spec in STRATEGIES.items() if not spec.runs_policy
]
# SplitReason's policies write until EOS or the budget: a short one keeps their tracks short.
SHORT = {"token_budget": 64}
# DeepConf's own budget is its examples' 512 traces: a few show the pair works.
FEW = {"deepconf": {"deepconf_traces": 4}}


def pair_flags(strategy, policy, prm_folder="prm"):
    """`spectra run --strategy S [--policy P]` with a model for each role it calls."""
    flags = {"strategy": strategy, "policy": policy, **(SHORT if STRATEGIES[strategy].runs_policy else {})}
    flags.update(FEW.get(strategy, {}))
    roles = roles_of_command(RUNNERS["spec"], flags)
    return {**flags, **{f"{role}_model": str(prm_folder) if role == "prm" else role for role in roles}}


async def solve_one(config, make_models):
    records = []
    async with FakeOpenAIServer(a_step, by_purpose=ANY_REQUEST, pooler=any_pooling) as server:
        sources = {role: model.model for role, model in config.models.items()}
        models = make_models(**{role: server for role in config.models}, sources=sources)
        prompts = load_prompt_set(config.prompt_set)
        scheduler = Scheduler(config, models, prompts, run_id="r", dataset="d", on_record=records.append)
        await scheduler.run([WorkItem(PROBLEM, 0)])
    (record,) = records
    return record


@pytest.mark.parametrize(("strategy", "policy"), PAIRS, ids=[f"{s}+{p}" for s, p in PAIRS])
async def test_every_pair_answers_on_the_fake_server_or_is_refused(make_models, tmp_path, strategy, policy):
    # The PRM is read from its folder's config, as for a local model: a Qwen-style pooling PRM.
    (tmp_path / "config.json").write_text('{"model_type": "qwen2", "architectures": ["Qwen2ForProcessRewardModel"]}')
    try:
        config = build_config(RUNNERS["spec"], pair_flags(strategy, policy, tmp_path))
    except UsageError as refused:
        runs_policy = STRATEGIES[strategy].runs_policy
        why = "gives none: choose a policy that does" if runs_policy else "runs no step policy"
        assert why in str(refused), refused
        return
    record = await solve_one(config, make_models)
    assert record.answer == "4", [t.finish_reason for t in record.tracks]
    assert (record.strategy, record.problem_id) == (strategy, "p")


def test_the_walk_runs_every_policy_under_vote_and_every_strategy():
    refused = []
    for strategy, policy in PAIRS:
        try:
            build_config(RUNNERS["spec"], pair_flags(strategy, policy))
        except UsageError:
            refused.append((strategy, policy))
    assert not [pair for pair in refused if pair[0] == "vote"], refused
    assert {s for s, _ in PAIRS} == {s for s, p in PAIRS if (s, p) not in refused}
