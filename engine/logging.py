"""structlog set-up, done once at start-up by the command line.

Two places get the log: the screen (stderr; stdout is for what the user asked for) shows events at
`--log_level` and above, warnings by default, so a run reads as its progress and its results; and a
command that keeps its log (`keep=True`) writes every event at info and above (or the lower level
asked) to a file, `spectra.log` in the folder it writes (a run's folder, `spectra serve`'s server
logs). A command names that file only once it writes its folder (`write_log_to`): a run refused
before its first write leaves nothing behind, and the events logged before are held until then.
Readable key-value lines (coloured on a terminal, never in the file), JSON lines with `--log-json`.
Context such as run id, problem and track is bound through contextvars (`bind_context`), so every
event logged inside a task carries it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TextIO

import structlog

LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
SCREEN_LEVEL = "warning"
LOG_FILE = "spectra.log"
# What the log file keeps at least: the engine's whole story of a run, without its debug chatter.
KEPT_LEVEL = logging.INFO

Renderer = Any  # a structlog processor that turns an event dict into a line


class _Sinks:
    """Where each event goes: the screen when it is at the screen's level, and the kept log (held in
    memory until the command names its file)."""

    def __init__(self, screen: Renderer, kept: Renderer | None, screen_level: int):
        self.screen, self.kept, self.screen_level = screen, kept, screen_level
        self.held: list[str] = []
        self.file: TextIO | None = None

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> Any:
        if self.kept is not None:
            self._keep(self.kept(logger, method, dict(event)))
        # add_log_level's name: `log.exception` is an error.
        if logging.getLevelName(event["level"].upper()) < self.screen_level:
            raise structlog.DropEvent
        return self.screen(logger, method, event)

    def _keep(self, line: str) -> None:
        if self.file is None:
            self.held.append(line)
            return
        self.file.write(line + "\n")
        self.file.flush()

    def open(self, path: Path) -> None:
        if self.kept is None or self.file is not None:
            return
        path.parent.mkdir(parents=True, exist_ok=True)
        self.file = path.open("a", encoding="utf-8")
        for line in self.held:
            self._keep(line)
        self.held.clear()

    def close(self) -> None:
        """Stop keeping the log: a logger still configured with these sinks writes to the screen only."""
        if self.file is not None:
            self.file.close()
        self.file, self.kept = None, None
        self.held.clear()


_sinks: _Sinks | None = None


def configure_logging(*, json: bool = False, level: str = SCREEN_LEVEL, keep: bool = False) -> None:
    """Route structlog to the screen (stderr) at `level`, and with `keep` every event at info (or
    `level`, when lower) to the log file `write_log_to` names; the standard library's logging goes to
    the screen at `level`, warnings at least."""
    global _sinks
    screen_level = logging.getLevelName(level.upper())
    if not isinstance(screen_level, int):
        raise ValueError(f"unknown log level {level!r}")

    # Tracebacks without their frames' local variables (structlog's rich default shows them): a
    # request's frames hold its headers, and so the server's API key.
    def renderer(colors: bool) -> Renderer:
        if json:
            return structlog.processors.JSONRenderer()
        return structlog.dev.ConsoleRenderer(colors=colors, exception_formatter=structlog.dev.plain_traceback)

    if _sinks is not None:
        _sinks.close()
    _sinks = _Sinks(renderer(sys.stderr.isatty()), renderer(False) if keep else None, screen_level)
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json else structlog.dev.set_exc_info,
            _sinks,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(min(screen_level, KEPT_LEVEL) if keep else screen_level),
        # Looked up at each use, so a swapped stderr (pytest's capture) is never a stale handle.
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(screen_level, logging.WARNING), stream=sys.stderr, force=True)


def write_log_to(folder: Path) -> Path | None:
    """From now on keep the log in `folder/spectra.log` (appended to), the events held so far first;
    the file it writes, or None when the command keeps no log. A process keeps one log: the first
    folder named gets it (the demo's runs share the first run's)."""
    if _sinks is None or _sinks.kept is None:
        return None
    _sinks.open(Path(folder) / LOG_FILE)
    return Path(_sinks.file.name) if _sinks.file else None


@contextmanager
def bind_context(**values: Any) -> Iterator[None]:
    """Bind `values` (run, problem, track, ...) to every log event inside the block."""
    tokens = structlog.contextvars.bind_contextvars(**values)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
