"""runners.split: exactly one of SplitReason's mode flags picks the policy; SplitReason's flag names
and defaults; bad input is one line, exit 2, nothing written."""

import pytest

from engine.run.cli import main as engine_main
from runners.split import main
from tests.unit.run import runner_commands

SERVED = ["--big_model", "big-model", "--small_model", "small-model"]
NAMES = {"big": "big-model", "small": "small-model"}


def config_of(*flags):
    return runner_commands.config_of("split", *flags, names=NAMES)


@pytest.mark.parametrize(
    ("flag", "policy", "answer_model"),
    [
        ("--random_switch", "random_switch", "big"),
        ("--logprob_subselect", "logprob_subselect", "big"),
        ("--spec_reason", "spec_reason", "big"),
        ("--big_model_only", "big", "big"),
        ("--small-model-only", "small", "small"),
    ],
)
def test_each_mode_flag_runs_its_policy_with_splitreason_s_defaults(flag, policy, answer_model):
    config = config_of(flag)
    assert (config.policy, config.reasoning.answer_model) == (policy, answer_model)
    assert config.reasoning.token_budget == 16384 and config.reasoning.top_p == 1.0
    assert config.strategy_settings.tracks == 1


def test_mode_settings_come_from_splitreason_s_flags():
    switch = config_of("--random_switch", "--switch_ratio", "3", "--switch_chunk", "8").policy_settings
    assert (switch.switch_ratio, switch.switch_chunk) == (3, 8)
    subselect = config_of("--logprob_subselect", "--sgen", "4", "--ltok", "2", "--max_iterations", "5")
    assert (subselect.policy_settings.sgen, subselect.policy_settings.ltok, subselect.policy_settings.rounds) == (
        4,
        2,
        5,
    )
    assert (subselect.policy_settings.stok, subselect.policy_settings.sdecay, subselect.policy_settings.lbound) == (
        16,
        2,
        4,
    )
    assert config_of("--spec_reason", "--max_tokens", "300").reasoning.token_budget == 300
    assert config_of("--spec_reason", "--token_budget", "300", "--max_tokens", "300").reasoning.token_budget == 300


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([], "exactly one mode flag of --random_switch, --logprob_subselect"),
        (["--random_switch", "--spec_reason"], "exactly one mode flag"),
        (["--spec_reason", "--policy", "spec"], "drop --policy"),
        (["--spec_reason", "--max_tokens", "10", "--token_budget", "20"], "--max_tokens is SplitReason's name"),
        (["--logprob_subselect", "--ltok", "0"], "--ltok must be at least 1"),
        (["--random_switch", "--switch_chunk", "0"], "--switch_chunk must be at least 1"),
    ],
)
def test_bad_split_flags_give_one_line_and_exit_2(capsys, tmp_path, flags, message):
    out = tmp_path / "out"
    code = main(runner_commands.with_models("split", ["--output_dir", str(out), "--no_progress", *flags], NAMES))
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(errors) == 1 and message in errors[0], errors
    assert not out.exists()


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            ["--random_switch"],
            "--random_switch is a flag of runners.split; with runner spec use --policy random_switch",
        ),
        (["--max_tokens", "100"], "with runner spec use --token_budget"),
    ],
)
def test_split_flags_are_refused_by_other_runners(capsys, tmp_path, flags, message):
    out = tmp_path / "out"
    code = engine_main(["run", *SERVED, "--output_dir", str(out), "--no_progress", *flags])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(errors) == 1 and message in errors[0], errors
    assert not out.exists()
