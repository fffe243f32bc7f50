"""Start, supervise, check and stop vLLM OpenAI-compatible servers.

`serve_models` starts one server per `ServerSpec` as a child process in its own process group,
waits until each answers GET /health, restarts one that exits (same port, same arguments) within a
budget of restarts, and stops them all (SIGTERM, then SIGKILL) on exit, on error and on Ctrl-C.
`check_server` verifies that a server someone else started serves the model we need and reads its
context length; `logprobs_limit` finds a server's `--max-logprobs` when it is below what a run asks.
"""

from __future__ import annotations

import asyncio
import atexit
import contextlib
import functools
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import aiohttp
import structlog

from engine.errors import ServerDiedError, ServerError, ServerStartError, UnreachableServerError, UsageError
from engine.records import Role
from engine.serving.client import UNAUTHORIZED, ModelClient, bearer, key_refused
from engine.serving.supervision import Supervision, error_and_log, process_exit, root_error_line
from engine.serving.vllm_command import ServerSpec, on_cpu, server_command, server_env

log = structlog.get_logger(__name__)

HEALTH_POLL_S = 0.5
STOP_TIMEOUT_S = 15.0
MODELS_TIMEOUT_S = 10.0
DEFAULT_RESTARTS = 3


@dataclass
class RunningServer:
    """A healthy server started by `serve_models`. `pid` is its current process (the leader of its
    process group), which a restart replaces; `restarts` counts them."""

    name: str
    url: str
    model: str
    pid: int
    log_path: Path
    restarts: int = 0


# Listening on every interface: the server is reached here on the loopback one.
_WILDCARDS = {"0.0.0.0": "127.0.0.1", "::": "::1"}


def url_host(host: str) -> str:
    """`host` as a URL names it when this machine connects to a server listening there."""
    host = _WILDCARDS.get(host, host)
    return f"[{host}]" if ":" in host else host


def free_port(host: str = "127.0.0.1") -> int:
    """A TCP port that was free a moment ago (the OS picks it)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


async def server_version(session: aiohttp.ClientSession, url: str, api_key: str | None = None) -> str | None:
    """The vLLM version a server reports at GET /version (None when it does not say)."""
    try:
        async with session.get(
            f"{url.rstrip('/')}/version",
            headers=bearer(api_key),
            timeout=aiohttp.ClientTimeout(total=MODELS_TIMEOUT_S),
        ) as r:
            if r.status != 200:
                return None
            body = await r.json(content_type=None)
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None
    version = body.get("version") if isinstance(body, dict) else None
    return str(version) if version is not None else None


@contextlib.asynccontextmanager
async def serve_models(
    specs: Sequence[ServerSpec],
    *,
    log_dir: Path,
    startup_timeout_s: float = 300.0,
    restarts: int | None = DEFAULT_RESTARTS,
    on_restart: Callable[[str], None] | None = None,
) -> AsyncIterator[dict[str, RunningServer]]:
    """Start every spec concurrently and yield {name: RunningServer} once all are healthy.

    Each server logs stdout and stderr to `log_dir/<name>.log`. Raises `ServerStartError` (one
    line: its error line and its log) when a server exits or is not healthy within `startup_timeout_s`.
    While the block runs, a server that exits is started again on its port with its arguments
    (`on_restart` gets the one-line message logged as `server_exited`); once one has been
    restarted `restarts` times, or a restart is not healthy in time, the block's work is cancelled
    and `ServerDiedError` raised in its place. `restarts=None`: no supervision, a server that exits
    stays down (as one the user runs, for tests of the client's ride-out). All servers are stopped
    when the block exits.
    """
    names = [spec.name for spec in specs]
    if len(set(names)) != len(names):
        raise UsageError(f"server names must be unique, got {names}")
    # Split the cores between the CPU servers so that they do not fight over them.
    threads = max(1, len(os.sched_getaffinity(0)) // max(1, sum(on_cpu(s) for s in specs)))
    supervision = Supervision(restarts if restarts is not None else 0)
    started: list[_Process] = []
    watchers: list[asyncio.Task] = []
    try:
        for spec in specs:
            started.append(_Process.start(spec, log_dir, threads))
        await _wait_all_healthy(started, startup_timeout_s)
        for proc in started if restarts is not None else ():
            watchers.append(asyncio.create_task(_supervise(proc, supervision, startup_timeout_s, on_restart)))
        try:
            yield {proc.spec.name: proc.running for proc in started}
        except BaseException:  # the supervisor's cancellation, or what the work made of it
            supervision.raise_failure()
            raise
    finally:
        # Watchers first: a server we stop is not one to restart.
        for watcher in watchers:
            watcher.cancel()
        await asyncio.gather(*watchers, return_exceptions=True)
        await asyncio.gather(*(_stop(proc) for proc in started))


@dataclass
class _Process:
    spec: ServerSpec
    running: RunningServer
    command: list[str]
    env: dict[str, str]
    popen: subprocess.Popen | None = None
    backstop: Callable[[], None] | None = None
    # Where this process's output starts in the log (a restart appends to it).
    log_offset: int = 0

    @classmethod
    def start(cls, spec: ServerSpec, log_dir: Path, threads: int) -> _Process:
        port = spec.port or free_port(spec.host)
        log_dir.mkdir(parents=True, exist_ok=True)
        log_path = log_dir / f"{spec.name}.log"
        log_path.write_bytes(b"")
        env = server_env(spec, threads)
        url = f"http://{url_host(spec.host)}:{port}"
        proc = cls(spec, RunningServer(spec.name, url, spec.model_id, 0, log_path), server_command(spec, port), env)
        proc.launch()
        log.info("server_starting", name=spec.name, model=spec.model, url=url, log=str(log_path), pid=proc.running.pid)
        return proc

    def launch(self) -> None:
        """Start the server's process (again), its output appended to its log."""
        log_path = self.running.log_path
        self.log_offset = log_path.stat().st_size
        with log_path.open("ab") as log_file:
            # Own session = own process group, so stopping reaches vLLM's engine processes too and a
            # Ctrl-C in our terminal does not hit the servers before we stop them in order.
            self.popen = subprocess.Popen(
                orphan_guarded(self.command),
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                env=self.env,
                start_new_session=True,
            )
        if self.backstop is not None:
            atexit.unregister(self.backstop)
        # Backstop for exits that skip our `finally` (a second Ctrl-C during shutdown).
        self.backstop = functools.partial(_kill_group, self.popen.pid, signal.SIGKILL)
        atexit.register(self.backstop)
        self.running.pid = self.popen.pid


# Python run before the server's own program: it asks Linux to send the server SIGTERM when the
# thread that started it ends (PR_SET_PDEATHSIG, which survives exec), so that a `kill -9` of spectra,
# which no `finally` or atexit outlives, does not leave a vLLM server holding its port and memory; then
# it becomes the server's program (exec: the same pid). The first argument is spectra's pid: a parent
# gone before the request was made is seen as a changed parent.
_ORPHAN_GUARD = """
import ctypes, os, signal, sys
ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
if os.getppid() != int(sys.argv[1]):
    sys.exit(1)
os.execvp(sys.argv[2], sys.argv[2:])
"""


def orphan_guarded(command: list[str]) -> list[str]:
    """`command`, ended by Linux when the spectra process that starts it dies (elsewhere, as is).

    Servers are started from the event loop's thread, which lives as long as the process."""
    if not sys.platform.startswith("linux"):
        return command
    return [sys.executable, "-c", _ORPHAN_GUARD, str(os.getpid()), *command]


async def _supervise(
    proc: _Process, supervision: Supervision, startup_timeout_s: float, on_restart: Callable[[str], None] | None
) -> None:
    """Restart `proc` each time it exits, until its budget is spent or a restart fails to be healthy."""
    name, log_path = proc.spec.name, proc.running.log_path
    while True:
        code = await process_exit(proc.popen)
        # Whatever killed it, its group may hold an engine process that still has the port.
        _kill_group(proc.popen.pid, signal.SIGKILL)
        error = root_error_line(log_path, proc.log_offset) or "no error line (killed by a signal?)"
        number = supervision.take_restart(name)
        if number is None:
            supervision.fail(
                ServerDiedError(
                    f"vLLM server {name!r} ({proc.spec.model}) exited with code {code} after "
                    f"{supervision.restarts} restarts in this run (--server_restarts); its error: {error}; "
                    f"log: {log_path}"
                )
            )
            return
        message = (
            f"vLLM server {name!r} exited with code {code}; restarting it on {proc.running.url} "
            f"({number} of {supervision.restarts}); its error: {error}; log: {log_path}"
        )
        log.warning("server_exited", name=name, code=code, error=error, log=str(log_path), restart=number)
        if on_restart is not None:
            on_restart(message)
        proc.launch()
        proc.running.restarts = number
        try:
            async with aiohttp.ClientSession() as session:
                await _wait_healthy(session, proc, startup_timeout_s)
        except ServerStartError as exc:
            if proc.popen.poll() is None:  # alive but not healthy in time: no point waiting more
                supervision.fail(ServerDiedError(str(exc)))
                return
            # It died while starting: the loop counts that against its budget too.


async def _wait_all_healthy(started: list[_Process], timeout_s: float) -> None:
    try:
        async with aiohttp.ClientSession() as session, asyncio.TaskGroup() as group:
            for proc in started:
                group.create_task(_wait_healthy(session, proc, timeout_s))
    except* ServerStartError as errors:
        # The TaskGroup wraps failures in a group; callers expect the plain one-line error.
        raise errors.exceptions[0] from None


async def _wait_healthy(session: aiohttp.ClientSession, proc: _Process, timeout_s: float) -> None:
    started = time.monotonic()
    timeout = aiohttp.ClientTimeout(total=5)
    while True:
        code = proc.popen.poll()
        if code is not None:
            raise _start_error(proc, f"exited with code {code} before it was healthy")
        elapsed = time.monotonic() - started
        if elapsed > timeout_s:
            raise _start_error(proc, f"was not healthy after {timeout_s:.0f} s")
        try:
            async with session.get(f"{proc.running.url}/health", timeout=timeout) as resp:
                if resp.status == 200:
                    log.info("server_ready", name=proc.spec.name, startup_s=round(elapsed, 1), pid=proc.popen.pid)
                    return
        except (aiohttp.ClientError, TimeoutError):
            pass  # not listening yet: vLLM opens its port only after the model is loaded
        await asyncio.sleep(HEALTH_POLL_S)


def _start_error(proc: _Process, what: str) -> ServerStartError:
    where = error_and_log(proc.running.log_path, proc.log_offset)
    return ServerStartError(f"vLLM server {proc.spec.name!r} ({proc.spec.model}) {what}; {where}")


async def _stop(proc: _Process) -> None:
    pid = proc.popen.pid
    _kill_group(pid, signal.SIGTERM)
    try:
        # vLLM's API server stops its engine process on SIGTERM and exits (~2 s for tiny models).
        await asyncio.to_thread(proc.popen.wait, STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        log.warning("server_kill", name=proc.spec.name, pid=pid, after_s=STOP_TIMEOUT_S)
    # Also reaches engine processes the API server left behind.
    _kill_group(pid, signal.SIGKILL)
    await asyncio.to_thread(proc.popen.wait)
    atexit.unregister(proc.backstop)
    log.info("server_stopped", name=proc.spec.name, code=proc.popen.returncode)


def _kill_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError):  # the whole group is already gone
        os.killpg(pgid, sig)


class ServedModel(NamedTuple):
    """A model a server serves: the id requests name it by, and its context length as the server
    reports it in GET /v1/models (vLLM's `max_model_len`; None when the server does not say)."""

    id: str
    max_model_len: int | None


async def check_server(
    session: aiohttp.ClientSession, url: str, model: str | None, *, role: str = Role.BIG, api_key: str | None = None
) -> ServedModel:
    """Check that the server at `url` is up and serves `model`; return what it says of it.

    With `model=None` the first served model is returned. Raises `UsageError` when the server
    cannot be reached, does not serve `model`, or answers 401 (it wants a key, or not `api_key`);
    `role` names the flags to fix (`--big_url`, `--big_api_key`).
    """
    url = url.rstrip("/")
    try:
        timeout = aiohttp.ClientTimeout(total=MODELS_TIMEOUT_S)
        async with session.get(f"{url}/v1/models", headers=bearer(api_key), timeout=timeout) as resp:
            if resp.status == UNAUTHORIZED:
                raise UsageError(f"{url}: HTTP 401: {key_refused(role, bool(api_key))}")
            if resp.status != 200:
                raise UsageError(
                    f"model server at {url} answered HTTP {resp.status} to /v1/models; "
                    f"is it a vLLM OpenAI server? fix --{role}_url"
                )
            body = await resp.json()
    except (aiohttp.ClientError, TimeoutError) as err:
        reason = str(err) or type(err).__name__
        raise UnreachableServerError(
            f"cannot reach model server at {url}: {reason}; start it or fix --{role}_url"
        ) from None
    cards = {entry["id"]: entry for entry in body.get("data", [])}
    if not cards:
        raise UsageError(f"model server at {url} serves no model; fix --{role}_url")
    if model is None:
        model = next(iter(cards))
    if model not in cards:
        raise UsageError(
            f"model {model!r} is not served at {url}; it serves: {', '.join(cards)}; fix --{role}_model or --{role}_url"
        )
    length = cards[model].get("max_model_len")
    return ServedModel(model, length if isinstance(length, int) and length > 0 else None)


# vLLM's refusal of a request asking more logprobs than the server's --max-logprobs
# (vllm/sampling_params.py `_validate_logprobs`, vLLM 0.32), sample or prompt logprobs alike.
_LOGPROBS_REFUSED = re.compile(r"Requested (?:sample|prompt) logprobs of \d+, which is greater than max allowed: (\d+)")
# What the probe continues: any text does, the request asks for one token.
_PROBE_PROMPT = "1 + 1 ="


async def logprobs_limit(client: ModelClient, count: int) -> int | None:
    """The server's --max-logprobs when it is below `count`, read from its refusal of a one-token
    request asking `count` logprobs (vLLM does not report the setting otherwise); None when it gives
    them. Any other error is raised: the run's own requests would meet it too."""
    try:
        await client.complete(_PROBE_PROMPT, max_tokens=1, temperature=0.0, top_p=1.0, logprobs=count)
    except ServerError as exc:
        refused = _LOGPROBS_REFUSED.search(exc.message)
        if exc.status == 400 and refused:
            return int(refused[1])
        raise
    return None
