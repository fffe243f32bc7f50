"""Each runner's --help lists the flags that runner takes, in the groups models, data, method,
limits and output; flags of other specs still parse (and are refused unless chosen)."""

import importlib
import re

import pytest

RUNNERS = {
    # runner: (flags its help must list, flags it must not)
    "rast": (
        ["--dataset", "--num_runs", "--base_model", "--positive_model", "--cd_decoding_alpha", "--gamma", "--seed"],
        ["--score_threshold", "--sgen", "--beam_width", "--big_model", "--token_budget", "--random_switch"],
    ),
    "split": (
        ["--random_switch", "--spec_reason", "--sgen", "--switch_ratio", "--big_model", "--small_model", "--tracks"],
        ["--cd_decoding_alpha", "--beam_width", "--base_model", "--score_threshold", "--approach", "--model_name"],
    ),
    "search": (
        ["--approach", "--beam_width", "--agg_strategy", "--prm_model", "--small_model", "--n"],
        ["--cd_decoding_alpha", "--sgen", "--random_switch", "--base_model", "--score_threshold"],
    ),
    "spec": (
        ["--score_threshold", "--pipeline_depth", "--big_model", "--small_model", "--tracks"],
        ["--sgen", "--beam_width", "--cd_decoding_alpha", "--prm_model", "--approach", "--dataset"],
    ),
    "base": (["--model", "--model_name", "--stepwise", "--big_model"], ["--score_threshold", "--gamma"]),
}
GROUPS = ["models:", "data:", "method:", "limits:", "output:"]


def help_text(runner: str, capsys) -> str:
    module = importlib.import_module(f"runners.{runner}")
    with pytest.raises(SystemExit) as exit_:
        module.main(["--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize("runner", sorted(RUNNERS))
def test_help_lists_the_runners_own_flags_in_five_groups(runner, capsys):
    text = help_text(runner, capsys)
    listed = set(re.findall(r"^\s+(--[a-z_]+)", text, flags=re.MULTILINE))
    shown, hidden = RUNNERS[runner]
    assert set(shown) <= listed, set(shown) - listed
    assert not set(hidden) & listed, set(hidden) & listed
    headings = [line for line in text.splitlines() if line in GROUPS]
    assert headings == GROUPS
