"""Runner plans are data read by pure functions: `build_config(plan, flags)` leaves its flags as
they were and gives every runner command the RunConfig it gave before the plans (captured in
tests/fixtures/runner_configs.json from the code before them); each plan names real methods and
flags; the seeds' translations (RAST's, SplitReason's, search-and-learn's) are pure."""

import copy
import dataclasses
import json

import pytest

from engine.errors import UsageError
from engine.reasoning.policies import POLICIES
from engine.reasoning.strategies import STRATEGIES
from engine.run.configure import build_config
from engine.run.flags import SETTINGS_CLASSES, parse_run_flags
from engine.run.runner_plans import PLANS, RUNNERS, plan_defaults
from tests.paths import FIXTURES

CAPTURED = json.loads((FIXTURES / "runner_configs.json").read_text())
TOY = "<TOY>"


@pytest.fixture(scope="module")
def toy_dir(tmp_path_factory):
    return str(tmp_path_factory.mktemp("toy-models"))


def command(entry, toy_dir):
    """The captured command as `(plan, flags)`: `spectra run ARGV` or `runners.<runner> ARGV`."""
    argv = [arg.replace(TOY, toy_dir) for arg in entry["argv"]]
    if entry["runner"] == "spectra":
        return parse_run_flags("spec", argv[1:], choose_runner=True)
    return parse_run_flags(entry["runner"], argv)


def agrees(captured, now, where="config"):
    """Every value captured is the value now (a field added since, with its default, is no change)."""
    if isinstance(captured, dict):
        missing = set(captured) - set(now)
        assert not missing, f"{where}: {missing} gone"
        for key, value in captured.items():
            agrees(value, now[key], f"{where}.{key}")
    else:
        assert captured == now, f"{where}: {captured!r} then, {now!r} now"


def as_json(config):
    return json.loads(json.dumps(config.to_dict(), default=list))


@pytest.mark.parametrize("entry", CAPTURED, ids=[f"{e['runner']}-{i}" for i, e in enumerate(CAPTURED)])
def test_every_runner_command_builds_the_config_it_built_before_the_plans(entry, toy_dir):
    plan, flags = command(entry, toy_dir)
    before = copy.deepcopy(flags)
    config = build_config(plan, flags)
    assert flags == before, "build_config changed the flags it was given"
    expected = json.loads(json.dumps(entry["config"]).replace(TOY, toy_dir))
    agrees(expected, as_json(config))
    assert build_config(plan, flags) == config, "the same flags give the same config"


def test_the_captured_commands_cover_every_runner():
    assert {
        e["argv"][e["argv"].index("--runner") + 1] if "--runner" in e["argv"] else e["runner"] for e in CAPTURED
    } >= {plan.name for plan in PLANS}


FLAG_NAMES = {f.name for cls in SETTINGS_CLASSES for f in dataclasses.fields(cls)} | {
    "prompt_set",
    "prompt_format",
    "gpqa_order",
    "thinking",
}


@pytest.mark.parametrize("plan", PLANS, ids=[p.name for p in PLANS])
def test_a_plan_names_methods_and_flags_that_exist(plan):
    assert plan.policy in POLICIES and plan.strategy in STRATEGIES
    assert set(plan.policies_shown) <= set(POLICIES) and set(plan.strategies_shown) <= set(STRATEGIES)
    assert plan.strategy in plan.strategies_shown
    assert set(plan.defaults) <= FLAG_NAMES, set(plan.defaults) - FLAG_NAMES
    assert set(plan.alone_settings) <= FLAG_NAMES
    assert RUNNERS[plan.name] is plan
    with pytest.raises(TypeError):
        plan.defaults["tracks"] = 99  # frozen: a plan is data, shared by every reader


def test_the_model_that_reasons_alone_also_answers_and_selects_in_speclrm_s_baselines():
    speclrm = {"tracks": 1, "prompt_format": "raw", "gpqa_order": "seed"}
    alone = {**speclrm, "answer_model": "small", "selector_model": "small"}
    assert plan_defaults(RUNNERS["base"], "small") == alone
    assert plan_defaults(RUNNERS["base"], "spec") == speclrm
    assert plan_defaults(RUNNERS["split"], "small")["answer_model"] == "small"
    assert "answer_model" not in plan_defaults(RUNNERS["split"], "random_switch")
    assert "answer_model" not in plan_defaults(RUNNERS["spec"], "small")


def test_lookahead_takes_its_reference_s_step_size_where_no_runner_or_flag_sets_one(toy_dir):
    # Lookahead Reasoning's steps are 100 tokens (its `step_tokens`), SpecReason's 512; the demo's
    # short steps and a flag given come over it.
    assert plan_defaults(RUNNERS["spec"], "lookahead")["max_step_tokens"] == 100
    assert "max_step_tokens" not in plan_defaults(RUNNERS["spec"], "spec")
    models = ["--big_model", "b", "--small_model", "s"]
    lookahead = ["--policy", "lookahead", "--judge_model", "j"]
    for argv, tokens in (
        (lookahead, 100),
        ([*lookahead, "--max_step_tokens", "512"], 512),
        (["--policy", "spec"], 512),
    ):
        assert build_config(*parse_run_flags("spec", [*models, *argv])).reasoning.max_step_tokens == tokens
    demo = build_config(*parse_run_flags("spec", ["--policy", "lookahead", "--toy_models_dir", toy_dir]))
    assert demo.reasoning.max_step_tokens == 48
    # The demo's judge is the small toy model (never taught "[aligned]": the free check keeps its drafts).
    assert demo.models["judge"].model == demo.models["small"].model


def translated(runner, **flags):
    given = dict(flags)
    out = RUNNERS[runner].translate(given)
    assert given == flags, "translate changed its input"
    return out


def test_rast_dataset_names_and_num_runs_become_spectra_flags():
    out = translated("rast", dataset="MATH", num_runs=32, gamma=4)
    assert (out["dataset_name"], out["repeat_id"], out["gamma"]) == ("math500", "0-31", 4)
    assert out["dataset"] is None and out["num_runs"] is None  # spectra's flags now
    assert translated("rast", dataset="aime")["dataset_name"] == "aime24"
    with pytest.raises(UsageError, match="--dataset Olympiad has no spectra preset"):
        translated("rast", dataset="Olympiad")
    with pytest.raises(UsageError, match="--num_runs must be at least 1"):
        translated("rast", num_runs=0)
    with pytest.raises(UsageError, match="give one of them"):
        translated("rast", num_runs=2, repeat_id="0")
    with pytest.raises(UsageError, match="--dataset is RAST's name for --dataset_name"):
        translated("rast", dataset="MATH", dataset_name="aime24")


def test_rast_runs_its_runners_ten_runs_by_default_and_refuses_its_extra_pairs():
    # vllm/tests/RAST_decode/run.py: --num_runs defaults to 10.
    assert translated("rast", dataset="MATH")["repeat_id"] == "0-9"
    assert translated("rast", repeat_id="3")["repeat_id"] == "3"
    assert "repeat_id" not in translated("rast", num_repeats=2)
    for extra in ("positive_model1", "negative_model1", "positive_model2", "negative_model2"):
        with pytest.raises(UsageError, match=f"--{extra} names a second or third RAST pair"):
            translated("rast", **{extra: "Qwen/Qwen2.5-7B"})
    plan, flags = parse_run_flags("spec", ["--positive_model1", "m"])
    with pytest.raises(UsageError, match="--positive_model1 is a flag of runners.rast"):
        build_config(plan, flags)


def test_seed_flag_names_become_spectra_s_and_a_clash_is_refused():
    assert translated("split", spec_reason=True, max_tokens=300)["token_budget"] == 300
    assert translated("search", approach="dvts", max_tokens=100)["strategy"] == "dvts"
    assert translated("search", max_tokens=100)["max_step_tokens"] == 100
    assert translated("base", model="small")["policy"] == "small"
    assert translated("spec_scale_methods", method_num=5)["tracks"] == 5
    assert translated("spec_scale_methods", method_num=5, tracks=2)["tracks"] == 2
    with pytest.raises(UsageError, match="--approach is search-and-learn's name for --strategy"):
        translated("search", approach="dvts", strategy="beam_search")
    with pytest.raises(UsageError, match="--max_tokens is search-and-learn's name for --max_step_tokens"):
        translated("search", max_tokens=100, max_step_tokens=200)
    with pytest.raises(UsageError, match="--model small and --policy spec both choose the policy"):
        translated("base", model="small", policy="spec")
