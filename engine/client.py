"""The only code that speaks HTTP: `/v1/completions`, `/tokenize` and `/health` on vLLM OpenAI servers.

One `ModelClient` serves one model behind one or more endpoints. It picks the endpoint with
the fewest requests in flight, bounds requests in flight per endpoint, puts a timeout on
every request, retries what is worth retrying (connection errors, 429, 5xx, stalled or cut
streams) with exponential backoff and jitter, and accounts every request. A server restart
is ridden out: errors it explains (`RetryableServerError.unavailable`) are retried until the
retry deadline while the endpoint's `/health` is polled, and the retry goes out as soon as it
answers again. Cancelling the task that awaits a request closes its HTTP connection, which
makes vLLM abort the request, streamed or not (tests/integration/test_client_vllm.py).

The engine uses every generated text whole, so requests are not streamed by default: a stream
of 32 tokens costs the engine about four times the CPU of one JSON body (benchmarks/README.md).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from engine.errors import RetryableServerError, ServerError

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class ClientLimits:
    """Timeouts, retries and concurrency of one model's client.

    `request_timeout_s` bounds a whole request; `stall_timeout_s` bounds the silence between
    two chunks of a streamed answer (a stalled server). Retries stop once `retry_deadline_s`
    has passed since the first attempt, or after `max_attempts` failures that a server restart
    does not explain (HTTP 500, 429, timeouts, malformed answers); refused or broken connections
    and 502/503/504 do not count against it. While an endpoint is down, its `/health` is polled
    every `health_poll_s` instead of sending it completions.
    """

    max_in_flight_per_endpoint: int = 64
    connect_timeout_s: float = 10.0
    request_timeout_s: float = 1800.0
    stall_timeout_s: float = 300.0
    max_attempts: int = 8
    retry_deadline_s: float = 600.0
    backoff_initial_s: float = 0.5
    backoff_max_s: float = 20.0
    health_poll_s: float = 1.0


@dataclass
class Choice:
    """One generated continuation: its text and why it stopped.

    `stop_reason` is vLLM's extension: the stop string (or token id) that ended the text.
    `top_logprobs` holds, per generated token, the top-k alternatives as token -> logprob.
    """

    text: str = ""
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    tokens: list[str] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)


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
    health_probes: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0


@dataclass
class _Endpoint:
    url: str
    slots: asyncio.Semaphore
    in_flight: int = 0
    waiting: int = 0
    unhealthy_until: float = 0.0
    # The last `/health` probe: whether it failed, and when; one probe at a time (`probing`).
    down: bool = False
    probed_at: float = float("-inf")
    probing: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def load(self) -> int:
        return self.in_flight + self.waiting


# A failing endpoint is passed over for this long, so retries go to its healthy twins first.
_UNHEALTHY_COOLDOWN_S = 5.0
# A server that takes longer than this to answer `/health` is not back yet.
_HEALTH_TIMEOUT_S = 2.0


@dataclass
class _Failures:
    """The failed attempts of one request, and tenacity's stop condition over them."""

    limits: ClientLimits
    started: float
    unexplained: int = 0
    last: RetryableServerError | None = None

    def add(self, error: RetryableServerError) -> None:
        self.last = error
        self.unexplained += not error.unavailable

    def exhausted(self, state: RetryCallState) -> bool:
        # As tenacity's stop_before_delay: no backoff sleep or new attempt may start past the deadline.
        past_deadline = time.monotonic() - self.started + state.upcoming_sleep >= self.limits.retry_deadline_s
        return past_deadline or self.unexplained >= self.limits.max_attempts


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
        self._endpoints = {
            url.rstrip("/"): _Endpoint(url.rstrip("/"), asyncio.Semaphore(limits.max_in_flight_per_endpoint))
            for url in urls
        }
        # Built once: a ClientTimeout per request is an allocation on the hot path.
        self._whole_timeout = aiohttp.ClientTimeout(
            total=limits.request_timeout_s, sock_connect=limits.connect_timeout_s
        )
        self._stream_timeout = aiohttp.ClientTimeout(
            total=limits.request_timeout_s, sock_connect=limits.connect_timeout_s, sock_read=limits.stall_timeout_s
        )
        self._health_timeout = aiohttp.ClientTimeout(total=_HEALTH_TIMEOUT_S)
        self._wait = wait_random_exponential(multiplier=limits.backoff_initial_s, max=limits.backoff_max_s)

    @property
    def urls(self) -> list[str]:
        return list(self._endpoints)

    def in_flight(self) -> dict[str, int]:
        """Requests in flight per endpoint URL."""
        return {e.url: e.in_flight for e in self._endpoints.values()}

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
    ) -> Completion:
        """Continue `prompt` through `/v1/completions`; `extra` carries vLLM's own parameters.

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
        read = _read_stream_completion if stream else _read_whole_completion

        async def once(endpoint: _Endpoint) -> Completion:
            started = time.monotonic()
            choices, usage, first_token_at = await self._post(endpoint, "/v1/completions", body, read, stream=stream)
            return self._account(endpoint, choices, usage, started, first_token_at)

        return await self._with_retries(once)

    async def tokenize(self, prompt: str) -> list[int]:
        """Token ids of `prompt` under the served model's tokenizer (vLLM's `/tokenize`)."""
        body = {"model": self.model, "prompt": prompt, "add_special_tokens": False}

        async def once(endpoint: _Endpoint) -> list[int]:
            payload = await self._post(endpoint, "/tokenize", body, _read_json, stream=False)
            return list(payload["tokens"])

        return await self._with_retries(once)

    async def _with_retries(self, once: Callable[[_Endpoint], Awaitable[Any]]) -> Any:
        started = time.monotonic()
        try:
            # Nearly every request succeeds at once; tenacity's machinery costs about 90 us a
            # request (benchmarks/README.md), so it is set up only when a retry is needed.
            return await self._attempt(once, 1)
        except RetryableServerError as error:
            return await self._retry(once, _Failures(self.limits, started), error)
        except ServerError:
            self.stats.failures += 1
            raise

    async def _retry(
        self, once: Callable[[_Endpoint], Awaitable[Any]], failures: _Failures, first: RetryableServerError
    ) -> Any:
        """Retry after the first attempt failed with `first`, until `failures.exhausted`."""

        def before_sleep(state: RetryCallState) -> None:
            self.stats.retries += 1
            log.warning(
                "request_retry",
                model=self.model,
                attempt=state.attempt_number,
                error=str(failures.last),
                wait_s=round(state.upcoming_sleep, 2),
            )

        retrying = AsyncRetrying(
            retry=retry_if_exception_type(RetryableServerError),
            stop=failures.exhausted,
            wait=self._wait,
            sleep=lambda seconds: self._backoff(seconds, failures.last),
            before_sleep=before_sleep,
            reraise=True,
        )
        replay: RetryableServerError | None = first
        try:
            async for attempt in retrying:
                with attempt:
                    try:
                        if replay is not None:
                            # tenacity decides on the first attempt's failure as on any other.
                            error, replay = replay, None
                            raise error
                        return await self._attempt(once, attempt.retry_state.attempt_number)
                    except RetryableServerError as error:
                        failures.add(error)
                        raise
        except ServerError:
            self.stats.failures += 1
            raise

    async def _attempt(self, once: Callable[[_Endpoint], Awaitable[Any]], number: int) -> Any:
        endpoint = self._pick_endpoint()
        endpoint.waiting += 1
        try:
            await endpoint.slots.acquire()
        finally:
            endpoint.waiting -= 1
        endpoint.in_flight += 1
        try:
            result = await once(endpoint)
        except RetryableServerError:
            endpoint.unhealthy_until = time.monotonic() + _UNHEALTHY_COOLDOWN_S
            raise
        finally:
            endpoint.in_flight -= 1
            endpoint.slots.release()
        if isinstance(result, Completion):
            result.attempts = number
        return result

    def _pick_endpoint(self) -> _Endpoint:
        endpoints = self._endpoints.values()
        if len(endpoints) == 1:
            return next(iter(endpoints))
        now = time.monotonic()
        healthy = [e for e in endpoints if e.unhealthy_until <= now] or list(endpoints)
        return min(healthy, key=lambda e: e.load)

    async def _backoff(self, seconds: float, error: RetryableServerError | None) -> None:
        """Sleep `seconds` before a retry. After an error a restart explains, poll the endpoint's
        `/health` meanwhile, and end the sleep as soon as it answers again after being down."""
        endpoint = self._endpoints.get(error.server) if error is not None and error.unavailable else None
        wake = time.monotonic() + seconds
        seen_down = False
        while (left := wake - time.monotonic()) > 0:
            if endpoint is None or left <= self.limits.health_poll_s:
                await asyncio.sleep(left)
                return
            await asyncio.sleep(self.limits.health_poll_s)
            up = await self._probe(endpoint)
            if up and seen_down:
                return
            seen_down = seen_down or not up

    async def _probe(self, endpoint: _Endpoint) -> bool:
        """Whether `endpoint` answers `GET /health`; all requests waiting on it share one probe
        per `health_poll_s`."""
        async with endpoint.probing:
            if time.monotonic() - endpoint.probed_at >= self.limits.health_poll_s:
                up = await self._healthy(endpoint)
                if up and endpoint.down:
                    # Back from a restart: send it requests again at once.
                    endpoint.unhealthy_until = 0.0
                    log.info("endpoint_up", model=self.model, endpoint=endpoint.url)
                elif not up:
                    endpoint.unhealthy_until = time.monotonic() + _UNHEALTHY_COOLDOWN_S
                endpoint.down, endpoint.probed_at = not up, time.monotonic()
            return not endpoint.down

    async def _healthy(self, endpoint: _Endpoint) -> bool:
        self.stats.health_probes += 1
        try:
            async with self.session.get(endpoint.url + "/health", timeout=self._health_timeout) as response:
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False

    async def _post(
        self,
        endpoint: _Endpoint,
        path: str,
        body: dict[str, Any],
        read: Callable[[_Endpoint, aiohttp.ClientResponse], Awaitable[Any]],
        *,
        stream: bool,
    ) -> Any:
        """POST `body` to `endpoint` and `read` the answer; errors become `ServerError`s. A stream
        is bounded by the stall timeout between chunks, a whole answer by the request timeout."""
        timeout = self._stream_timeout if stream else self._whole_timeout
        self.stats.requests += 1
        try:
            async with self.session.post(endpoint.url + path, json=body, timeout=timeout) as response:
                if response.status >= 400:
                    raise await _status_error(endpoint, response)
                try:
                    return await read(endpoint, response)
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

    def _account(
        self,
        endpoint: _Endpoint,
        choices: list[Choice],
        usage: dict[str, Any],
        started: float,
        first_token_at: float | None,
    ) -> Completion:
        completion = Completion(
            choices=choices,
            model=self.model,
            endpoint=endpoint.url,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            latency_s=time.monotonic() - started,
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
    if status == 429 or status >= 500:
        return RetryableServerError(endpoint.url, status, message, unavailable=status in _UNAVAILABLE_STATUSES)
    return ServerError(endpoint.url, status, message)


# What a proxy answers while the server behind it restarts, and vLLM while it is not ready.
_UNAVAILABLE_STATUSES = (502, 503, 504)


async def _read_whole_completion(
    endpoint: _Endpoint, response: aiohttp.ClientResponse
) -> tuple[list[Choice], dict[str, Any], None]:
    payload = await _read_json(endpoint, response)
    choices = [_choice_from_payload(c) for c in _sorted_choices(endpoint, payload)]
    return choices, payload.get("usage") or {}, None


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
    for top in logprobs.get("top_logprobs") or []:
        choice.top_logprobs.append(dict(top or {}))


async def _read_stream_completion(
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
