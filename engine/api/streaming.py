"""A streamed answer (`stream: true`): server-sent events of the reasoning as its steps are kept,
then the answer, then `[DONE]`.

Each choice streams the steps of its leading track, the first of its tracks to keep a step (for
parallel tracks, each event names it under `spectra.track`), up to `</think>`. The steps reach the
stream through the track machinery's step observer (`engine.reasoning.track.StepObserver`), which
only queues them, so a slow client never holds a track up. A strategy that writes its own steps (a
search, RAST) tells no observer: its reasoning comes whole with the answer. A client that goes away
ends the handler, which cancels the problem's tracks and their requests on the model servers.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence

from aiohttp import web

from engine.api.contract import RequestError
from engine.api.replies import DONE, Reply, error_body, event
from engine.reasoning.track import StepObserver
from engine.records import ProblemRecord, StepRecord
from engine.serving.chat import THINK_CLOSE

SSE_HEADERS = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
# Solves a request, telling each choice's observer of its steps; returns its records.
Solve = Callable[[Sequence[StepObserver]], Awaitable[list[ProblemRecord]]]


class LeadingTrack:
    """One choice's observer: queues the reasoning of its leading track as each step is kept."""

    def __init__(self, index: int, joint: str, reply: Reply, send: Callable[[bytes], None]):
        self.index, self.joint, self.reply, self.send = index, joint, reply, send
        self.leader: int | None = None
        self.sent = 0
        self.thinking = True

    def __call__(self, track_id: int, step: StepRecord) -> None:
        if self.leader is None:
            self.leader = track_id
        if track_id != self.leader or not self.thinking:
            return
        text, closed, _ = step.text.partition(THINK_CLOSE)
        self.thinking = not closed  # what follows `</think>` is the answer, sent at the end
        if closed:
            text = text.rstrip()  # as the whole answer's reasoning ends
        if text:
            self.send(self.reply.reasoning_delta(self.index, (self.joint if self.sent else "") + text, track_id))
            self.sent += 1


async def stream_answer(
    request: web.Request, reply: Reply, solve: Solve, *, choices: int, joint: str, include_usage: bool
) -> web.StreamResponse:
    """Answer `request` as a stream: each choice's role, its reasoning as it is kept, its content
    and finish reason, then a last chunk with `spectra` (and `usage` if asked), then `[DONE]`. A
    failed problem after the stream started ends it with an error event."""
    response = web.StreamResponse(headers=SSE_HEADERS)
    await response.prepare(request)
    queue: asyncio.Queue[bytes | None] = asyncio.Queue()
    for index in range(choices):
        queue.put_nowait(reply.delta(index, {"role": "assistant", "content": ""}))
    observers = [LeadingTrack(index, joint, reply, queue.put_nowait) for index in range(choices)]

    async def solving() -> list[ProblemRecord]:
        try:
            return await solve(observers)
        finally:
            queue.put_nowait(None)

    task = asyncio.create_task(solving())
    try:
        while (chunk := await queue.get()) is not None:
            await response.write(chunk)
        try:
            for chunk in reply.ending(await task, joint, include_usage=include_usage):
                await response.write(chunk)
        except RequestError as exc:
            await response.write(event(error_body(exc.status, exc.message, exc.param)))
        await response.write(DONE)
        await response.write_eof()
    finally:
        # The client went away (the handler is cancelled, or a write failed): stop the problem.
        if not task.done():
            task.cancel()
            await asyncio.wait([task])
            if not task.cancelled():
                task.exception()  # what it raised while being stopped is of no use to a client gone
    return response
