"""What a run folder's manifest says about how the run was served, and what its digest covers."""

import contextlib
import dataclasses
import json
import shutil

import pytest

from engine.data.prompts import _package_root
from engine.run.config import (
    DataConfig,
    ModelConfig,
    RunConfig,
    SchedulerLimits,
    decisive_policy,
    decisive_reasoning,
)
from engine.run.execute import execute, model_endpoints
from engine.serving.servers import RunningServer
from engine.serving.vllm_command import model_context_length
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import chatml_tokenizer


@pytest.fixture
def tokenizer_dir(tmp_path):
    folder = tmp_path / "tokenizer"
    chatml_tokenizer().save_pretrained(folder)
    return str(folder)


def one_problem(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text(json.dumps({"id": "1", "problem": "What is 2+2?", "answer": "4"}) + "\n")
    return str(path)


async def test_the_manifest_records_the_servers_vllm_version_and_the_concurrency(tmp_path, tokenizer_dir):
    answer = Reply(text="So \\boxed{4}.", stop_reason="\n\n")
    async with FakeOpenAIServer(lambda body: answer, version="0.32.0") as big:
        config = RunConfig(
            runner="base",
            output_dir=str(tmp_path / "run"),
            models={"big": ModelConfig("fake-model", (big.url, big.url), tokenizer=tokenizer_dir)},
            policy="big",
            limits=SchedulerLimits(max_problems_in_flight=1, max_tracks_in_flight=5),
            data=DataConfig(dataset_name=one_problem(tmp_path)),
        )
        outcome = await execute(config, progress=False)
    manifest = json.loads((tmp_path / "run" / "manifest.json").read_text())
    assert manifest["servers"]["big"]["vllm_version"] == "0.32.0"
    assert manifest["servers"]["big"]["max_model_len"] is None  # the fake server reports no context length
    assert manifest["concurrency"] == {
        "max_problems_in_flight": 1,
        "max_tracks_in_flight": 5,
        "max_in_flight_per_endpoint": 64,
        "replicas": {"big": 2},
    }
    assert outcome.records[0].multiple_choice is False and outcome.records[0].answer == "4"


def write_model_config(folder, **fields):
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", **fields}))
    return str(folder)


def test_the_context_length_is_read_from_the_models_config(tmp_path):
    assert model_context_length(write_model_config(tmp_path / "m", max_position_embeddings=32768)) == 32768
    assert model_context_length(str(tmp_path / "missing")) is None


async def test_servers_spectra_starts_get_the_models_own_context_length(tmp_path, monkeypatch):
    model = write_model_config(tmp_path / "m", max_position_embeddings=12345)
    started = []

    @contextlib.asynccontextmanager
    async def fake_serve_models(specs, log_dir, restarts):
        assert restarts == 3  # --server_restarts' default
        started.extend(specs)
        yield {s.name: RunningServer(s.name, "http://127.0.0.1:9", s.model, 0, log_dir) for s in specs}

    monkeypatch.setattr("engine.run.execute.serve_models", fake_serve_models)
    for given, expected in ((None, 12345), (2048, 2048)):
        started.clear()
        config = RunConfig(
            runner="base",
            output_dir=str(tmp_path / "run"),
            models={"big": ModelConfig(model)},
            policy="big",
            max_model_len=given,
        )
        async with model_endpoints(config, session=None) as endpoints:
            assert endpoints["big"].max_model_len == expected
        assert [s.max_model_len for s in started] == [expected]


def test_the_config_digest_covers_the_prompt_set_content(tmp_path):
    copy = tmp_path / "myset"
    shutil.copytree(_package_root() / "roles", copy)

    def digest():
        models = {"big": ModelConfig("b"), "small": ModelConfig("s")}
        return RunConfig(runner="spec", output_dir="x", models=models, prompt_set=str(copy)).digest()

    before = digest()
    assert digest() == before
    roles = copy / "roles.yaml"
    roles.write_text(roles.read_text() + "\nextra_role: Think in pictures.\n")
    assert digest() != before


def test_the_digest_covers_problems_sent_as_given():
    models = {"big": ModelConfig("b"), "small": ModelConfig("s")}
    config = RunConfig(runner="spec", output_dir="x", models=models)
    assert dataclasses.replace(config, problem_template=False).digest() != config.digest()


def test_the_digest_covers_the_stop_rule_and_the_step_limit_and_leaves_them_out_at_their_defaults():
    models = {"big": ModelConfig("b"), "small": ModelConfig("s")}
    config = RunConfig(runner="spec", output_dir="x", models=models)
    for changed in ({"stop_rule": "rsd"}, {"max_steps": 100}):
        reasoning = dataclasses.replace(config.reasoning, **changed)
        assert dataclasses.replace(config, reasoning=reasoning).digest() != config.digest()
        assert set(changed) <= set(decisive_reasoning(reasoning))
    # run folders made before the two flags keep their digest: at their defaults they are not in it
    assert not {"stop_rule", "max_steps"} & set(decisive_reasoning(config.reasoning))


def test_spec_run_folders_made_before_its_judges_and_drafts_keep_their_digest():
    models = {"big": ModelConfig("b"), "small": ModelConfig("s")}
    config = RunConfig(runner="spec", output_dir="x", models=models)
    # spec's settings as run folders hold them from before --scorer (tests/fixtures/runner_configs.json)
    before = {"first_n_steps_base_model": 0, "pipeline_depth": 0, "score_method": "greedy", "score_threshold": 7.0}
    assert decisive_policy(config.policy_settings) == before
    for changed in ({"scorer": "prm"}, {"drafts_per_step": 2}, {"prm_threshold": 0.5}):
        settings = dataclasses.replace(config.policy_settings, **changed)
        assert dataclasses.replace(config, policy_settings=settings).digest() != config.digest()
