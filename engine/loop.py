"""Run the engine's coroutines on uvloop where it is installed, else on asyncio's loop."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Coroutine
from typing import Any, TypeVar

from engine.errors import Terminated

T = TypeVar("T")


def run(main: Coroutine[Any, Any, T]) -> T:
    """Run `main` to completion on a fresh event loop; SIGTERM cancels it as Ctrl-C does."""
    try:
        import uvloop
    except ImportError:
        loop_factory = None
    else:
        loop_factory = uvloop.new_event_loop
    with asyncio.Runner(loop_factory=loop_factory) as runner:
        return runner.run(_cancelled_by_sigterm(main))


async def _cancelled_by_sigterm(main: Coroutine[Any, Any, T]) -> T:
    # asyncio.Runner turns SIGINT into cancellation, but not SIGTERM, whose default ends the
    # process at once: no `finally` runs and the vLLM servers we started live on as orphans.
    loop, task = asyncio.get_running_loop(), asyncio.current_task()
    terminated = asyncio.Event()

    def on_sigterm() -> None:
        terminated.set()
        task.cancel()

    loop.add_signal_handler(signal.SIGTERM, on_sigterm)
    try:
        return await main
    except asyncio.CancelledError:
        if terminated.is_set():
            raise Terminated(
                "stopped by SIGTERM; finished records are kept, re-run the same command to resume"
            ) from None
        raise
    finally:
        loop.remove_signal_handler(signal.SIGTERM)
