"""Stopping a run from outside: Ctrl-C, `kill -9`, and running the same command again.

Runners run as subprocesses against the session's tiny vLLM servers (or servers they start
themselves), as a user would run them. Ctrl-C must cancel what is in flight, keep the finished
records, stop the servers spectra started, and exit 130; a `kill -9` must leave at most a
partial last line, and the same command must then finish the run without redoing records.
"""

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import sys
import time
from pathlib import Path

import aiohttp
import pytest

from engine.run.store import MANIFEST_FILE, RECORDS_FILE, read_records
from tests.integration.test_runs import FINISH_REASONS, SHORT
from tests.integration.test_servers import metric

# What the `spectra` console script runs.
SPECTRA = [sys.executable, "-c", "import sys; from runners.spectra import main; sys.exit(main())"]
DEMO_PROBLEMS = 6
RUN_TIMEOUT_S = 300


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


class Runner:
    """A runner subprocess in its own session (like a job in a terminal: a signal to its group
    reaches it and nothing else), its stderr logged to a file so that it never blocks on a pipe."""

    def __init__(self, process: asyncio.subprocess.Process, log: Path):
        self.process = process
        self.log = log
        self.server_groups: set[int] = set()  # process groups of the vLLM servers it started

    @property
    def pid(self) -> int:
        return self.process.pid

    def stderr(self) -> str:
        return self.log.read_text(errors="replace")

    def events(self) -> list[dict]:
        """The JSON log events written so far (`--log_json`), up to the last whole line."""
        whole_lines = self.stderr().rpartition("\n")[0]
        return [json.loads(line) for line in whole_lines.splitlines() if line.startswith("{")]

    def find_servers(self) -> set[int]:
        """The process groups of the vLLM servers it runs now; each server leads its own group."""
        found = {
            pid
            for pid, (parent, group, cmdline) in _processes().items()
            if parent == self.pid and group == pid and "vllm.entrypoints.openai.api_server" in cmdline
        }
        self.server_groups |= found
        return found

    def signal(self, sig: int) -> None:
        os.killpg(self.pid, sig)

    async def finish(self) -> tuple[int, str]:
        """Wait for the exit; its code and its stdout."""
        stdout, _ = await asyncio.wait_for(self.process.communicate(), RUN_TIMEOUT_S)
        return self.process.returncode, stdout.decode()


@pytest.fixture
async def launch(tmp_path):
    """Start runners; when the test ends, any still running is killed, and so are the servers
    they were seen to start (which a runner that died without cleaning up leaves behind)."""
    started: list[Runner] = []

    async def launch_(command: list[str]) -> Runner:
        log = tmp_path / f"runner-{len(started)}.log"
        with log.open("wb") as stderr:
            process = await asyncio.create_subprocess_exec(
                *command, stdout=asyncio.subprocess.PIPE, stderr=stderr, start_new_session=True
            )
        started.append(Runner(process, log))
        return started[-1]

    yield launch_
    for runner in started:
        groups = sorted(runner.server_groups)
        if runner.process.returncode is None:
            groups = [runner.pid, *sorted(runner.find_servers() | runner.server_groups)]
        for group in groups:
            with contextlib.suppress(ProcessLookupError):  # already gone, as it should be
                os.killpg(group, signal.SIGKILL)
        await runner.process.wait()


def runner_command(servers, out: Path, *flags: str, runner: str = "spec") -> list[str]:
    """A runner on the session's servers; `flags` come last so that they override these."""
    return [
        sys.executable, "-m", f"runners.{runner}",
        "--big_model", servers.big.model, "--big_url", servers.big.url,
        "--small_model", servers.small.model, "--small_url", servers.small.url,
        "--output_dir", str(out), "--no_progress", "--log_json", "--log_level", "info",
        *(f"--{name}={value}" for name, value in SHORT.items()),
        *flags,
    ]  # fmt: skip


async def run_to_end(launch, command: list[str]) -> tuple[int, str, str]:
    """Run a command to its end: exit code, stdout, stderr."""
    runner = await launch(command)
    code, stdout = await runner.finish()
    return code, stdout, runner.stderr()


async def wait_until(condition, what: str, runner: Runner, within_s: float = 120) -> None:
    """Poll the (sync or async) `condition` until it holds; fail naming `what` if the runner
    exits first or `within_s` pass."""
    deadline = time.monotonic() + within_s
    while True:
        held = condition()
        if asyncio.iscoroutine(held):
            held = await held
        if held:
            return
        assert runner.process.returncode is None, f"the runner exited before {what}: {runner.stderr()[-3000:]}"
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


def has_a_record(path: Path) -> bool:
    return path.exists() and b"\n" in path.read_bytes()


async def requests_running(http, urls) -> float:
    return sum([await metric(http, url, "vllm:num_requests_running") for url in urls])


async def test_ctrl_c_cancels_requests_keeps_finished_records_and_exits_130(vllm_servers, tmp_path, http, launch):
    urls = (vllm_servers.big.url, vllm_servers.small.url)
    out = tmp_path / "run"
    records = out / RECORDS_FILE
    # One problem at a time, each long enough to be caught in the middle.
    flags = ("--tracks=3", "--max_problems_in_flight=1", "--token_budget=1500", "--max_step_tokens=96")
    runner = await launch(runner_command(vllm_servers, out, *flags, runner="spec_scale"))
    await wait_until(lambda: has_a_record(records), "the first record", runner)
    await wait_until(lambda: requests_running(http, urls), "a request of the next problem", runner)
    written = records.read_bytes()

    runner.signal(signal.SIGINT)
    code, _ = await runner.finish()

    assert code == 130, runner.stderr()[-3000:]
    assert runner.stderr().splitlines()[-1].startswith("spectra: interrupted; finished records are kept")
    raw = records.read_bytes()
    assert raw.startswith(written) and raw.endswith(b"\n")
    read = read_records(records)
    assert not read.bad_lines and not read.partial_tail
    assert 1 <= len(read.records) < DEMO_PROBLEMS
    for record in read.records:  # only whole problems are written, never a cancelled one
        assert {t.finish_reason for t in record.tracks} <= FINISH_REASONS
    deadline = time.monotonic() + 10
    while await requests_running(http, urls) > 0:
        assert time.monotonic() < deadline, "vLLM still runs requests of the interrupted run"
        await asyncio.sleep(0.05)


@pytest.mark.parametrize(
    "sig, moment",
    [
        (signal.SIGINT, "while_the_servers_start"),
        (signal.SIGINT, "while_requests_run"),
        (signal.SIGTERM, "while_the_servers_start"),
    ],
    ids=["ctrl_c-while_the_servers_start", "ctrl_c-while_requests_run", "sigterm-while_the_servers_start"],
)
async def test_an_interrupt_stops_the_servers_spectra_started(
    sig, moment, vllm_servers, toy_models, tmp_path, http, launch
):
    command = [
        *SPECTRA, "run",
        "--toy_models_dir", str(toy_models.small.parent),
        "--server_log_dir", str(tmp_path / "server-logs"),
        "--output_dir", str(tmp_path / "run"), "--repeat_id", "0-9",
        "--no_progress", "--log_json", "--log_level", "info",
    ]  # fmt: skip
    runner = await launch(command)

    def urls() -> list[str]:
        return [e["url"] for e in runner.events() if e["event"] == "server_starting"]

    def models_ready() -> bool:
        return any(e["event"] == "run_models_ready" for e in runner.events())

    # The demo's servers: the big model, the small one and the PRM that judges spec's drafts.
    await wait_until(lambda: len(urls()) == len(runner.find_servers()) == 3, "the servers", runner)
    if moment == "while_requests_run":
        await wait_until(models_ready, "healthy servers", runner, within_s=300)
        await wait_until(lambda: requests_running(http, urls()), "a request on spectra's servers", runner)
    groups = runner.find_servers()

    runner.signal(sig)
    code, _ = await runner.finish()

    assert code == 128 + sig, runner.stderr()[-3000:]
    assert models_ready() == (moment == "while_requests_run")
    assert sorted(e["name"] for e in runner.events() if e["event"] == "server_stopped") == ["big", "prm", "small"]
    alive = {pid: cmd for pid, (_, group, cmd) in _processes().items() if group in groups}
    assert alive == {}, f"processes of the servers spectra started survived: {alive}"
    for url in urls():
        with pytest.raises(aiohttp.ClientConnectionError):
            await http.get(f"{url}/health")


def _processes() -> dict[int, tuple[int, int, str]]:
    """Live processes (zombies excluded) as pid -> (parent pid, process group, command line)."""
    found = {}
    for proc in Path("/proc").glob("[0-9]*"):
        try:
            stat = (proc / "stat").read_text()
            cmdline = (proc / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        state, parent, group = stat.rsplit(")", 1)[1].split()[:3]
        if state != "Z":
            found[int(proc.name)] = (int(parent), int(group), cmdline)
    return found


async def test_kill_9_leaves_whole_lines_and_the_same_command_resumes(vllm_servers, tmp_path, launch):
    out = tmp_path / "run"
    records = out / RECORDS_FILE
    repeats = 2
    command = runner_command(
        vllm_servers, out, f"--repeat_id=0-{repeats - 1}", "--max_problems_in_flight=2", "--token_budget=400"
    )
    delay = random.uniform(0.0, 1.5)
    runner = await launch(command)
    await wait_until(lambda: has_a_record(records), "the first record", runner)
    await asyncio.sleep(delay)
    runner.signal(signal.SIGKILL)
    code, _ = await runner.finish()

    assert code == -signal.SIGKILL, "the run ended before the kill"

    *whole, tail = records.read_bytes().split(b"\n")
    assert all(json.loads(line) for line in whole), "only the last line may be partial"
    assert 1 <= len(whole) < DEMO_PROBLEMS * repeats, f"killed {delay:.2f} s after the first record"
    if not tail:
        # Each record is one fsync'd write, so a kill lands inside one only by chance: cut the
        # last line in two to leave the file as such a kill would.
        tail = whole.pop()[:100]
        records.write_bytes(b"".join(line + b"\n" for line in whole) + tail)
    damage = read_records(records)
    assert damage.partial_tail and [number for number, _ in damage.bad_lines] == [len(whole) + 1]
    resumed_at = time.time()

    code, stdout, stderr = await run_to_end(launch, command)

    assert code == 0, stderr[-3000:]
    assert f"({DEMO_PROBLEMS * repeats - len(whole)} new, {len(whole)} already done)" in stdout
    read = read_records(records)
    assert not read.bad_lines and not read.partial_tail
    expected = sorted((str(p), r) for p in range(DEMO_PROBLEMS) for r in range(repeats))
    assert sorted(r.key for r in read.records) == expected
    kept_lines = b"".join(line + b"\n" for line in whole)  # empty when the kill cut the first record
    assert records.read_bytes().startswith(kept_lines), "a finished record was changed or moved"
    kept = {(d["problem_id"], d["repeat_id"]) for d in map(json.loads, whole)}
    redone = [r for r in read.records if r.key not in kept]
    assert len(redone) == len(expected) - len(whole)
    assert all(r.started_at >= resumed_at for r in redone)
    assert len({r.run_id for r in read.records}) == 1
    (damaged,) = out.glob(f"{RECORDS_FILE}.damaged-*")
    # the set-aside copy is the file as the kill left it (whole lines, then the cut one); with a
    # single whole record cut in two there is no line before it
    assert damaged.read_bytes() == b"".join(line + b"\n" for line in whole) + tail


async def test_a_changed_config_is_refused_unless_overwrite(vllm_servers, tmp_path, launch):
    out = tmp_path / "run"
    first = runner_command(vllm_servers, out, "--problem_id=0")
    code, _, stderr = await run_to_end(launch, first)
    assert code == 0, stderr[-3000:]
    before = {name: (out / name).read_bytes() for name in (RECORDS_FILE, MANIFEST_FILE)}

    changed = [*first, "--score_threshold=5"]
    code, _, stderr = await run_to_end(launch, changed)

    assert code == 2
    refusal = stderr.strip().splitlines()[-1]
    assert re.fullmatch(r"spectra: error: \S+ holds a run with another config .* --overwrite to replace it", refusal)
    assert {name: (out / name).read_bytes() for name in before} == before

    code, _, stderr = await run_to_end(launch, [*changed, "--overwrite"])

    assert code == 0, stderr[-3000:]
    manifest = json.loads((out / MANIFEST_FILE).read_text())
    (record,) = read_records(out / RECORDS_FILE).records
    assert record.config_digest == manifest["config_digest"] != json.loads(before[MANIFEST_FILE])["config_digest"]
    assert manifest["config"]["policy_settings"]["score_threshold"] == 5
    (replaced,) = out.glob(f"{RECORDS_FILE}.replaced-*")
    assert replaced.read_bytes() == before[RECORDS_FILE]
