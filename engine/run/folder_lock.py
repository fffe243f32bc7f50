"""One runner per run folder: an exclusive lock held for the run's lifetime.

Two runners writing one folder (a job launched twice) would append every record twice. The lock is
an exclusive `flock` on `runner.lock` in the folder, which the kernel drops when its holder exits
however it exits (kill -9 included), so a crashed runner never blocks the next one; a pid file would
need guessing whether its pid is still ours. The file's text (pid, host, start time) only names the
holder in the refusal.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import socket
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path

from engine.errors import UsageError

LOCK_FILE = "runner.lock"


@contextmanager
def hold_run_folder(folder: Path) -> Iterator[None]:
    """Be the one runner of `folder` for the block, or raise UsageError naming the runner that is.

    On the way out the lock file is removed while still locked, and so is the folder when the block
    created it and left nothing else in it (a run refused before its first write leaves no trace).
    """
    created = not folder.exists()
    path = folder / LOCK_FILE
    descriptor = _lock(folder, path)
    try:
        holder = {"pid": os.getpid(), "host": socket.gethostname(), "started_at": _utc_now()}
        os.ftruncate(descriptor, 0)
        os.pwrite(descriptor, json.dumps(holder).encode(), 0)
        yield
    finally:
        path.unlink(missing_ok=True)
        os.close(descriptor)
        if created and not any(folder.iterdir()):
            _remove_if_empty(folder)


def _remove_if_empty(folder: Path) -> None:
    try:
        folder.rmdir()
    except OSError as exc:
        if exc.errno != errno.ENOTEMPTY:  # a runner that started meanwhile has its lock file there
            raise


def _lock(folder: Path, path: Path) -> int:
    """A descriptor of `path` holding its exclusive lock, or UsageError when another process holds it."""
    while True:
        folder.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(descriptor, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.pread(descriptor, 4096, 0).decode("utf-8", errors="replace")
            os.close(descriptor)
            raise UsageError(
                f"{folder} is in use by another runner ({_describe_holder(holder)}); "
                "wait for it to end, or give another --output_dir"
            ) from None
        opened = os.fstat(descriptor)
        try:
            current = os.stat(path)
        except FileNotFoundError:
            current = None
        if current is not None and (current.st_dev, current.st_ino) == (opened.st_dev, opened.st_ino):
            return descriptor
        # Its last holder removed the file we opened on the way out: lock the file there now.
        os.close(descriptor)


def _describe_holder(text: str) -> str:
    try:
        holder = json.loads(text)
        return f"pid {holder['pid']} on {holder['host']}, started {holder['started_at']}"
    except (ValueError, TypeError, KeyError):
        return "it is starting and has not written its pid yet"


def _utc_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
