"""A scripted fake server in a thread of its own, for tests of the command line, which runs its own
event loop (`engine.loop.run`) and so cannot share the test's."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Iterator

from tests.fake_openai import FakeOpenAIServer

START_TIMEOUT_S = 10.0


@contextlib.contextmanager
def served_in_a_thread(server: FakeOpenAIServer) -> Iterator[str]:
    """Run `server` in a thread until the block ends; yields its URL."""
    ready, stop = threading.Event(), threading.Event()

    async def serve() -> None:
        async with server:
            ready.set()
            while not stop.is_set():
                await asyncio.sleep(0.02)

    thread = threading.Thread(target=asyncio.run, args=(serve(),))
    thread.start()
    try:
        assert ready.wait(START_TIMEOUT_S), "the fake server did not start"
        yield server.url
    finally:
        stop.set()
        thread.join()
