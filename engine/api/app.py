"""The HTTP side of `spectra api`: an aiohttp application speaking the OpenAI API.

`POST /v1/chat/completions` answers a request with the method its `model` names (whole, or streamed
with `stream: true`); `GET /v1/models` lists the methods offered; `GET /health` is 200 while every
model server answers, 503 while one is down or the server is draining. With an API key, every
`/v1/` route needs `Authorization: Bearer <key>` (401 without it, and nothing runs). Every refusal
is an OpenAI error object with one line; a refused or failed request leaves the server and the
other requests as they were. Handlers are cancelled when their client goes away
(`handler_cancellation`), which cancels the problem's tracks and their requests on the model servers.
"""

from __future__ import annotations

import hmac
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass

import structlog
from aiohttp import web

from engine.api.contract import RequestError, read_request
from engine.api.replies import Reply, error_body, step_joint
from engine.api.service import RETRY_AFTER_S, ReasoningService
from engine.api.streaming import stream_answer
from engine.data.problems import Problem
from engine.logging import bind_context
from engine.serving.responses import decode_json, encode_json

log = structlog.get_logger(__name__)

# A client's own id for its request (the problem id of its record): letters, digits and ._:- only.
REQUEST_ID_HEADER = "X-Request-Id"
REQUEST_ID_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789._:-")
REQUEST_ID_MAX = 128


@dataclass
class ApiSettings:
    """What the server checks: the key (None: open), the largest body and max_tokens a request may
    send, how many problems may wait for a slot; how long requests in flight may take to finish
    once the server stops, while `draining` turns new ones away."""

    api_key: str | None
    max_body_bytes: int
    max_request_tokens: int
    max_queued_requests: int = 256
    drain_timeout_s: float = 600.0
    draining: bool = False


SERVICE = web.AppKey("service", ReasoningService)
SETTINGS = web.AppKey("settings", ApiSettings)
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_response(status: int, message: str, param: str | None = None) -> web.Response:
    headers = {"Retry-After": str(RETRY_AFTER_S)} if status in (429, 503) else None
    return web.Response(
        status=status, body=encode_json(error_body(status, message, param)), content_type="application/json",
        headers=headers,
    )  # fmt: skip


@web.middleware
async def refusals(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every refusal as one JSON line; the key checked before anything runs."""
    settings = request.app[SETTINGS]
    try:
        if request.path.startswith("/v1/") and not _authorized(request, settings.api_key):
            raise RequestError(401, "missing or wrong API key: send Authorization: Bearer <key> (--api_key)")
        return await handler(request)
    except RequestError as exc:
        log.info("request_error", status=exc.status, reason=exc.message)
        return error_response(exc.status, exc.message, exc.param)
    except web.HTTPException as exc:  # no such route, or method
        if exc.status < 400:
            raise
        return error_response(exc.status, f"{request.method} {request.path}: {exc.reason}")


def _authorized(request: web.Request, key: str | None) -> bool:
    if key is None:
        return True
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), key.encode())


async def chat_completions(request: web.Request) -> web.StreamResponse:
    service, settings = request.app[SERVICE], request.app[SETTINGS]
    if settings.draining:
        raise RequestError(503, "the server is stopping: send the request to another one, or later")
    chat = read_request(
        await _json_body(request, settings.max_body_bytes), max_tokens_limit=settings.max_request_tokens
    )
    resolved = service.catalog.resolve(chat)
    request_id = _request_id(request)
    problem = Problem(id=request_id, problem=chat.problem, answer=None, context=chat.context)
    joint = step_joint(resolved.config)
    reply = Reply(request_id, chat.model, int(time.time()), service.prompt_tokens(resolved, problem))
    caller = {"user": chat.user} if chat.user else {}
    with service.admission(request_id, chat.n), bind_context(request=request_id, method=chat.model, **caller):
        log.info("request_start", choices=chat.n, stream=chat.stream)
        # Opened (its server settings checked) before a stream starts: a refusal is then a plain 400.
        await service.scheduler(resolved)
        if chat.stream:

            async def solve(observers):
                return await service.solve(resolved, problem, chat.n, observers)

            return await stream_answer(
                request, reply, solve, choices=chat.n, joint=joint, include_usage=chat.include_usage
            )
        records = await service.solve(resolved, problem, chat.n)
        log.info("request_done", answers=[r.answer for r in records])
        return web.Response(body=reply.completion(records, joint), content_type="application/json")


async def _json_body(request: web.Request, limit: int) -> object:
    if request.content_length is not None and request.content_length > limit:
        raise RequestError(
            413, f"the body has {request.content_length} bytes, over the limit of {limit} (--max_body_bytes)"
        )
    try:
        raw = await request.read()
    except web.HTTPRequestEntityTooLarge:
        raise RequestError(413, f"the body is over the limit of {limit} bytes (--max_body_bytes)") from None
    try:
        return decode_json(raw)
    except ValueError as exc:
        raise RequestError(400, f"the body is not valid JSON ({exc})") from None


def _request_id(request: web.Request) -> str:
    given = request.headers.get(REQUEST_ID_HEADER)
    if given is None:
        return f"chatcmpl-{uuid.uuid4().hex}"
    if not 0 < len(given) <= REQUEST_ID_MAX or not set(given) <= REQUEST_ID_CHARS:
        raise RequestError(
            400, f"{REQUEST_ID_HEADER} must be 1 to {REQUEST_ID_MAX} letters, digits or ._:- (the record's problem id)"
        )
    return given


async def list_models(request: web.Request) -> web.Response:
    service = request.app[SERVICE]
    created = int(time.time())
    data = [
        {
            "id": name,
            "object": "model",
            "created": created,
            "owned_by": "spectra",
            "spectra": {"kind": m.info.kind, "description": m.info.description, "models": list(m.info.roles)},
        }
        for name, m in service.catalog.methods.items()
    ]
    return web.Response(body=encode_json({"object": "list", "data": data}), content_type="application/json")


async def health(request: web.Request) -> web.Response:
    service, settings = request.app[SERVICE], request.app[SETTINGS]
    if settings.draining:
        return error_response(503, "the server is stopping")
    down = await service.down_roles()
    if down:
        return error_response(503, f"model server down: {', '.join(down)}")
    body = {"status": "ok", "problems_admitted": service.admitted, "problems_queued": service.queued}
    return web.Response(body=encode_json(body), content_type="application/json")


@asynccontextmanager
async def answering(app: web.Application, host: str, port: int) -> AsyncIterator[str]:
    """Serve `app` on host:port (0: a free port) for the block; yields its URL. On the way out new
    requests get 503 while those in flight finish, for at most the drain timeout (then they are
    cancelled, and their problems with them)."""
    settings = app[SETTINGS]
    runner = web.AppRunner(app, handler_cancellation=True, shutdown_timeout=settings.drain_timeout_s, access_log=None)
    await runner.setup()
    try:
        listening = socket.create_server((host, port))
        await web.SockSite(runner, listening).start()
        bound_host, bound_port = listening.getsockname()[:2]
        yield f"http://{bound_host}:{bound_port}"
    finally:
        settings.draining = True
        log.info("api_draining", problems_admitted=app[SERVICE].admitted)
        await runner.cleanup()
        log.info("api_stopped")


def make_app(service: ReasoningService, settings: ApiSettings) -> web.Application:
    app = web.Application(middlewares=[refusals], client_max_size=settings.max_body_bytes)
    app[SERVICE], app[SETTINGS] = service, settings
    app.router.add_post("/v1/chat/completions", chat_completions)
    app.router.add_get("/v1/models", list_models)
    app.router.add_get("/health", health)
    return app
