"""A scripted, in-process fake of vLLM's OpenAI-compatible server, for exact unit tests.

Each request to `/v1/completions` is answered by the next `Reply` of the script, or by a
responder function of the request body; `by_purpose` scripts the requests of a purpose apart
(the `X-Spectra-Purpose` header the engine's model handle sends, `engine.serving.models.Purpose`).
Replies can fail with a status, stall, stream slowly, cut the stream, or send a malformed body,
so every branch of the client can be driven. The server records every request body and its
purpose, every request whose client went away and every `/health` check; started on a given
`port`, a new server can stand in for one that stopped.
`/pooling` answers as vLLM does for a process reward model, with the rows a `pooler` function
gives for the request body. A reply's `metrics` go out as vLLM's per-request metrics do; `GET /load`
answers as vLLM's does with load tracking (the requests in hand, plus `other_load`: other clients');
with `api_key` set, the `/v1/` routes answer 401, as vLLM's `--api-key` does, to a request without it.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from engine.serving.client import PURPOSE_HEADER


@dataclass
class Reply:
    """One scripted answer. `tokens` splits the text into streamed tokens (default: characters)."""

    text: str = "ok"
    tokens: list[str] | None = None
    finish_reason: str = "stop"
    stop_reason: str | int | None = None
    top_logprobs: list[dict[str, float]] | None = None
    # vLLM's prompt_logprobs as sent (whole responses only): per prompt token None or
    # {"<token id>": {"logprob": float, "rank": int, "decoded_token": str}}, or that JSON pre-encoded.
    prompt_logprobs: list[dict[str, dict[str, Any]] | msgspec.Raw | None] | None = None
    prompt_tokens: int = 5
    # Reported as `usage.prompt_tokens_details.cached_tokens` (vLLM --enable-prompt-tokens-details).
    cached_tokens: int | None = None
    # vLLM's per-request `metrics` (--enable-per-request-metrics), e.g. {"queue_time_ms": 3.0, ...}.
    metrics: dict[str, Any] | None = None
    status: int = 200
    error_message: str = "scripted failure"
    delay_s: float = 0.0
    # Replies only once this event is set (after `delay_s`): orders replies by events, not sleeps.
    after: asyncio.Event | None = None
    chunk_delay_s: float = 0.0
    cut_after_chunks: int | None = None
    # Streams this many chunks, then nothing until its client goes away (a stalled stream).
    stall_after_chunks: int | None = None
    malformed: bool = False
    error_event: dict[str, Any] | None = None
    raw_event: bytes | None = None
    # A whole answer's body as given, instead of the completion built from the fields above.
    raw_body: bytes | None = None
    # A request for several continuations (`n`): the choices after the first (else copies of it).
    others: list[Reply] | None = None

    def token_list(self) -> list[str]:
        if self.tokens is not None:
            return self.tokens
        return list(self.text) if self.text else []


Responder = Callable[[dict[str, Any]], Reply]
Script = list[Reply] | Responder
# The pooling output of one input: for a PRM, one [P(bad), P(good)] row per step tag.
Pooler = Callable[[dict[str, Any]], list]


@dataclass
class FakeOpenAIServer:
    """Start with `async with FakeOpenAIServer(script) as server:`; `server.url` is its base URL."""

    script: Script = field(default_factory=list)
    # Purpose (the header's value) -> the script of that purpose's requests; others go to `script`.
    by_purpose: dict[str, Script] = field(default_factory=dict)
    served_model: str = "fake-model"
    pooler: Pooler | None = None
    version: str = "0.0.0-fake"
    requests: list[dict[str, Any]] = field(default_factory=list)
    pooling_requests: list[dict[str, Any]] = field(default_factory=list)
    # The purpose of each request of `requests` and `pooling_requests` (None: no header), in order.
    purposes: list[str | None] = field(default_factory=list)
    pooling_purposes: list[str | None] = field(default_factory=list)
    disconnects: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    health_checks: int = 0
    # Streams now stalled by `Reply.stall_after_chunks`.
    stalled: int = 0
    port: int = 0
    url: str = ""
    # Completions wait until this many were in flight at once, so a test of concurrency sees its
    # peak whatever the machine's load (not the order of sleeps); None: no gate.
    gate_in_flight: int | None = None
    # The key the /v1/ routes require (vLLM's --api-key); the Authorization header of every request.
    api_key: str | None = None
    authorizations: list[str | None] = field(default_factory=list)
    # Requests other clients have in hand, added to this server's own in GET /load's answer.
    other_load: int = 0
    load_reads: int = 0

    async def __aenter__(self) -> FakeOpenAIServer:
        app = web.Application(middlewares=[self._authenticate])
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_post("/pooling", self._pooling)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/version", self._version)
        app.router.add_get("/load", self._load)
        self._gate, self._quiet = asyncio.Event(), asyncio.Event()
        self._quiet.set()
        self._runner = web.AppRunner(app, shutdown_timeout=0.1, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port, reuse_address=True)
        await site.start()
        self.port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self._runner.cleanup()

    async def quiet(self, timeout_s: float = 10.0) -> None:
        """Wait until no request is in flight: the server has seen every request the client closed
        as a disconnect (an event, not a guess at how long that takes)."""
        await asyncio.wait_for(self._quiet.wait(), timeout_s)

    def _enter(self) -> None:
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        self._quiet.clear()
        if self.gate_in_flight is not None and self.peak_in_flight >= self.gate_in_flight:
            self._gate.set()

    def _leave(self) -> None:
        self.in_flight -= 1
        if self.in_flight == 0:
            self._quiet.set()

    async def _pass_gate(self) -> None:
        if self.gate_in_flight is not None:
            # Bounded: an engine that never reaches the gate fails the test's peak assertion, not by hanging.
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._gate.wait(), 10.0)

    def requests_for(self, purpose: str) -> list[dict[str, Any]]:
        """The bodies of the completion requests sent for `purpose`, in order."""
        return [body for body, p in zip(self.requests, self.purposes, strict=True) if p == purpose]

    def _next_reply(self, body: dict[str, Any], purpose: str | None) -> Reply:
        script = self.by_purpose.get(purpose, self.script) if purpose is not None else self.script
        if callable(script):
            return script(body)
        if not script:
            raise AssertionError(f"fake server got an unscripted {purpose or ''} request: {body}")
        return script.pop(0)

    @web.middleware
    async def _authenticate(self, request: web.Request, handler: Callable) -> web.StreamResponse:
        authorization = request.headers.get("Authorization")
        self.authorizations.append(authorization)
        if self.api_key is not None and request.path.startswith("/v1/") and authorization != f"Bearer {self.api_key}":
            return web.json_response({"error": "Unauthorized"}, status=401)
        return await handler(request)

    async def _load(self, request: web.Request) -> web.Response:
        self.load_reads += 1
        return web.json_response({"server_load": self.in_flight + self.other_load})

    async def _health(self, request: web.Request) -> web.Response:
        self.health_checks += 1
        return web.Response(text="")

    async def _version(self, request: web.Request) -> web.Response:
        return web.json_response({"version": self.version})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": self.served_model, "object": "model"}]})

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = await request.json()
        tokens = [ord(ch) for ch in body["prompt"]]
        return web.json_response({"tokens": tokens, "count": len(tokens), "max_model_len": 4096})

    async def _pooling(self, request: web.Request) -> web.Response:
        """vLLM's response shape (vllm/entrypoints/pooling/pooling/protocol.py `PoolingResponse`)."""
        body = await request.json()
        self.pooling_requests.append(body)
        self.pooling_purposes.append(request.headers.get(PURPOSE_HEADER))
        if self.pooler is None:
            return web.json_response({"detail": "Not Found"}, status=404)
        self._enter()
        try:
            await asyncio.sleep(0)
            rows = self.pooler(body)
        finally:
            self._leave()
        tokens = len(str(body.get("input", "")))
        usage = {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0}
        data = [{"index": 0, "object": "pooling", "data": rows}]
        model = body.get("model")
        return web.json_response({"id": "pool-fake", "object": "list", "model": model, "data": data, "usage": usage})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        body = await request.json()
        purpose = request.headers.get(PURPOSE_HEADER)
        self.requests.append(body)
        self.purposes.append(purpose)
        reply = self._next_reply(body, purpose)
        self._enter()
        try:
            await self._pass_gate()
            await asyncio.sleep(reply.delay_s)
            if reply.after is not None:
                await reply.after.wait()
            if reply.status != 200:
                return web.json_response(
                    {"object": "error", "message": reply.error_message, "code": reply.status}, status=reply.status
                )
            if reply.malformed:
                return web.Response(text='{"choices": [ {"text": "trunc', content_type="application/json")
            if reply.raw_body is not None:
                return web.Response(body=reply.raw_body, content_type="application/json")
            if body.get("stream"):
                return await self._stream(request, body, reply)
            return web.json_response(_full_response(body, reply), dumps=_dumps)
        except (asyncio.CancelledError, ConnectionResetError):
            self.disconnects += 1
            raise
        finally:
            self._leave()

    async def _stall(self) -> None:
        self.stalled += 1
        try:
            await asyncio.Event().wait()  # until the client goes away and the handler is cancelled
        finally:
            self.stalled -= 1

    async def _stream(self, request: web.Request, body: dict[str, Any], reply: Reply) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await response.prepare(request)
        tokens = reply.token_list()
        for i, token in enumerate(tokens):
            if reply.cut_after_chunks is not None and i >= reply.cut_after_chunks:
                request.transport.close()
                return response
            if reply.stall_after_chunks is not None and i >= reply.stall_after_chunks:
                await self._stall()
            last = i == len(tokens) - 1
            choice: dict[str, Any] = {
                "index": 0,
                "text": token,
                "finish_reason": reply.finish_reason if last else None,
                "stop_reason": reply.stop_reason if last else None,
                "logprobs": _logprobs(reply, [token], i),
            }
            await _send(response, {"object": "text_completion", "choices": [choice]})
            if i == 0 and (reply.error_event is not None or reply.raw_event is not None):
                # vLLM reports a failure after the stream has started as an in-band event, then ends it.
                if reply.error_event is not None:
                    await _send(response, {"error": reply.error_event})
                else:
                    await response.write(b"data: " + reply.raw_event + b"\n\n")
                await response.write(b"data: [DONE]\n\n")
                await response.write_eof()
                return response
            await asyncio.sleep(reply.chunk_delay_s)
        if not tokens:
            end = {"index": 0, "text": "", "finish_reason": reply.finish_reason, "stop_reason": reply.stop_reason}
            await _send(response, {"object": "text_completion", "choices": [end]})
        if (body.get("stream_options") or {}).get("include_usage"):
            last = {"object": "text_completion", "choices": [], "usage": _usage(reply)}
            await _send(response, {**last, "metrics": reply.metrics} if reply.metrics else last)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response


async def _send(response: web.StreamResponse, chunk: dict[str, Any]) -> None:
    await response.write(b"data: " + msgspec.json.encode(chunk) + b"\n\n")


def _usage(reply: Reply) -> dict[str, Any]:
    completion = len(reply.token_list())
    usage: dict[str, Any] = {
        "prompt_tokens": reply.prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": reply.prompt_tokens + completion,
    }
    if reply.cached_tokens is not None:
        usage["prompt_tokens_details"] = {"cached_tokens": reply.cached_tokens}
    return usage


def _dumps(payload: Any) -> str:
    # msgspec: answers may hold pre-encoded JSON (msgspec.Raw), as the sim's prompt_logprobs do.
    return msgspec.json.encode(payload).decode()


def _logprobs(reply: Reply, tokens: list[str], offset: int) -> dict[str, Any] | None:
    if reply.top_logprobs is None:
        return None
    tops = reply.top_logprobs[offset : offset + len(tokens)]
    # Where each token starts in the text, as vLLM counts it (characters).
    starts = [sum(len(t) for t in reply.token_list()[:i]) for i in range(offset, offset + len(tokens))]
    return {
        "tokens": tokens,
        "token_logprobs": [(top or {}).get(tok, -1.0) for tok, top in zip(tokens, tops, strict=False)],
        "top_logprobs": tops,
        "text_offset": starts,
    }


def _full_response(body: dict[str, Any], reply: Reply) -> dict[str, Any]:
    choices = []
    replies = [reply, *(reply.others or [])]
    for index in range(int(body.get("n", 1))):
        this = replies[index] if index < len(replies) else reply
        choices.append(
            {
                "index": index,
                "text": this.text,
                "finish_reason": this.finish_reason,
                "stop_reason": this.stop_reason,
                "logprobs": _logprobs(this, this.token_list(), 0),
                "prompt_logprobs": reply.prompt_logprobs,
            }
        )
    usage = _usage(reply)
    if reply.others:  # vLLM counts the tokens of every choice
        usage["completion_tokens"] = sum(len(r.token_list()) for r in replies[: int(body.get("n", 1))])
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
    response = {"object": "text_completion", "model": body.get("model"), "choices": choices, "usage": usage}
    return {**response, "metrics": reply.metrics} if reply.metrics else response
