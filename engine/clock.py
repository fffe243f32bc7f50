"""The time that retries and the sim server's latency model read and wait on.

`Clock` is the wall clock (`time.monotonic`, `asyncio.sleep`). It is a seam for tests: a test
passes a clock whose time moves only when the test moves it (tests/clocks.py), so what depends
on time (a retry deadline, a backoff ended by a health poll, a modelled latency) is checked
exactly, whatever the load of the machine that runs the test.
"""

from __future__ import annotations

import asyncio
import time


class Clock:
    """The wall clock: `now()` in seconds (monotonic), `sleep(seconds)`, `sleep_until(now)`."""

    def now(self) -> float:
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    async def sleep_until(self, deadline: float) -> None:
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))


WALL_CLOCK = Clock()
