"""structlog set-up, done once at start-up by the command line.

Logs go to stderr (stdout is for what the user asked for): readable key-value lines on a
terminal, JSON lines with `--log-json`. Context such as run id, problem and track is bound
through contextvars (`bind_context`), so every event logged inside a task carries it.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import structlog


def configure_logging(*, json: bool = False, level: str = "info") -> None:
    """Route structlog (and the standard library's logging) to stderr at `level`."""
    numeric_level = logging.getLevelName(level.upper())
    if not isinstance(numeric_level, int):
        raise ValueError(f"unknown log level {level!r}")
    # Tracebacks without their frames' local variables (structlog's rich default shows them): a
    # request's frames hold its headers, and so the server's API key.
    console = structlog.dev.ConsoleRenderer(
        colors=sys.stderr.isatty(), exception_formatter=structlog.dev.plain_traceback
    )
    renderer: Any = structlog.processors.JSONRenderer() if json else console
    structlog.configure(
        processors=[
            structlog.contextvars.merge_contextvars,
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.format_exc_info if json else structlog.dev.set_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(numeric_level),
        # Looked up at each use, so a swapped stderr (pytest's capture) is never a stale handle.
        logger_factory=lambda *_: structlog.PrintLogger(sys.stderr),
        cache_logger_on_first_use=False,
    )
    logging.basicConfig(level=max(numeric_level, logging.WARNING), stream=sys.stderr, force=True)


@contextmanager
def bind_context(**values: Any) -> Iterator[None]:
    """Bind `values` (run, problem, track, ...) to every log event inside the block."""
    tokens = structlog.contextvars.bind_contextvars(**values)
    try:
        yield
    finally:
        structlog.contextvars.reset_contextvars(**tokens)
