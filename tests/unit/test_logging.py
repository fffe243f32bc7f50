"""Logging: a traceback on the console shows no local variable of its frames (a request's headers
hold the server's API key); the screen shows warnings and above unless --log_level says more, and a
command that writes a folder keeps every info event in its spectra.log."""

import json

import pytest
import structlog

from engine.logging import LOG_FILE, configure_logging, write_log_to
from runners.spectra import main
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.paths import REPO_ROOT
from tests.threaded_server import served_in_a_thread

TOY_TOKENIZER = REPO_ROOT / "engine" / "toy" / "weights" / "tokenizer"

KEY = "k-in-a-local-8d2e"


@pytest.fixture(autouse=True)
def _restore(restore_logging):
    yield


@pytest.mark.parametrize("json", [False, True])
def test_a_logged_traceback_names_the_error_but_no_local_variable(capsys, json):
    configure_logging(json=json)

    def send(headers):
        raise RuntimeError("the request failed")

    try:
        send({"Authorization": f"Bearer {KEY}"})
    except RuntimeError:
        structlog.get_logger("test").exception("track_error")
    err = capsys.readouterr().err
    assert "RuntimeError: the request failed" in err and "track_error" in err
    assert KEY not in err


def test_the_screen_shows_warnings_and_the_kept_log_every_info_event_from_the_first(capsys, tmp_path):
    configure_logging(keep=True)
    log = structlog.get_logger("test")
    log.info("before_the_folder", n=1)  # held until the command names its log file
    log.warning("slow_server", url="u")
    assert write_log_to(tmp_path / "run") == tmp_path / "run" / LOG_FILE
    log.info("after_the_folder")
    log.debug("chatter")
    screen = capsys.readouterr().err
    assert "slow_server" in screen and "before_the_folder" not in screen and "after_the_folder" not in screen
    kept = (tmp_path / "run" / LOG_FILE).read_text().splitlines()
    assert [line.split("] ")[1].split()[0] for line in kept] == ["before_the_folder", "slow_server", "after_the_folder"]
    assert "\x1b[" not in "".join(kept), "no colours in the file"
    # a process keeps one log: a later folder (the demo's next run) does not move it
    assert write_log_to(tmp_path / "other") == tmp_path / "run" / LOG_FILE and not (tmp_path / "other").exists()


def test_log_level_info_brings_the_info_events_back_to_the_screen(capsys):
    configure_logging(level="info")
    structlog.get_logger("test").info("run_start", todo=2)
    assert "run_start" in capsys.readouterr().err


def test_a_command_that_keeps_no_log_writes_no_file(tmp_path):
    configure_logging()
    assert write_log_to(tmp_path / "run") is None and not (tmp_path / "run").exists()


def run_command(tmp_path, *flags):
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"id": "0", "problem": "What is 2 + 2?", "answer": "4"}) + "\n")
    out = tmp_path / "run"
    argv = ["run", "--runner", "base", "--big_model", "fake-model", "--big_tokenizer", str(TOY_TOKENIZER)]
    argv += ["--dataset_name", str(problems), "--output_dir", str(out), "--no_progress", *flags]
    with served_in_a_thread(FakeOpenAIServer(lambda body: Reply("So \\boxed{4}"))) as url:
        assert main([*argv, "--big_url", url]) == 0
    return out


def test_a_run_shows_no_info_on_the_screen_and_keeps_it_in_its_folder(capsys, tmp_path):
    out = run_command(tmp_path)
    screen = capsys.readouterr()
    assert screen.err == "" and screen.out.startswith("problem")
    kept = (out / LOG_FILE).read_text()
    assert "run_start" in kept and "server_warmed" in kept and "run_models_ready" in kept


def test_a_run_with_log_level_info_shows_it_on_the_screen_too(capsys, tmp_path):
    out = run_command(tmp_path, "--log_level", "info")
    assert "run_start" in capsys.readouterr().err and "run_start" in (out / LOG_FILE).read_text()
