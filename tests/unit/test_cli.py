"""Bad input: one clear line on stderr, exit code 2, and nothing written."""

import asyncio
import json
import threading

import aiohttp
import pytest

from engine.cli import main
from engine.config import ModelConfig, RunConfig
from engine.run import model_endpoints
from tests.fake_openai import FakeOpenAIServer


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
        (["--runner", "spec_scale", "--use_role_prompts", "--prompt_set", "default"], "has no roles.yaml"),
        (["--repeat_id", "a-b"], "--repeat_id"),
    ],
)
def test_bad_flags_give_one_line_and_exit_2(capsys, tmp_path, flags, message):
    code, errors = run_cli(capsys, tmp_path, *flags)
    assert code == 2
    assert len(errors) == 1 and message in errors[0]


def test_a_data_set_without_the_mapped_field_is_refused(capsys, tmp_path):
    data = problems_file(tmp_path, [{"question": "1+1?", "answer": "2"}])
    code, errors = run_cli(capsys, tmp_path, "--dataset_name", str(data), "--field", "problem=prompt")
    assert code == 2 and len(errors) == 1 and "prompt" in errors[0]


def test_an_empty_problem_selection_is_refused(capsys, tmp_path):
    data = problems_file(tmp_path, [{"id": i, "problem": f"{i}+1?", "answer": str(i + 1)} for i in range(60, 63)])
    code, errors = run_cli(capsys, tmp_path, "--dataset_name", str(data), "--problem_id", "90-99")
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
            assert endpoints == {"big": (urls, "fake-model")}
