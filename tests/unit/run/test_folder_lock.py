"""One runner per run folder: a second one is refused at once, naming the first; a crash frees the folder."""

import asyncio
import json
import os
import re
import signal
import socket
import subprocess
import sys
import textwrap
import time

import pytest

from benchmarks.harness import sim_process
from benchmarks.sim_behaviour import Latency, SimConfig
from engine.errors import UsageError
from engine.run.folder_lock import LOCK_FILE, hold_run_folder
from engine.run.store import MANIFEST_FILE, RECORDS_FILE, RunStore, read_records
from tests.unit.conftest import chatml_tokenizer

# A process that takes the folder's lock, says so, and keeps it until it is killed.
HOLDER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from engine.run.folder_lock import hold_run_folder
    with hold_run_folder(Path(sys.argv[1])):
        print("held", flush=True)
        time.sleep(600)
    """
)


@pytest.fixture
def holder(tmp_path):
    """holder(folder) -> a subprocess holding `folder`'s lock; killed at the end of the test."""
    started = []

    def start(folder):
        process = subprocess.Popen([sys.executable, "-c", HOLDER, str(folder)], stdout=subprocess.PIPE, text=True)
        started.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield start
    for process in started:
        if process.poll() is None:
            process.kill()
        process.wait()


def refusal(folder) -> str:
    with pytest.raises(UsageError) as refused, hold_run_folder(folder):
        pytest.fail("a second holder got the lock")
    return str(refused.value)


def test_a_second_holder_is_refused_with_the_first_ones_pid_host_and_start(tmp_path, holder):
    folder = tmp_path / "run"
    first = holder(folder)
    message = refusal(folder)
    assert "\n" not in message
    host = re.escape(socket.gethostname())
    assert re.fullmatch(
        rf"{re.escape(str(folder))} is in use by another runner \(pid {first.pid} on {host}, "
        r"started \d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ\); wait for it to end, or give another --output_dir",
        message,
    )


def test_two_holders_in_one_process_exclude_each_other(tmp_path):
    folder = tmp_path / "run"
    with hold_run_folder(folder):
        message = refusal(folder)
        assert f"pid {os.getpid()}" in message
    with hold_run_folder(folder):  # released on the way out of the first block
        assert (folder / LOCK_FILE).exists()


def test_a_killed_holder_frees_the_folder(tmp_path, holder):
    folder = tmp_path / "run"
    first = holder(folder)
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert (folder / LOCK_FILE).exists(), "kill -9 leaves the file behind; only the lock went"
    with hold_run_folder(folder):
        holder_now = json.loads((folder / LOCK_FILE).read_text())
        assert holder_now["pid"] == os.getpid()


def test_a_refused_holder_writes_nothing(tmp_path, holder):
    folder = tmp_path / "run"
    RunStore.open(folder, {"run_id": "r", "config_digest": "abc"})
    holder(folder)
    before = {p.name: p.read_bytes() for p in folder.iterdir()}
    assert set(before) == {MANIFEST_FILE, LOCK_FILE}
    refusal(folder)
    assert {p.name: p.read_bytes() for p in folder.iterdir()} == before


def test_a_block_that_writes_nothing_leaves_no_trace_but_keeps_what_it_wrote(tmp_path):
    untouched = tmp_path / "untouched"
    with hold_run_folder(untouched):
        assert (untouched / LOCK_FILE).exists()
    assert not untouched.exists()
    written = tmp_path / "written"
    with hold_run_folder(written):
        RunStore.open(written, {"run_id": "r", "config_digest": "abc"})
    assert sorted(p.name for p in written.iterdir()) == [MANIFEST_FILE]


# Two real runner processes on one folder, against the sim server (no vLLM): the first runs, the
# second is refused at once; after the first is killed, the same folder resumes without a key twice.
SIM = SimConfig(
    models={"small": Latency(request_s=0.01, token_s=0.01), "big": Latency(request_s=0.01, token_s=0.01)},
    steps_per_track=3,
    step_tokens=8,
)
# Bounds that only a broken runner reaches (a loaded machine starts one in well under a minute).
RUNNER_START_S = 180


@pytest.fixture
def tokenizer_dir(tmp_path):
    folder = tmp_path / "tokenizer"
    chatml_tokenizer().save_pretrained(folder)
    return folder


def runner_command(url: str, tokenizer, out, *flags: str) -> list[str]:
    return [
        sys.executable, "-m", "runners.spec", "--dataset_name", "demo",
        "--big_model", "big", "--big_url", url, "--big_tokenizer", str(tokenizer),
        "--small_model", "small", "--small_url", url, "--small_tokenizer", str(tokenizer),
        "--thinking", "on", "--output_dir", str(out), "--no_progress", "--log_json", *flags,
    ]  # fmt: skip


def records_written(out) -> int:
    path = out / RECORDS_FILE
    return path.read_bytes().count(b"\n") if path.exists() else 0


async def wait_until(process, log_path, what: str, condition) -> None:
    """Poll until `condition()` (a file the runner writes says so), failing if the runner exits."""
    deadline = time.monotonic() + RUNNER_START_S
    while not condition():
        assert process.returncode is None, f"the runner exited before {what}: {log_path.read_text()[-2000:]}"
        assert time.monotonic() < deadline, f"no {what} within {RUNNER_START_S} s"
        await asyncio.sleep(0.05)


async def test_a_second_runner_process_on_the_folder_is_refused_at_once(tmp_path, tokenizer_dir):
    out = tmp_path / "run"
    async with sim_process(SIM) as url:
        # Many repeats, one problem at a time. The first runner is stopped (SIGSTOP) while the second
        # comes, so it is still running then however slow the machine is; let go, it goes on.
        first_log = tmp_path / "first.log"
        with first_log.open("w") as stderr:
            first = await asyncio.create_subprocess_exec(
                *runner_command(url, tokenizer_dir, out, "--repeat_id", "0-49", "--max_problems_in_flight", "1"),
                stdout=asyncio.subprocess.DEVNULL,
                stderr=stderr,
            )
        try:
            await wait_until(first, first_log, "a first record", lambda: records_written(out) >= 1)
            first.send_signal(signal.SIGSTOP)
            files_before = {p.name for p in out.iterdir()}
            lock_before = (out / LOCK_FILE).read_bytes()

            second = await asyncio.create_subprocess_exec(
                *runner_command(url, tokenizer_dir, out, "--repeat_id", "0-49"),
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            stdout, stderr = await asyncio.wait_for(second.communicate(), RUNNER_START_S)

            assert second.returncode == 2, stderr.decode()[-2000:]
            assert stdout == b""
            (line,) = [ln for ln in stderr.decode().splitlines() if "error" in ln]
            assert f"is in use by another runner (pid {first.pid} on {socket.gethostname()}, started " in line
            assert {p.name for p in out.iterdir()} == files_before
            assert (out / LOCK_FILE).read_bytes() == lock_before, "the first runner's lock is untouched"
            written = records_written(out)
            first.send_signal(signal.SIGCONT)
            more = lambda: records_written(out) > written  # noqa: E731
            await wait_until(first, first_log, "another record (the first runner goes on)", more)
        finally:
            if first.returncode is None:
                first.kill()
            await first.wait()

        # The killed runner's lock went with it: the same folder is taken again and resumed.
        done_before = {r.key for r in read_records(out / RECORDS_FILE).records}
        again = await asyncio.create_subprocess_exec(
            *runner_command(url, tokenizer_dir, out, "--repeat_id", "0-1"),
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await asyncio.wait_for(again.communicate(), RUNNER_START_S * 2)
    assert again.returncode == 0, stderr.decode()[-2000:]
    keys = [r.key for r in read_records(out / RECORDS_FILE).records]
    assert len(keys) == len(set(keys)), "a key was written twice"
    assert set(keys) >= done_before | {(str(p), r) for p in range(6) for r in (0, 1)}
    assert not (out / LOCK_FILE).exists()
