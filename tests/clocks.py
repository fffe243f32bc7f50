"""Clocks for tests (the `engine.clock.Clock` seam), so a test of something timed checks it
exactly and never races the machine's load.

`SteppingClock`: every sleep moves time on by its length at once (one task waiting at a time:
a retry loop runs its backoffs in no real time). `ManualClock`: time moves only when the test
calls `advance_to`; `sleeping` counts the tasks parked on it, so a test can wait until every
request it sent is parked (`settled`) before it moves time on.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from engine.clock import Clock

# `settled` polls a condition on the test's own state; this bound is reached only by a test that
# is broken (it fails with a message instead of hanging until pytest-timeout).
SETTLE_BOUND_S = 60.0


async def settled(condition: Callable[[], bool], what: str = "the condition") -> None:
    """Wait until `condition()` holds. Polled, not timed: the outcome depends on what happened,
    never on how long it took."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + SETTLE_BOUND_S
    while not condition():
        assert loop.time() < give_up, f"{what} never came about"
        await asyncio.sleep(0.001)


class SteppingClock(Clock):
    """Time that jumps forward by each sleep's length, without waiting."""

    def __init__(self, start: float = 0.0):
        self.time = start

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        self.time += max(0.0, seconds)
        await asyncio.sleep(0)


class ManualClock(Clock):
    """Time that moves only on `advance_to`, which wakes the sleepers due by then; `deadlines`
    lists every deadline slept until, in order."""

    def __init__(self, start: float = 0.0):
        self.time = start
        self.deadlines: list[float] = []
        self._sleepers: list[tuple[float, asyncio.Future[None]]] = []

    def now(self) -> float:
        return self.time

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self.time + seconds)

    async def sleep_until(self, deadline: float) -> None:
        self.deadlines.append(deadline)
        if deadline <= self.time:
            await asyncio.sleep(0)
            return
        entry = (deadline, asyncio.get_running_loop().create_future())
        self._sleepers.append(entry)
        try:
            await entry[1]
        finally:
            if entry in self._sleepers:  # cancelled while parked
                self._sleepers.remove(entry)

    @property
    def sleeping(self) -> int:
        """How many tasks are parked on the clock now."""
        return len(self._sleepers)

    @property
    def next_deadline(self) -> float:
        return min(deadline for deadline, _ in self._sleepers)

    def advance_to(self, time: float) -> None:
        """Move time on to `time` and wake every sleeper due by then."""
        self.time = max(self.time, time)
        due = [entry for entry in self._sleepers if entry[0] <= self.time]
        for entry in due:
            self._sleepers.remove(entry)
            if not entry[1].done():
                entry[1].set_result(None)

    def advance_to_next(self) -> float:
        """Move time on to the earliest deadline of a sleeper; that time."""
        self.advance_to(self.next_deadline)
        return self.time
