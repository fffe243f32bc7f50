"""Each runner's --help lists the flags that runner takes, in the groups models, data, method,
limits and output, and those of the policy and strategy the command line selects
(`--strategy deepconf --help` lists DeepConf's); flags of other specs still parse (and are refused
unless chosen)."""

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
        ["--approach", "--beam_width", "--agg_strategy", "--prm_model", "--small_model", "--n", "--temperature"],
        # search-and-learn writes its own steps: the track flags it reads, no policy's, no probing
        ["--cd_decoding_alpha", "--sgen", "--random_switch", "--base_model", "--score_threshold", "--token_budget"]
        + ["--stepwise", "--probe_every"],
    ),
    "spec": (
        # its judge is chosen by --scorer: the PRM's flags too (issue 32.1)
        ["--score_threshold", "--pipeline_depth", "--big_model", "--small_model", "--tracks", "--scorer"]
        + ["--prm_threshold", "--prm_model", "--drafts_per_step"],
        ["--sgen", "--beam_width", "--cd_decoding_alpha", "--approach", "--dataset"],
    ),
    "base": (["--model", "--model_name", "--stepwise", "--big_model"], ["--score_threshold", "--gamma"]),
}
GROUPS = ["models:", "data:", "method:", "limits:", "output:"]


def help_text(runner: str, capsys, argv=()) -> str:
    module = importlib.import_module(f"runners.{runner}")
    with pytest.raises(SystemExit) as exit_:
        module.main([*argv, "--help"])
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


def listed_flags(argv, capsys, runner="scale") -> set[str]:
    text = help_text(runner, capsys, argv)
    return set(re.findall(r"^\s+(--[a-z_]+)", text, flags=re.MULTILINE))


@pytest.mark.parametrize(
    ("runner", "argv", "shown", "hidden"),
    [
        (
            "scale",
            ["--strategy", "deepconf"],
            ["--deepconf_keep", "--deepconf_online", "--deepconf_traces", "--stepwise", "--model"],
            ["--tracks", "--early_stop", "--score_threshold"],
        ),
        ("spec", ["--policy", "lookahead"], ["--lookahead_steps", "--verifier", "--tracks"], ["--score_threshold"]),
        ("spec", ["--policy=takeover", "--strategy=deepconf"], ["--deepconf_keep"], ["--tracks", "--score_threshold"]),
        ("split", ["--random_switch"], ["--switch_ratio", "--switch_chunk"], ["--sgen", "--stepwise"]),
        ("search", ["--approach", "dvts"], ["--beam_width", "--prm_model"], ["--tracks", "--stepwise"]),
        ("base", ["--model", "small"], ["--stepwise", "--small_model"], ["--score_threshold"]),
        ("spectra", ["run", "--runner", "rast"], ["--dataset", "--num_runs", "--gamma", "--runner"], ["--tracks"]),
        ("spectra", ["run", "--strategy", "deepconf"], ["--deepconf_keep", "--score_threshold"], ["--tracks"]),
    ],
)
def test_help_lists_the_flags_of_the_methods_the_command_line_selects(runner, argv, shown, hidden, capsys):
    listed = listed_flags(argv, capsys, runner)
    assert set(shown) <= listed, set(shown) - listed
    assert not set(hidden) & listed, set(hidden) & listed


def test_spectra_help_names_the_toy_demo_and_the_methods_command(capsys):
    from runners.spectra import main

    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "with no models, the toy demo (trained toy models)" in text and "tiny demo" not in text
    assert "methods list every runner, policy and strategy" in text
