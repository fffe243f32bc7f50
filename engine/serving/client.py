"""The only code that speaks HTTP: `/v1/completions`, `/pooling`, `/tokenize`, `/health` and `/load`
on vLLM OpenAI servers (`engine.serving.responses` reads their answers).

One `ModelClient` serves one model behind one or more endpoints. It puts a timeout on every
request, sends the model's API key (if any) as `Authorization: Bearer` on every request, turns what
fails into `ServerError`s (retryable or not; a 401 is one line naming the role's key flag, never
retried) and accounts every request, with the server's own timings where it reports them; its
`EndpointPool` (`engine.serving.endpoints`) picks the endpoint (a track's requests stay on the
replica that holds its prefix, `engine.serving.routing`), bounds requests in flight per
endpoint, retries what is worth retrying (connection errors, 429, 5xx, stalled or cut streams)
with backoff and rides out a server restart. Cancelling the task that awaits a request closes its HTTP connection, which
makes vLLM abort the request, streamed or not (tests/integration/test_client_vllm.py).

The engine uses every generated text whole, so requests are not streamed by default: a stream
of 32 tokens costs the engine about four times the CPU of one JSON body (benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aiohttp

from engine.clock import WALL_CLOCK, Clock
from engine.errors import RetryableServerError, ServerError
from engine.serving.endpoints import ClientLimits, Endpoint, EndpointPool
from engine.serving.responses import (
    Answer,
    Choice,
    ServerTimings,
    encode_json,
    read_json,
    read_pooling,
    read_stream_completion,
    read_whole_completion,
    status_error,
)
from engine.serving.routing import RouteKey

_JSON_HEADERS = {"Content-Type": "application/json"}
# Why a request is sent (`engine.serving.models.Purpose`): vLLM ignores the header; the scripted fake
# server answers by it, and a proxy or a server's access log can tell requests apart by it.
PURPOSE_HEADER = "X-Spectra-Purpose"
UNAUTHORIZED = 401


def role_key_env(role: str) -> str:
    """The environment variable a runner reads the API key of `role`'s server from."""
    return f"SPECTRA_{role.upper()}_API_KEY"


def bearer(api_key: str | None) -> dict[str, str]:
    """The header that carries `api_key` (none without a key)."""
    return {"Authorization": f"Bearer {api_key}"} if api_key else {}


def key_refused(role: str | None, sent: bool) -> str:
    """What to say of a server that answered 401: it wants a key, or not the one sent, and where
    the key of `role` is given."""
    said = "refused the API key sent" if sent else "requires an API key"
    if role is None:
        return f"the server {said}"
    return f"the {role} model's server {said}: give its key with --{role}_api_key or {role_key_env(role)}"


@dataclass
class Completion:
    """The result of one request, with its accounting."""

    choices: list[Choice]
    model: str
    endpoint: str
    prompt_tokens: int
    completion_tokens: int
    latency_s: float
    ttft_s: float | None
    attempts: int = 1
    # The server's `usage.prompt_tokens_details.cached_tokens` (vLLM with --enable-prompt-tokens-details).
    cached_prompt_tokens: int | None = None
    # The server's own timings of the request (vLLM with --enable-per-request-metrics).
    timings: ServerTimings | None = None

    @property
    def text(self) -> str:
        return self.choices[0].text

    @property
    def finish_reason(self) -> str | None:
        return self.choices[0].finish_reason

    @property
    def stop_reason(self) -> str | int | None:
        return self.choices[0].stop_reason

    @property
    def top_logprobs(self) -> list[dict[str, float]]:
        return self.choices[0].top_logprobs


@dataclass
class Pooled:
    """The answer of vLLM's `/pooling` for one input: `data` is the pooler's output (for a process
    reward model, one row of label probabilities per step tag)."""

    data: list
    model: str
    endpoint: str
    prompt_tokens: int
    latency_s: float
    attempts: int = 1


class ModelClient:
    """Async client for one model served at one or more OpenAI-compatible endpoints; `clock` is
    the time its retries wait on (a seam for tests). `api_key` goes to every endpoint as
    `Authorization: Bearer` (never into a log or an error); `role` names the model in the one line
    a 401 gets."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        model: str,
        urls: list[str],
        limits: ClientLimits = ClientLimits(),
        clock: Clock = WALL_CLOCK,
        *,
        api_key: str | None = None,
        role: str | None = None,
    ):
        self.model = model
        self.limits = limits
        self.role = role
        auth = bearer(api_key)
        self._headers = {**_JSON_HEADERS, **auth}
        self._keyed = bool(api_key)
        self._pool = EndpointPool(session, model, urls, limits, clock, headers=auth)
        self.stats = self._pool.stats
        # Built once: a ClientTimeout per request is an allocation on the hot path.
        self._whole_timeout = aiohttp.ClientTimeout(
            total=limits.request_timeout_s, sock_connect=limits.connect_timeout_s
        )
        self._stream_timeout = aiohttp.ClientTimeout(
            total=limits.request_timeout_s, sock_connect=limits.connect_timeout_s, sock_read=limits.stall_timeout_s
        )
        self.session = session

    @property
    def urls(self) -> list[str]:
        return self._pool.urls

    def in_flight(self) -> dict[str, int]:
        """Requests in flight per endpoint URL."""
        return self._pool.in_flight()

    async def complete(
        self,
        prompt: str | list[int],
        *,
        max_tokens: int,
        temperature: float = 0.6,
        top_p: float = 0.95,
        stop: list[str] | None = None,
        seed: int | None = None,
        logprobs: int | None = None,
        n: int = 1,
        stream: bool = False,
        extra: dict[str, Any] | None = None,
        purpose: str | None = None,
        route: RouteKey | None = None,
    ) -> Completion:
        """Continue `prompt` through `/v1/completions`; `extra` carries vLLM's own parameters,
        `purpose` goes in the `X-Spectra-Purpose` header, `route` names the track whose replica
        the request should go to (`engine.serving.routing`).

        Stream (`stream=True`) where a long answer should be bounded by the stall timeout rather
        than the whole-request one, or where the time to the first token matters (`ttft_s`).
        """
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": max_tokens,
            "temperature": temperature,
            "top_p": top_p,
            "n": n,
            "stream": stream,
        }
        if stop:
            body["stop"] = stop
        if seed is not None:
            body["seed"] = seed
        if logprobs is not None:
            body["logprobs"] = logprobs
        if stream:
            body["stream_options"] = {"include_usage": True}
        if extra:
            body.update(extra)
        read = read_stream_completion if stream else read_whole_completion

        async def once(endpoint: Endpoint, attempt: int) -> Completion:
            started = time.monotonic()
            answer = await self._post(endpoint, "/v1/completions", body, read, stream=stream, purpose=purpose)
            return self._account(endpoint, answer, started, attempt)

        return await self._pool.attempt(once, route)

    async def pool(
        self,
        prompt: str,
        *,
        extra: dict[str, Any] | None = None,
        purpose: str | None = None,
        route: RouteKey | None = None,
    ) -> Pooled:
        """Run a pooling model (a reward model, an embedder) on `prompt` through vLLM's `/pooling`
        (which reports no timings of its own: vLLM 0.32 sends `metrics` on completions only)."""
        body: dict[str, Any] = {"model": self.model, "input": prompt, **(extra or {})}

        async def once(endpoint: Endpoint, attempt: int) -> Pooled:
            started = time.monotonic()
            data, usage = await self._post(endpoint, "/pooling", body, read_pooling, stream=False, purpose=purpose)
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.stats.prompt_tokens += prompt_tokens
            return Pooled(data, self.model, endpoint.url, prompt_tokens, time.monotonic() - started, attempt)

        return await self._pool.attempt(once, route)

    async def tokenize(self, prompt: str) -> list[int]:
        """Token ids of `prompt` under the served model's tokenizer (vLLM's `/tokenize`)."""
        body = {"model": self.model, "prompt": prompt, "add_special_tokens": False}

        async def once(endpoint: Endpoint, attempt: int) -> list[int]:
            payload = await self._post(endpoint, "/tokenize", body, read_json, stream=False)
            return list(payload["tokens"])

        return await self._pool.attempt(once)

    async def _post(
        self,
        endpoint: Endpoint,
        path: str,
        body: dict[str, Any],
        read: Callable[[str, aiohttp.ClientResponse], Awaitable[Any]],
        *,
        stream: bool,
        purpose: str | None = None,
    ) -> Any:
        """POST `body` to `endpoint` and `read` the answer; errors become `ServerError`s. A stream
        is bounded by the stall timeout between chunks, a whole answer by the request timeout."""
        timeout = self._stream_timeout if stream else self._whole_timeout
        headers = self._headers if purpose is None else {**self._headers, PURPOSE_HEADER: purpose}
        self.stats.requests += 1
        try:
            async with self.session.post(
                endpoint.url + path, data=encode_json(body), headers=headers, timeout=timeout
            ) as response:
                if response.status == UNAUTHORIZED:
                    raise ServerError(endpoint.url, UNAUTHORIZED, key_refused(self.role, self._keyed))
                if response.status >= 400:
                    raise await status_error(endpoint.url, response)
                try:
                    return await read(endpoint.url, response)
                except asyncio.CancelledError:
                    # Closing the connection is what tells vLLM to abort the request. (Cancelled
                    # before the response started, aiohttp closes it itself.)
                    response.close()
                    raise
        except TimeoutError as exc:  # before connection errors: aiohttp's socket timeouts are both
            raise RetryableServerError(endpoint.url, None, f"timed out waiting for the server ({exc})") from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            # Refused, reset or broken mid-answer: what a restarting server does.
            message = f"{type(exc).__name__}: {exc}"
            raise RetryableServerError(endpoint.url, None, message, unavailable=True) from exc

    def _account(self, endpoint: Endpoint, answer: Answer, started: float, attempts: int) -> Completion:
        usage, first_token_at = answer.usage, answer.first_token_at
        completion = Completion(
            choices=answer.choices,
            model=self.model,
            endpoint=endpoint.url,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=time.monotonic() - started,
            ttft_s=None if first_token_at is None else first_token_at - started,
            attempts=attempts,
            cached_prompt_tokens=_cached_tokens(usage),
            timings=answer.timings,
        )
        self.stats.prompt_tokens += completion.prompt_tokens
        self.stats.completion_tokens += completion.completion_tokens
        return completion


def _cached_tokens(usage: dict[str, Any]) -> int | None:
    details = usage.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return int(cached) if isinstance(cached, int) else None
