"""Bad input: one clear line on stderr, exit code 2, and nothing written."""

import asyncio
import json
import threading

import aiohttp
import pytest

from engine.errors import UsageError
from engine.run.config import ModelConfig, RunConfig
from engine.run.execute import model_endpoints, roles_needed
from runners.spectra import main
from tests.fake_openai import FakeOpenAIServer
from tests.unit.run.runner_commands import config_of


def problems_file(tmp_path, rows):
    path = tmp_path / "problems.jsonl"
    path.write_text("".join(json.dumps(row) + "\n" for row in rows))
    return path


def run_cli(capsys, tmp_path, *flags):
    out = tmp_path / "out"
    try:
        code = main(["run", "--output_dir", str(out), "--no_progress", *flags])
    except SystemExit as exited:  # argparse's own refusals
        code = exited.code
    err = capsys.readouterr().err
    errors = [line for line in err.splitlines() if "error" in line]
    assert not out.exists(), "a refused run must write nothing"
    return code, errors


SERVED = ["--big_model", "fake-model", "--small_model", "fake-model"]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dataset_name", "aime2099"], "unknown data set 'aime2099'"),
        (["--dataset_name", "missing/file.jsonl"], "missing/file.jsonl"),
        (["--prompt_set", "no_such_set"], "no_such_set"),
        (["--score_method", "median"], "invalid choice: 'median'"),
        (["--score_threshold", "high"], "invalid float value: 'high'"),
        (["--score_threshold", "12"], "--score_threshold must be between 0 and 9"),
        (["--tracks", "0"], "--tracks must be at least 1"),
        (["--runner", "spec_scale", "--use_role_prompts", "--prompt_set", "clean"], "has no roles.yaml"),
        (["--repeat_id", "a-b"], "--repeat_id"),
        (["--runner", "spec_scale", "--repeat_id", "3"], "use --num_repeats N for N repeats, or --repeat_id 3-3"),
        (["--runner", "base", "--repeat_id", "0"], "--repeat_id 0 is ambiguous here"),
        (["--runner", "scale", "--num_repeats", "2", "--repeat_id", "0-1"], "not both"),
        (["--runner", "scale", "--num_repeats", "0"], "--num_repeats must be at least 1"),
        (["--tracks_in_flight", "0"], "--tracks_in_flight must be at least 1"),
        (["--early_stop_confidence", "0.9"], "--early_stop_confidence needs --early_stop"),
        (["--early_stop", "--early_stop_confidence", "1"], "--early_stop_confidence must be in (0.5, 1)"),
        (["--early_stop", "--early_stop_confidence", "0.5"], "--early_stop_confidence must be in (0.5, 1)"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(capsys, tmp_path, flags, message):
    code, errors = run_cli(capsys, tmp_path, *SERVED, *flags)
    assert code == 2
    assert len(errors) == 1 and message in errors[0]


def parsed(runner, *flags):
    """The config of `runners.<runner> FLAGS`, given the models it calls."""
    return config_of(runner, *flags)


def test_speclrm_runners_take_num_repeats_and_spec_scale_uses_roles_by_default():
    config = parsed("spec_scale", "--num_repeats", "3")
    assert config.data.repeat_id == "0-2"
    assert config.strategy_settings.use_role_prompts and config.strategy_settings.tracks == 3
    for runner in ("scale", "spec_scale", "spec_scale_methods"):
        assert parsed(runner).strategy_settings.aggregation == "speclrm"
    assert parsed("spec_scale", "--aggregation", "majority").strategy_settings.aggregation == "majority"
    assert parsed("spec").strategy_settings.aggregation == "majority"
    # a range or list is not ambiguous; SpecReason's runner keeps --repeat_id N as one id
    assert parsed("scale", "--repeat_id", "0-1").data.repeat_id == "0-1"
    assert parsed("spec", "--repeat_id", "3").data.repeat_id == "3"
    assert not parsed("scale").strategy_settings.use_role_prompts


def test_window_and_confidence_flags_reach_the_vote_settings():
    given = parsed("scale", "--tracks_in_flight", "2", "--early_stop", "--early-stop-confidence", "0.95")
    default = parsed("scale").strategy_settings
    assert (given.strategy_settings.tracks_in_flight, given.strategy_settings.early_stop_confidence) == (2, 0.95)
    assert (default.tracks_in_flight, default.early_stop_confidence) == (None, None)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--dataset_name", "aime"], "--dataset_name aime needs real models: give --big_model and --small_model"),
        ([*SERVED, "--model", "small"], "--model has no effect in spec (its tracks use both models)"),
        ([*SERVED, "--runner", "spec_scale_methods", "--model", "big"], "--model has no effect in spec_scale_methods"),
        # flags of a strategy or policy the run does not use change nothing: refused
        (
            [*SERVED, "--strategy", "best_of_n", "--tracks", "8", "--early_stop"],
            "--tracks belongs to strategy vote, and this run's strategy is best_of_n",
        ),
        (
            [*SERVED, "--runner", "base", "--score_threshold", "5"],
            "--score_threshold belongs to policy spec, and this run's policy is big",
        ),
        (
            [*SERVED, "--runner", "rast", "--switch_ratio", "2"],
            "--switch_ratio belongs to policy random_switch, and strategy rast runs no step policy",
        ),
        (
            [*SERVED, "--runner", "spec", "--n", "4"],
            "--n belongs to strategy best_of_n or beam_search or dvts, and this run's strategy is vote",
        ),
    ],
)
def test_setups_that_would_silently_do_something_else_are_refused(capsys, tmp_path, flags, message):
    code, errors = run_cli(capsys, tmp_path, *flags)
    assert code == 2 and len(errors) == 1 and message in errors[0]


def test_flags_of_the_specs_in_use_are_taken():
    assert parsed("spec", "--score_threshold", "5").policy_settings.score_threshold == 5
    assert parsed("search", "--n", "4", "--approach", "dvts", "--scorer", "judge").strategy_settings.n == 4
    assert parsed("scale", "--tracks", "8", "--early_stop").strategy_settings.early_stop


def test_step_delimiter_typed_in_a_shell_means_newlines():
    assert parsed("spec", "--step_delimiter", "\\n\\n").reasoning.step_delimiter == "\n\n"
    assert parsed("spec", "--step-delimiter", "\\nStep:").reasoning.step_delimiter == "\nStep:"
    assert parsed("spec", "--step_delimiter", "\n\n").reasoning.step_delimiter == "\n\n"
    assert parsed("spec").reasoning.step_delimiter == "\n\n"


def test_a_data_set_without_the_mapped_field_is_refused(capsys, tmp_path):
    data = problems_file(tmp_path, [{"question": "1+1?", "answer": "2"}])
    code, errors = run_cli(capsys, tmp_path, *SERVED, "--dataset_name", str(data), "--field", "problem=prompt")
    assert code == 2 and len(errors) == 1 and "prompt" in errors[0]


def test_an_empty_problem_selection_is_refused(capsys, tmp_path):
    data = problems_file(tmp_path, [{"id": i, "problem": f"{i}+1?", "answer": str(i + 1)} for i in range(60, 63)])
    code, errors = run_cli(capsys, tmp_path, *SERVED, "--dataset_name", str(data), "--problem_id", "90-99")
    assert code == 2 and len(errors) == 1 and "90-99" in errors[0]


def test_an_invalid_prompt_set_folder_is_refused(capsys, tmp_path):
    folder = tmp_path / "myset"
    folder.mkdir()
    (folder / "roles.yaml").write_text("{}\n")
    code, errors = run_cli(capsys, tmp_path, "--prompt_set", str(folder))
    assert code == 2 and len(errors) == 1 and "roles.yaml" in errors[0]


def test_an_unreachable_server_is_refused_before_anything_is_written(capsys, tmp_path):
    code, errors = run_cli(
        capsys, tmp_path, *SERVED, "--big_url", "http://127.0.0.1:9", "--small_url", "http://127.0.0.1:9"
    )
    assert code == 2 and len(errors) == 1
    assert "cannot reach model server at http://127.0.0.1:9" in errors[0] and "--big_url" in errors[0]


def test_a_model_the_server_does_not_serve_is_refused(capsys, tmp_path):
    # The CLI runs its own event loop, so the fake server lives in a thread of its own.
    ready, stop = threading.Event(), threading.Event()
    holder = {}

    def serve():
        async def body():
            async with FakeOpenAIServer([]) as server:
                holder["url"] = server.url
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.02)

        asyncio.run(body())

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert ready.wait(10)
        code, errors = run_cli(
            capsys,
            tmp_path,
            "--big_model",
            "qwq",
            "--small_model",
            "fake-model",
            "--big_url",
            holder["url"],
            "--small_url",
            holder["url"],
        )
    finally:
        stop.set()
        thread.join()
    assert code == 2 and len(errors) == 1
    assert "model 'qwq' is not served" in errors[0] and "fake-model" in errors[0]


def test_help_works_for_every_command(capsys):
    for command in (
        ["--help"],
        ["run", "--help"],
        ["serve", "--help"],
        ["make-tiny-models", "--help"],
        ["eval", "--help"],
    ):
        with pytest.raises(SystemExit) as exited:
            main(command)
        assert exited.value.code == 0
        assert "usage:" in capsys.readouterr().out


async def test_one_live_replica_is_enough_and_dead_ones_are_kept_for_failover(tmp_path):
    async with FakeOpenAIServer([]) as live, aiohttp.ClientSession() as session:
        urls = ("http://127.0.0.1:9", live.url)
        config = RunConfig(
            runner="base",
            output_dir=str(tmp_path),
            models={"big": ModelConfig("fake-model", urls), "small": ModelConfig("unused")},
            policy="big",
        )
        async with model_endpoints(config, session) as endpoints:
            assert list(endpoints) == ["big"]
            assert (endpoints["big"].urls, endpoints["big"].served, endpoints["big"].max_model_len) == (
                urls,
                "fake-model",
                None,
            )


def test_the_answer_model_is_needed_only_with_the_answer_phase():
    with pytest.raises(UsageError, match="--answer_model changes nothing here: the answer phase is off"):
        parsed("base", "--model", "small", "--answer_model", "big")
    small_only = parsed("base", "--model", "small")
    assert roles_needed(small_only) == ["small"] and set(small_only.models) == {"small"}
    answered = parsed("base", "--model", "small", "--answer_model", "big", "--answer_phase")
    assert roles_needed(answered) == ["big", "small"] and set(answered.models) == {"big", "small"}
