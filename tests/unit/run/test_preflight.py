"""Server settings every request would trip on are refused before the first problem, in one line
naming the flags to change; the logprobs the preflight expects of each role are those the specs
really ask (checked by running them on the scripted fake server)."""

import contextlib
import dataclasses
import json

import pytest

from engine.data.prompts import load_prompt_set
from engine.errors import ServerSettingError
from engine.reasoning.policies import POLICIES
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies import STRATEGIES
from engine.run.config import DataConfig, ModelConfig, RunConfig
from engine.run.execute import _server_args, execute, roles_needed
from engine.run.preflight import logprob_needs, sample_budget
from engine.run.scheduler import Scheduler, WorkItem
from engine.serving.servers import RunningServer
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import chatml_tokenizer
from tests.unit.reasoning.test_registry import ANY_REQUEST, PROBLEM, a_step, any_pooling
from tests.unit.serving.test_servers import ServerWithContext

SHORT = ReasoningConfig(token_budget=48, max_step_tokens=16, answer_max_tokens=8)
# (policy, strategy, settings changed from the defaults): every policy and strategy, and the
# settings that change which requests ask for logprobs.
RUNS = [
    *((policy, "vote", {}) for policy in POLICIES),
    *(("big", strategy, {}) for strategy in STRATEGIES if strategy not in ("vote", "deepconf")),
    # A few of DeepConf's traces (its default is its examples' 512) ask what all of them would.
    ("big", "deepconf", {"deepconf_traces": 4}),
    ("spec", "deepconf", {"deepconf_traces": 4}),
    ("lookahead", "vote", {"verifier": "exact"}),
    # Lookahead's verifiers rule on the first draft too (the reference rejects it unjudged).
    ("lookahead", "vote", {"judge_half_sentences": True}),
    ("lookahead", "vote", {"verifier": "big_rating", "judge_half_sentences": True}),
    ("small", "best_of_n", {"scorer": "judge"}),
    ("big", "rast", {"rast_logprobs": 3, "rast_aux_logprobs": 30, "rast_mode": "speculative"}),
    ("big", "deepconf", {"deepconf_top_logprobs": 7, "deepconf_traces": 4}),
]

# Runs whose one short problem on the fake server ends before the big model's requests that ask
# for logprobs (SplitReason's big chunks, spec's rewrites under DeepConf): their needs are checked
# as bounds only.
UNSEEN_REQUESTS = {("logprob_subselect", "vote"), ("spec_reason", "vote"), ("spec", "deepconf")}


def config_of(policy: str, strategy: str, changes: dict, tmp_path, reasoning: ReasoningConfig = SHORT) -> RunConfig:
    policy_fields = {f.name for f in dataclasses.fields(POLICIES[policy].settings)}
    # A local Qwen-style pooling PRM config: how the search reads its PRM is decided from it.
    (tmp_path / "config.json").write_text('{"model_type": "qwen2", "architectures": ["Qwen2ForProcessRewardModel"]}')
    roles = ("big", "small", "prm", "embedder", "judge", "base", "positive", "negative")
    return RunConfig(
        runner="test",
        output_dir=str(tmp_path / "run"),
        models={role: ModelConfig(str(tmp_path) if role == "prm" else role) for role in roles},
        policy=policy,
        policy_settings=POLICIES[policy].settings(**{k: v for k, v in changes.items() if k in policy_fields}),
        strategy=strategy,
        strategy_settings=STRATEGIES[strategy].settings(**{k: v for k, v in changes.items() if k not in policy_fields}),
        reasoning=reasoning,
        prompt_set="rast" if strategy == "rast" else "default",  # RAST's plain prompt, as its runner's plan
    )


def a_draft_worded_otherwise(body):
    """The small model's draft, in other words than the big model's step: lookahead's verifier rules."""
    step = a_step(body)
    step.text = step.text.replace("so", "thus")
    return step


def pooler_of(role: str):
    """What the role's server pools: an embedding model's one vector per input, or a PRM's rows."""
    return (lambda body: [1.0, 0.0]) if role == "embedder" else any_pooling


@pytest.mark.parametrize(("policy", "strategy", "changes"), RUNS)
async def test_the_logprobs_expected_of_each_role_are_those_its_requests_ask(
    make_models, tmp_path, policy, strategy, changes
):
    config = config_of(policy, strategy, changes, tmp_path)
    draft = a_draft_worded_otherwise if policy == "lookahead" else a_step
    async with contextlib.AsyncExitStack() as stack:
        servers = {
            role: await stack.enter_async_context(
                FakeOpenAIServer(a_step, by_purpose={**ANY_REQUEST, "draft": draft}, pooler=pooler_of(role))
            )
            for role in roles_needed(config)
        }
        records, prompts = [], load_prompt_set(config.prompt_set)
        models = make_models(**servers, sources={"prm": str(tmp_path)})
        scheduler = Scheduler(config, models, prompts, run_id="r", dataset="d", on_record=records.append)
        await scheduler.run([WorkItem(PROBLEM, 0)])
    assert not records[0].failed, records[0]
    asked = {
        role: max(max(body.get("logprobs") or 0, body.get("prompt_logprobs") or 0) for body in server.requests)
        for role, server in servers.items()
        if server.requests
    }
    expected = {role: need.count for role, need in logprob_needs(config, prm_kind="pooling").items()}
    assert all(count <= expected.get(role, 0) for role, count in asked.items()), (asked, expected)
    if (policy, strategy) not in UNSEEN_REQUESTS:
        assert {role: count for role, count in asked.items() if count} == expected


def refusing_more_than(limit: int):
    """A vLLM server started with --max-logprobs `limit`: it refuses requests asking more, with vLLM's words."""

    def answer(body):
        asked = body.get("logprobs") or 0
        if asked > limit:
            message = f"Requested sample logprobs of {asked}, which is greater than max allowed: {limit}"
            return Reply(status=400, error_message=message)
        return a_step(body)

    return answer


@pytest.fixture
def served_config(tmp_path):
    """A RunConfig over one problem whose big model is served at `url` (chat template on disk)."""
    folder = tmp_path / "tokenizer"
    chatml_tokenizer().save_pretrained(folder)
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"id": "1", "problem": "What is 2 + 2 ?", "answer": "4"}) + "\n")

    def build(url: str, *, strategy: str = "vote", reasoning: ReasoningConfig = SHORT, **settings) -> RunConfig:
        return RunConfig(
            runner="base",
            output_dir=str(tmp_path / "run"),
            models={"big": ModelConfig("fake-model", (url,), tokenizer=str(folder))},
            policy="big",
            strategy=strategy,
            strategy_settings=STRATEGIES[strategy].settings(**settings),
            reasoning=reasoning,
            data=DataConfig(dataset_name=str(problems)),
        )

    return build


async def test_a_server_giving_fewer_logprobs_than_the_run_asks_is_refused_before_the_first_problem(
    served_config, tmp_path
):
    async with FakeOpenAIServer(refusing_more_than(5), by_purpose=ANY_REQUEST) as big:
        config = served_config(big.url, strategy="deepconf", deepconf_traces=2)
        with pytest.raises(ServerSettingError) as refused:
            await execute(config, progress=False)
    assert str(refused.value) == (
        "the big model's server gives at most 5 logprobs a token and the run asks 20 (--deepconf_top_logprobs): "
        "start it with --max-logprobs 20 (or let spectra start it: drop --big_url)"
    )
    assert len(big.requests) == 1 and big.requests[0]["max_tokens"] == 1  # the probe, no problem's request
    assert not (tmp_path / "run").exists()


async def test_a_server_giving_the_logprobs_asked_runs(served_config):
    async with FakeOpenAIServer(refusing_more_than(20), by_purpose=ANY_REQUEST) as big:
        outcome = await execute(served_config(big.url, strategy="deepconf", deepconf_traces=2), progress=False)
    assert [r.answer for r in outcome.records] == ["4"]
    assert big.requests[0]["logprobs"] == 20 and big.requests[0]["max_tokens"] == 1


async def test_a_context_that_cannot_hold_a_sample_after_the_prompt_is_refused(served_config, tmp_path):
    async with ServerWithContext(a_step, by_purpose=ANY_REQUEST) as big:
        too_long = dataclasses.replace(SHORT, token_budget=60)
        with pytest.raises(ServerSettingError) as refused:
            await execute(served_config(big.url, reasoning=too_long), progress=False)
        assert big.requests == []
        fits = served_config(big.url, reasoning=dataclasses.replace(SHORT, token_budget=58))
        outcome = await execute(fits, progress=False)
    # "What is 2 + 2 ?" is 6 tokens of the word-level tokenizer: 6 + 60 > 64, 6 + 58 fits.
    assert str(refused.value) == (
        "the big model's server holds 64 tokens of context (max_model_len) and a sample may write 60 "
        "(--token_budget) after a prompt of at least 6: lower --token_budget by 2, or restart its server with "
        "--max-model-len 66 or more"
    )
    assert len(outcome.records) == 1


async def test_servers_spectra_started_are_refused_naming_their_flags_in_one_line(served_config, tmp_path, monkeypatch):
    async with FakeOpenAIServer(refusing_more_than(5), by_purpose=ANY_REQUEST) as big:

        @contextlib.asynccontextmanager
        async def serve_models(specs, log_dir, restarts):  # stands in for starting vLLM: the fake is up
            yield {s.name: RunningServer(s.name, big.url, s.model, 0, log_dir) for s in specs}

        monkeypatch.setattr("engine.run.execute.serve_models", serve_models)
        given = served_config(big.url, strategy="deepconf", deepconf_traces=2)
        tokenizer = given.models["big"].tokenizer
        config = dataclasses.replace(
            given,
            models={"big": ModelConfig(tokenizer, server_args=("--max-logprobs", "5"))},
            max_model_len=40,
        )
        with pytest.raises(ServerSettingError) as refused:
            await execute(config, progress=False)
    assert str(refused.value) == (
        "the big model's server gives at most 5 logprobs a token and the run asks 20 (--deepconf_top_logprobs): "
        "--big_server_args sets --max-logprobs 5: raise it to 20 or leave it out; "
        "the big model's server holds 40 tokens of context (max_model_len) and a sample may write 48 "
        "(--token_budget) after a prompt of at least 6: lower --token_budget by 14, or give --max_model_len 54 "
        "or more, if the model takes it"
    )


def test_the_sample_budget_is_what_one_sample_may_write(tmp_path):
    def budget(policy="big", strategy="vote", reasoning=SHORT, **changes):
        return sample_budget(config_of(policy, strategy, changes, tmp_path, reasoning))

    assert budget() == (48, "--token_budget")
    answer_phase = dataclasses.replace(SHORT, answer_phase=True)
    assert budget(reasoning=answer_phase) == (56, "--token_budget and --answer_max_tokens")
    assert budget("big", "rast", max_tokens=99) == (99, "--max_tokens")
    assert budget("small", "beam_search") == (16, "--max_step_tokens")


def test_servers_spectra_starts_are_given_the_logprobs_the_run_asks(tmp_path):
    deepconf = config_of("spec", "deepconf", {"deepconf_top_logprobs": 50}, tmp_path)
    assert [_server_args(deepconf, role) for role in ("big", "small")] == [("--max-logprobs", "50")] * 2
    # vLLM's default 20 is enough for SpecReason's judge; RAST's own server flags set --max-logprobs.
    assert _server_args(config_of("spec", "vote", {}, tmp_path), "big") == ()
    rast = config_of("big", "rast", {}, tmp_path)
    assert "--max-logprobs" not in _server_args(rast, "positive")
