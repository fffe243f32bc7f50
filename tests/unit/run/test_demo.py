"""The demo's methods run one after another on one set of servers, warmed once before anything is
timed; the log goes to the first run's folder; with nothing left to run, no server is called."""

import json

from engine.logging import LOG_FILE, configure_logging
from engine.reasoning.settings import ReasoningConfig
from engine.run.config import DataConfig, ModelConfig, RunConfig
from engine.run.configure import config_of_command
from engine.run.demo import DemoRun, demo_model_flags, demo_runs, run_demo
from engine.run.runner_plans import RUNNERS
from engine.run.store import MANIFEST_FILE
from engine.serving.vllm_command import ServerSpec, server_command
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.paths import REPO_ROOT

TOY_TOKENIZER = str(REPO_ROOT / "engine" / "toy" / "weights" / "tokenizer")


def alone(role: str, url: str, problems, folder) -> RunConfig:
    """Runner base with one model: one request a problem."""
    return RunConfig(
        runner="base",
        output_dir=str(folder),
        models={role: ModelConfig("fake-model", (url,), tokenizer=TOY_TOKENIZER)},
        policy=role,
        reasoning=ReasoningConfig(token_budget=32),
        data=DataConfig(dataset_name=str(problems)),
    )


async def test_the_methods_share_servers_warmed_once_before_the_first_problem(tmp_path, capsys, restore_logging):
    problems = tmp_path / "problems.jsonl"
    rows = [{"id": str(i), "problem": "What is 2 + 2?", "answer": "4"} for i in range(3)]
    problems.write_text("".join(json.dumps(row) + "\n" for row in rows))
    said = []
    configure_logging(keep=True)
    async with (
        FakeOpenAIServer(lambda body: Reply("So \\boxed{4}")) as small,
        FakeOpenAIServer(lambda body: Reply("So \\boxed{4}")) as big,
    ):
        runs = [
            ("small alone", alone("small", small.url, problems, tmp_path / "demo")),
            ("big alone", alone("big", big.url, problems, tmp_path / "demo-big_alone")),
        ]
        outcomes = await run_demo(runs, overwrite=False, progress=False, say=said.append)
        assert small.purposes == ["warm_up", *["step"] * 3] and big.purposes == ["warm_up", *["step"] * 3]
        # the servers' URLs are each run's own, in its manifest
        manifest = json.loads((tmp_path / "demo" / MANIFEST_FILE).read_text())
        assert manifest["servers"]["small"]["urls"] == [small.url]
        log = (tmp_path / "demo" / LOG_FILE).read_text()
        again = await run_demo(runs, overwrite=False, progress=False, say=said.append)
        assert len(small.requests) == len(big.requests) == 4, "nothing left to run: no server called"
    assert [(o.new, o.resumed, len(o.records)) for o in outcomes] == [(3, 0, 3), (3, 0, 3)]
    assert [(o.new, o.resumed) for o in again] == [(0, 3), (0, 3)]
    assert [o.store.folder.name for o in outcomes] == ["demo", "demo-big_alone"]
    assert log.count("server_warmed") == 2 and log.count("run_start") == 2
    assert not (tmp_path / "demo-big_alone" / LOG_FILE).exists(), "one log, in the first run's folder"
    assert len(said) == 2 and said[0].startswith("starting vLLM servers") and "warming" in said[1]
    assert capsys.readouterr().out == "", "what is happening is said, not printed to stdout"


def test_a_speculative_runner_s_demo_runs_each_judge_with_its_own_flags_then_the_big_model_alone():
    flags = {"problem_id": "0-2", "prm_threshold": 0.8, "score_threshold": 6.0}
    prm, judge, big = demo_runs(RUNNERS["spec"], flags)
    prm_flags = {**flags, "scorer": "prm", "prm_kind": "tag_token", "score_threshold": None, "score_method": None}
    assert prm == DemoRun("spec (PRM judge)", None, prm_flags, "")
    assert judge.flags == {**flags, "scorer": "judge", "prm_threshold": None, "prm_kind": None}
    assert judge.folder_suffix == "-big_judge"
    assert (big.runner, big.flags["model"], big.flags["problem_id"]) == ("base", "big", "0-2")
    assert big.flags["score_threshold"] is None, "the base runner refuses a step policy's flags"


def test_scorer_names_the_one_judge_the_demo_runs():
    (judge, big) = demo_runs(RUNNERS["spec"], {"scorer": "judge"})
    assert (judge.name, judge.folder_suffix, big.name) == ("spec (big judge)", "", "big model alone")
    (prm, _) = demo_runs(RUNNERS["spec"], {"scorer": "prm", "prm_kind": "pooling"})
    assert prm.flags["prm_kind"] == "pooling"


def test_every_toy_model_is_served_in_float32_as_it_is_measured(tmp_path):
    """vLLM's --dtype auto would serve the float32 toy checkpoints in bfloat16 on a CPU."""
    toy = ["--toy_models_dir", str(tmp_path)]
    for runner, argv in (
        ("spec", ["--scorer", "prm", "--prm_kind", "pooling"]),
        ("spec", ["--policy", "lookahead", "--verifier", "embedding"]),
        ("spec", ["--policy", "lookahead"]),
    ):
        models = config_of_command(runner, [*toy, *argv]).models
        assert len(models) >= 3
        for role, model in models.items():
            # argparse keeps a flag's last value: the toy models' flags come after the role's own
            command = server_command(ServerSpec(name=role, model=model.model, extra_args=model.server_args), 8000)
            last = max(i for i, arg in enumerate(command) if arg == "--dtype")
            assert command[last + 1] == "float32", role
    # `spectra api` gives the toy models as flags
    flags = demo_model_flags({"toy_models_dir": str(tmp_path)}, ["big", "small"])
    assert flags["big_server_args"] == flags["small_server_args"] == "--dtype float32"
    assert flags["big_model"].endswith("big-costly")


def test_every_runner_sends_the_toy_models_the_default_set_they_were_taught(tmp_path):
    toy = ["--toy_models_dir", str(tmp_path)]
    assert config_of_command("split", [*toy, "--spec_reason"]).prompt_set == "default"
    assert config_of_command("search", toy).prompt_set == "default"
    given = config_of_command("split", [*toy, "--spec_reason", "--prompt_set", "splitreason"])
    assert given.prompt_set == "splitreason"
