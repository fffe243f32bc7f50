"""Watching the server processes spectra started: their exit as an event, the error that ended
them, and the stop of the work that needs them once their restarts are spent.

`engine.serving.servers.serve_models` restarts a server that exits; this module holds the parts
that know nothing of vLLM's command line: `process_exit` (the kernel's pidfd, no polling),
`root_error_line` and `error_and_log` (what to tell the user) and `Supervision` (the restart budget, and the
cancellation that turns a spent budget into one `ServerDiedError` where the work runs).
"""

from __future__ import annotations

import asyncio
import os
import re
import subprocess
from pathlib import Path

from engine.errors import ServerDiedError

# A line where Python names an exception, alone or behind vLLM's log prefix
# ("(EngineCore pid=12) ERROR 12-03 08:17:40 [core.py:1512] RuntimeError: ..."); a warning that
# merely mentions one ("... errors like `OSError: ...`") does not start with it.
_VLLM_PREFIX = r"(?:\(\w+ pid=\d+\) )?(?:ERROR \S+ \S+ \[[^\]]*\] )?"
_EXCEPTION_LINE = re.compile(_VLLM_PREFIX + r"(?:[\w.]+\.)?\w*(?:Error|Exception)\b")


async def process_exit(popen: subprocess.Popen) -> int:
    """Wait until `popen` exits and return its exit code (negative: the signal that ended it)."""
    loop = asyncio.get_running_loop()
    exited = loop.create_future()
    # A pidfd becomes readable when its process exits: an event from the kernel, not a poll.
    try:
        pidfd = os.pidfd_open(popen.pid)
    except ProcessLookupError:  # already gone and reaped
        return popen.wait()
    try:
        loop.add_reader(pidfd, lambda: exited.done() or exited.set_result(None))
        try:
            await exited
        finally:
            loop.remove_reader(pidfd)
    finally:
        os.close(pidfd)
    return popen.wait()


def root_error_line(log_path: Path, offset: int = 0) -> str | None:
    """The first exception line the process wrote to `log_path` after byte `offset`: the root
    cause, where the lines after it are its consequences (vLLM logs the engine's `RuntimeError`,
    then `EngineDeadError: ... See stack trace (above) for the root cause`). None when it wrote
    none (killed by a signal)."""
    try:
        with log_path.open("rb") as handle:
            handle.seek(offset)
            text = handle.read().decode("utf-8", errors="replace")
    except OSError:
        return None
    for line in text.splitlines():
        if _EXCEPTION_LINE.match(line.strip()):
            return line.strip()[:300]
    return None


def error_and_log(log_path: Path, offset: int = 0) -> str:
    """ "its error: LINE; log: PATH" for a process that did not start: its root error line, else its
    last line (which names what went wrong at start-up, e.g. the model path)."""
    error = root_error_line(log_path, offset)
    if error is None:
        with log_path.open("rb") as handle:
            handle.seek(offset)
            lines = handle.read().decode("utf-8", errors="replace").strip().splitlines()
        error = lines[-1].strip()[:300] if lines else "none"
    return f"its error: {error}; log: {log_path}"


class Supervision:
    """The restart budget of one `serve_models` block, and its way to stop the block's work.

    The work runs in the task that entered the block; when a server's budget is spent, `fail`
    cancels that task, and `raise_failure` (called where the cancellation arrives) turns it into
    the `ServerDiedError`, as `asyncio.timeout` turns its cancellation into `TimeoutError`.
    """

    def __init__(self, restarts: int):
        if restarts < 0:
            raise ValueError(f"restarts must be >= 0, not {restarts}")
        self.restarts = restarts
        self.used: dict[str, int] = {}
        self.failure: ServerDiedError | None = None
        self._task = asyncio.current_task()

    def take_restart(self, name: str) -> int | None:
        """The number (from 1) of the restart `name` may have now; None when its budget is spent."""
        used = self.used.get(name, 0)
        if used >= self.restarts:
            return None
        self.used[name] = used + 1
        return used + 1

    def fail(self, error: ServerDiedError) -> None:
        """Stop the block's work with `error` (the first failure wins)."""
        if self.failure is None:
            self.failure = error
            if self._task is not None:
                self._task.cancel()

    def raise_failure(self) -> None:
        """Called with the work's exception in flight (the CancelledError `fail` caused, or what
        the work raised while it was cancelled): raise the failure in its place."""
        if self.failure is not None and self._task is not None and self._task.uncancel() == 0:
            raise self.failure from None
