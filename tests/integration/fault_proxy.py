"""A fault-injecting HTTP proxy between the engine and a real vLLM server.

It forwards `/v1/completions` (server-sent events relayed line by line as they come),
`/tokenize`, `/v1/models`, `/health` and `/metrics`, and injects faults by rules: "the next 3
requests get 503", "every request whose prompt holds X fails with 500 for good", "every 4th
request is cut after one event". It counts the requests it saw and the faults it injected, and
it can go `down` (listener closed, open connections dropped, like a killed server) and `up`
again on the same port.

Use it as `async with FaultProxy(upstream_url) as proxy:`; `proxy.url` is its base URL.
"""

from __future__ import annotations

import asyncio
import json
import socket
import struct
from collections import Counter
from dataclasses import dataclass
from typing import Any

import aiohttp
from aiohttp import web

# What a fault does to a request:
#   status           answer `status` with vLLM's error body, without asking the server
#   reset            drop the connection with a TCP reset, before any response
#   cut              relay `after_events` events of the stream, then drop the connection; of a
#                    plain body, the headers and half the body, then drop the connection
#   stall            relay `after_events` events (of a plain body, nothing), then send nothing
#                    for `stall_s` seconds and drop the connection
#   truncated        a body cut in half: a streamed event cut mid-JSON at the end of the
#                    stream, or a plain JSON body cut in half (sent as a complete 200 response)
#   error_event      relay `after_events` events, then vLLM's in-band error event and [DONE]
#                    (what vLLM streams when generation fails after the response started)
#   non_object_event relay `after_events` events, then an event whose JSON is not an object
#   bad_fields_event relay `after_events` events, then an object event whose `choices` holds a
#                    string and whose `usage` is a list
# The stream faults act only on a stream with more than `after_events` events, and only
# "cut", "stall" and "truncated" act on a plain (not streamed) body; `FaultProxy.injected`
# counts what was done.
FAULT_KINDS = (
    "status",
    "reset",
    "cut",
    "stall",
    "truncated",
    "error_event",
    "non_object_event",
    "bad_fields_event",
)
PLAIN_BODY_FAULTS = ("cut", "stall", "truncated")


@dataclass(frozen=True)
class Fault:
    """One way to fail a request; see FAULT_KINDS."""

    kind: str
    status: int = 500
    after_events: int = 1
    stall_s: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(f"unknown fault kind {self.kind!r}; use one of {FAULT_KINDS}")


@dataclass
class Rule:
    """Which requests get a fault: those to `path` whose prompt holds `prompt_contains` (any
    prompt when None); of these every `every`-th, `times` times in all (None: for good).
    Several faults take turns, one per hit, in the order given."""

    fault: Fault | tuple[Fault, ...]
    times: int | None = 1
    prompt_contains: str | None = None
    path: str = "/v1/completions"
    every: int = 1
    matched: int = 0
    hits: int = 0

    def take(self, path: str, prompt: str) -> Fault | None:
        """The fault for this request, or None; counts the request as seen by the rule."""
        if path != self.path or (self.prompt_contains is not None and self.prompt_contains not in prompt):
            return None
        if self.times is not None and self.hits >= self.times:
            return None
        self.matched += 1
        if self.matched % self.every:
            return None
        faults = self.fault if isinstance(self.fault, tuple) else (self.fault,)
        self.hits += 1
        return faults[(self.hits - 1) % len(faults)]


_SETTLED = web.RequestKey("fault_proxy_settled", bool)


class FaultProxy:
    """Forwards to `upstream` (a vLLM base URL) and fails requests as its rules say."""

    def __init__(self, upstream: str, host: str = "127.0.0.1"):
        self.upstream = upstream.rstrip("/")
        self.host = host
        self.port = 0
        self.rules: list[Rule] = []
        self.requests: Counter[str] = Counter()  # path -> requests received
        self.injected: Counter[str] = Counter()  # fault kind -> faults injected
        self.completed: Counter[str] = Counter()  # path -> requests relayed whole
        # path -> requests the client gave up on (its timeout) before they were relayed or failed
        self.abandoned: Counter[str] = Counter()
        self.in_flight = 0  # POST requests being handled
        self.dropped = 0  # POST requests in flight when the proxy went down
        self._site: web.TCPSite | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def add(self, rule: Rule) -> Rule:
        """Add a rule. Rules are tried in the order added; the first that fires wins, and the
        rules after it do not see the request."""
        self.rules.append(rule)
        return rule

    async def __aenter__(self) -> FaultProxy:
        self._upstream = aiohttp.ClientSession(
            connector=aiohttp.TCPConnector(limit=0), timeout=aiohttp.ClientTimeout(total=None)
        )
        app = web.Application()
        app.router.add_post("/v1/completions", self._post)
        app.router.add_post("/tokenize", self._post)
        for path in ("/v1/models", "/health", "/metrics"):
            app.router.add_get(path, self._get)
        # handler_cancellation: a client that goes away cancels its handler, which closes the
        # upstream request, which makes vLLM abort it, as without the proxy.
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True, access_log=None)
        await self._runner.setup()
        await self.up()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()
        await self._upstream.close()

    async def up(self) -> None:
        """Listen (again, on the same port once it had one)."""
        if self._site is not None:
            return
        self._site = web.TCPSite(self._runner, self.host, self.port)
        await self._site.start()
        self.port = self._runner.addresses[0][1]

    async def down(self) -> None:
        """Stop listening and drop every open connection, like a server process that died."""
        if self._site is None:
            return
        await self._site.stop()
        self._site = None
        self.dropped += self.in_flight
        for handler in self._runner.server.connections:
            handler.force_close()

    def _fault_for(self, path: str, body: dict[str, Any]) -> Fault | None:
        prompt = body.get("prompt")
        text = prompt if isinstance(prompt, str) else json.dumps(prompt)
        for rule in self.rules:
            fault = rule.take(path, text)
            if fault is not None:
                return fault
        return None

    async def _get(self, request: web.Request) -> web.StreamResponse:
        self.requests[request.path] += 1
        async with self._upstream.get(self.upstream + request.path_qs) as upstream:
            body = await upstream.read()
            self.completed[request.path] += 1
            return web.Response(body=body, status=upstream.status, content_type=upstream.content_type)

    async def _post(self, request: web.Request) -> web.StreamResponse:
        self.requests[request.path] += 1
        self.in_flight += 1
        try:
            return await self._answer(request, await request.json())
        except asyncio.CancelledError:
            if not request.get(_SETTLED):
                self.abandoned[request.path] += 1
            raise
        finally:
            self.in_flight -= 1

    @staticmethod
    def _settle(request: web.Request, counter: Counter[str], key: str) -> None:
        """Count what became of a POST request: relayed whole, or failed as a rule said."""
        counter[key] += 1
        request[_SETTLED] = True

    async def _answer(self, request: web.Request, body: dict[str, Any]) -> web.StreamResponse:
        path = request.path
        fault = self._fault_for(path, body)
        if fault is not None and fault.kind == "status":
            self._settle(request, self.injected, "status")
            error = {"message": "injected fault", "type": "InternalServerError", "param": None, "code": fault.status}
            return web.json_response({"error": error}, status=fault.status)
        if fault is not None and fault.kind == "reset":
            self._settle(request, self.injected, "reset")
            return _reset(request)
        async with self._upstream.post(self.upstream + path, json=body) as upstream:
            if upstream.status == 200 and upstream.content_type == "text/event-stream":
                return await self._relay_stream(request, upstream, fault)
            raw = await upstream.read()
            if fault is not None and fault.kind in PLAIN_BODY_FAULTS and upstream.status == 200:
                self._settle(request, self.injected, fault.kind)
                return await _break_body(request, fault, raw, upstream.content_type)
            self._settle(request, self.completed, path)
            return web.Response(body=raw, status=upstream.status, content_type=upstream.content_type)

    async def _relay_stream(
        self, request: web.Request, upstream: aiohttp.ClientResponse, fault: Fault | None
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        events = 0
        async for line in upstream.content:
            is_event = line.startswith(b"data:")
            if fault is not None and is_event and events >= fault.after_events:
                self._settle(request, self.injected, fault.kind)
                return await _break_stream(request, response, fault, line)
            await response.write(line)
            events += is_event
            if line.strip() == b"data: [DONE]":
                # Counted here, not at the end of the stream: a client is done once it has [DONE].
                self._settle(request, self.completed, request.path)
        await response.write_eof()
        return response


async def _break_stream(
    request: web.Request, response: web.StreamResponse, fault: Fault, next_line: bytes
) -> web.StreamResponse:
    if fault.kind == "cut":
        return _reset(request, response)
    if fault.kind == "stall":
        await asyncio.sleep(fault.stall_s)
        return _reset(request, response)
    if fault.kind == "truncated":
        await response.write(next_line.rstrip(b"\n")[: max(8, len(next_line) // 2)])
    elif fault.kind == "error_event":
        # vLLM's own shape: vllm/entrypoints/openai/completion/serving.py sends the body of
        # create_streaming_error_response, then [DONE], when generation fails mid-stream.
        error = {"message": "injected generation failure", "type": "InternalServerError", "param": None, "code": 500}
        await response.write(b"data: " + json.dumps({"error": error}).encode() + b"\n\ndata: [DONE]\n\n")
    elif fault.kind == "non_object_event":
        await response.write(b'data: ["not", "an", "object"]\n\ndata: [DONE]\n\n')
    elif fault.kind == "bad_fields_event":
        await response.write(b'data: {"choices": ["not an object"], "usage": []}\n\ndata: [DONE]\n\n')
    await response.write_eof()
    return response


async def _break_body(request: web.Request, fault: Fault, raw: bytes, content_type: str) -> web.StreamResponse:
    half = raw[: len(raw) // 2]
    if fault.kind == "truncated":
        return web.Response(body=half, content_type=content_type)
    if fault.kind == "stall":
        await asyncio.sleep(fault.stall_s)
        return _reset(request)
    # cut: the server promised the whole body, then its connection went away.
    response = web.StreamResponse(headers={"Content-Type": content_type})
    response.content_length = len(raw)
    await response.prepare(request)
    await response.write(half)
    return _reset(request, response)


def _reset(request: web.Request, response: web.StreamResponse | None = None) -> web.StreamResponse:
    """Drop the connection with a TCP reset (SO_LINGER 0), as a crashed peer's kernel does."""
    transport = request.transport
    if transport is not None:
        sock = transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        transport.abort()
    return response if response is not None else web.Response()
