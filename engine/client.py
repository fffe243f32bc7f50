"""The only code that speaks HTTP: `/v1/completions`, `/pooling` and `/tokenize` on vLLM OpenAI servers.

One `ModelClient` serves one model behind one or more endpoints. It picks the endpoint with
the fewest requests in flight, bounds requests in flight per endpoint, puts a timeout on
every request, retries what is worth retrying (connection errors, 429, 5xx, stalled or cut
streams) with exponential backoff and jitter, and accounts every request. Cancelling the
task that awaits a request closes its HTTP connection, which makes vLLM abort the request.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
    stop_before_delay,
    wait_random_exponential,
)

from engine.errors import RetryableServerError, ServerError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ClientLimits:
    """Timeouts, retries and concurrency of one model's client.

    `stall_timeout_s` bounds the silence between two chunks of a streamed answer (a stalled
    server); `request_timeout_s` bounds a whole request. Retries stop after `max_attempts`
    or once `retry_deadline_s` has passed since the first attempt, whichever comes first.
    """

    max_in_flight_per_endpoint: int = 64
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 1800.0
    stall_timeout_s: float = 300.0
    max_attempts: int = 8
    retry_deadline_s: float = 600.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 20.0


@dataclass
class Choice:
    """One generated continuation: its text and why it stopped.

    `stop_reason` is vLLM's extension: the stop string (or token id) that ended the text.
    `top_logprobs` holds, per generated token, the top-k alternatives as token -> logprob;
    `text_offsets` where each token starts in the text (prompt included with `echo`).
    """

    text: str = ""
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    tokens: list[str] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    text_offsets: list[int] = field(default_factory=list)


@dataclass
class Pooled:
    """The answer of vLLM's `/pooling` for one input: `data` is the pooler's output (for a process
    reward model, one row of label probabilities per step tag)."""

    data: list
    model: str
    endpoint: str
    prompt_tokens: int
    latency_s: float


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
class ClientStats:
    """Counters over the life of a client, for logs and benchmarks."""

    requests: int = 0
    retries: int = 0
    failures: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _Endpoint:
    url: str
    slots: asyncio.Semaphore
    in_flight: int = 0
    waiting: int = 0
    unhealthy_until: float = 0.0

    @property
    def load(self) -> int:
        return self.in_flight + self.waiting


# A failing endpoint is passed over for this long, so retries go to its healthy twins first.
_UNHEALTHY_COOLDOWN_S = 5.0


class ModelClient:
    """Async client for one model served at one or more OpenAI-compatible endpoints."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        model: str,
        urls: list[str],
        limits: ClientLimits = ClientLimits(),
    ):
        if not urls:
            raise ValueError("ModelClient needs at least one endpoint URL")
        self.session = session
        self.model = model
        self.limits = limits
        self.stats = ClientStats()
        self._endpoints = [
            _Endpoint(url.rstrip("/"), asyncio.Semaphore(limits.max_in_flight_per_endpoint)) for url in urls
        ]

    @property
    def urls(self) -> list[str]:
        return [e.url for e in self._endpoints]

    def in_flight(self) -> dict[str, int]:
        """Requests in flight per endpoint URL."""
        return {e.url: e.in_flight for e in self._endpoints}

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
        stream: bool = True,
        extra: dict[str, Any] | None = None,
    ) -> Completion:
        """Continue `prompt` through `/v1/completions`; `extra` carries vLLM's own parameters."""
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
        body.update(extra or {})
        return await self._with_retries(lambda endpoint: self._post_completion(endpoint, body))

    async def pool(self, prompt: str, *, extra: dict[str, Any] | None = None) -> Pooled:
        """Run a pooling model (a reward model) on `prompt` through vLLM's `/pooling`."""
        body: dict[str, Any] = {"model": self.model, "input": prompt, **(extra or {})}

        async def once(endpoint: _Endpoint) -> Pooled:
            started = time.monotonic()
            async with self._request(endpoint, "/pooling", body, stream=False) as response:
                payload = await _read_json(endpoint, response)
            data = payload.get("data")
            if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
                raise RetryableServerError(endpoint.url, None, f"no pooling data in response: {str(payload)[:200]}")
            usage = payload.get("usage") or {}
            prompt_tokens = int(usage.get("prompt_tokens") or 0)
            self.stats.prompt_tokens += prompt_tokens
            return Pooled(data[0].get("data"), self.model, endpoint.url, prompt_tokens, time.monotonic() - started)

        return await self._with_retries(once)

    async def tokenize(self, prompt: str) -> list[int]:
        """Token ids of `prompt` under the served model's tokenizer (vLLM's `/tokenize`)."""

        async def once(endpoint: _Endpoint) -> list[int]:
            body = {"model": self.model, "prompt": prompt, "add_special_tokens": False}
            async with self._request(endpoint, "/tokenize", body, stream=False) as response:
                payload = await _read_json(endpoint, response)
            return list(payload["tokens"])

        return await self._with_retries(once)

    async def _with_retries(self, attempt_on):
        limits = self.limits

        def before_sleep(state: RetryCallState) -> None:
            self.stats.retries += 1
            log.warning(
                "request_retry",
                model=self.model,
                attempt=state.attempt_number,
                error=str(state.outcome.exception()) if state.outcome else None,
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RetryableServerError),
            # stop_before_delay: no backoff sleep or new attempt may start past the deadline.
            stop=stop_after_attempt(limits.max_attempts) | stop_before_delay(limits.retry_deadline_s),
            wait=wait_random_exponential(multiplier=limits.backoff_initial_s, max=limits.backoff_max_s),
            before_sleep=before_sleep,
            reraise=True,
        )
        try:
            async for attempt in retrying:
                with attempt:
                    async with self._endpoint_slot() as endpoint:
                        try:
                            result = await attempt_on(endpoint)
                        except RetryableServerError:
                            endpoint.unhealthy_until = time.monotonic() + _UNHEALTHY_COOLDOWN_S
                            raise
                    if isinstance(result, Completion):
                        result.attempts = attempt.retry_state.attempt_number
                    return result
        except ServerError:
            self.stats.failures += 1
            raise

    @asynccontextmanager
    async def _endpoint_slot(self) -> AsyncIterator[_Endpoint]:
        now = time.monotonic()
        healthy = [e for e in self._endpoints if e.unhealthy_until <= now] or self._endpoints
        endpoint = min(healthy, key=lambda e: e.load)
        endpoint.waiting += 1
        try:
            await endpoint.slots.acquire()
        finally:
            endpoint.waiting -= 1
        endpoint.in_flight += 1
        try:
            yield endpoint
        finally:
            endpoint.in_flight -= 1
            endpoint.slots.release()

    @asynccontextmanager
    async def _request(
        self, endpoint: _Endpoint, path: str, body: dict[str, Any], *, stream: bool
    ) -> AsyncIterator[aiohttp.ClientResponse]:
        limits = self.limits
        timeout = aiohttp.ClientTimeout(
            total=limits.request_timeout_s,
            sock_connect=limits.connect_timeout_s,
            sock_read=limits.stall_timeout_s if stream else limits.request_timeout_s,
        )
        url = endpoint.url + path
        self.stats.requests += 1
        try:
            async with self.session.post(url, json=body, timeout=timeout) as response:
                if response.status >= 400:
                    raise await _status_error(endpoint, response)
                try:
                    yield response
                except asyncio.CancelledError:
                    # Closing the connection is what tells vLLM to abort the request.
                    response.close()
                    raise
        except TimeoutError as exc:  # before connection errors: aiohttp's socket timeouts are both
            raise RetryableServerError(endpoint.url, None, f"timed out waiting for the server ({exc})") from exc
        except (aiohttp.ClientConnectionError, aiohttp.ClientPayloadError) as exc:
            raise RetryableServerError(endpoint.url, None, f"{type(exc).__name__}: {exc}") from exc

    async def _post_completion(self, endpoint: _Endpoint, body: dict[str, Any]) -> Completion:
        started = time.monotonic()
        async with self._request(endpoint, "/v1/completions", body, stream=body["stream"]) as response:
            if body["stream"]:
                choices, usage, first_token_at = await _read_stream(endpoint, response)
            else:
                payload = await _read_json(endpoint, response)
                choices = [_choice_from_payload(c) for c in _sorted_choices(endpoint, payload)]
                usage, first_token_at = payload.get("usage") or {}, None
        latency = time.monotonic() - started
        completion = Completion(
            choices=choices,
            model=self.model,
            endpoint=endpoint.url,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=latency,
            ttft_s=None if first_token_at is None else first_token_at - started,
        )
        self.stats.prompt_tokens += completion.prompt_tokens
        self.stats.completion_tokens += completion.completion_tokens
        return completion


async def _status_error(endpoint: _Endpoint, response: aiohttp.ClientResponse) -> ServerError:
    text = await response.text(errors="replace")
    try:
        payload = json.loads(text)
        error = payload.get("error", payload)
        message = error.get("message", text) if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError):
        message = text
    message = " ".join(str(message).split())[:500]
    status = response.status
    retryable = status == 429 or status >= 500
    return (RetryableServerError if retryable else ServerError)(endpoint.url, status, message)


async def _read_json(endpoint: _Endpoint, response: aiohttp.ClientResponse) -> dict[str, Any]:
    raw = await response.read()
    try:
        payload = json.loads(raw)
    except ValueError as exc:
        raise RetryableServerError(endpoint.url, response.status, f"malformed JSON body: {raw[:200]!r}") from exc
    if not isinstance(payload, dict):
        raise RetryableServerError(endpoint.url, response.status, f"unexpected body: {raw[:200]!r}")
    return payload


def _is_openai_object(data: Any) -> bool:
    """An object whose `choices` (if any) is a list of objects and `usage` (if any) an object:
    what the parsing here reads without further checks."""
    if not isinstance(data, dict):
        return False
    choices, usage = data.get("choices") or [], data.get("usage") or {}
    return isinstance(choices, list) and all(isinstance(c, dict) for c in choices) and isinstance(usage, dict)


def _sorted_choices(endpoint: _Endpoint, payload: dict[str, Any]) -> list[dict[str, Any]]:
    choices = payload.get("choices")
    if not _is_openai_object(payload) or not choices:
        raise RetryableServerError(endpoint.url, None, f"no choices in response: {str(payload)[:200]}")
    return sorted(choices, key=lambda c: c.get("index", 0))


def _choice_from_payload(data: dict[str, Any]) -> Choice:
    choice = Choice(
        text=data.get("text") or "",
        finish_reason=data.get("finish_reason"),
        stop_reason=data.get("stop_reason"),
    )
    _add_logprobs(choice, data.get("logprobs"))
    return choice


def _add_logprobs(choice: Choice, logprobs: dict[str, Any] | None) -> None:
    if not logprobs:
        return
    choice.tokens.extend(logprobs.get("tokens") or [])
    choice.text_offsets.extend(logprobs.get("text_offset") or [])
    for top in logprobs.get("top_logprobs") or []:
        choice.top_logprobs.append(dict(top or {}))


async def _read_stream(
    endpoint: _Endpoint, response: aiohttp.ClientResponse
) -> tuple[list[Choice], dict[str, Any], float | None]:
    """Read server-sent events until `data: [DONE]`; a stream that ends before it was cut."""
    choices: dict[int, Choice] = {}
    usage: dict[str, Any] = {}
    first_token_at: float | None = None
    async for data in _event_data(response):
        if data == b"[DONE]":
            if not choices:
                raise RetryableServerError(endpoint.url, response.status, "stream ended with no choices")
            return [choices[i] for i in sorted(choices)], usage, first_token_at
        try:
            chunk = json.loads(data.decode())
        except ValueError as exc:
            raise RetryableServerError(endpoint.url, response.status, f"malformed event: {data[:200]!r}") from exc
        if not _is_openai_object(chunk):
            raise RetryableServerError(endpoint.url, response.status, f"malformed event: {data[:200]!r}")
        if "error" in chunk:
            raise _in_band_error(endpoint, chunk["error"])
        if chunk.get("usage"):
            usage = chunk["usage"]
        for part in chunk.get("choices") or []:
            choice = choices.setdefault(part.get("index", 0), Choice())
            if part.get("text"):
                first_token_at = first_token_at or time.monotonic()
                choice.text += part["text"]
            if part.get("finish_reason") is not None:
                choice.finish_reason = part["finish_reason"]
                choice.stop_reason = part.get("stop_reason")
            _add_logprobs(choice, part.get("logprobs"))
    raise RetryableServerError(endpoint.url, response.status, "stream cut before [DONE]")


def _in_band_error(endpoint: _Endpoint, error: Any) -> ServerError:
    """vLLM reports a failure after a stream has started as a `data: {"error": ...}` event."""
    error = error if isinstance(error, dict) else {"message": str(error)}
    code = error.get("code")
    status = code if isinstance(code, int) else None
    message = " ".join(str(error.get("message", error)).split())[:500]
    retryable = status is None or status == 429 or status >= 500
    return (RetryableServerError if retryable else ServerError)(endpoint.url, status, f"error in stream: {message}")


async def _event_data(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The payloads of a stream's `data:` lines. Reads blocks and splits them here: aiohttp's
    line reader costs about half of the engine's CPU per streamed token (benchmarks/README.md)."""
    pending = b""
    async for block in response.content.iter_any():
        *lines, pending = (pending + block).split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()
