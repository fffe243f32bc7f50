"""The only code that speaks HTTP: `/v1/completions`, `/tokenize` and `/health` on vLLM OpenAI servers
(`engine.responses` reads their answers).

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
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from engine.errors import RetryableServerError, ServerError
from engine.responses import Choice, encode_json, read_json, read_stream_completion, read_whole_completion, status_error

log = structlog.get_logger(__name__)

_JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass(frozen=True)
class ClientLimits:
    """Timeouts, retries and concurrency of one model's client.

    `request_timeout_s` bounds a whole request; `stall_timeout_s` bounds the silence between
    two chunks of a streamed answer (a stalled server). Retries stop once `retry_deadline_s`
    has passed since the first attempt, or after `max_attempts` failures that a server restart
    does not explain (HTTP 500, 429, timeouts, malformed answers); refused or broken connections
    and 502/503/504 do not count against it. While a retry waits out its backoff after such an
    error, the endpoint's `/health` is polled every `health_poll_s` (not its completions), and
    the wait ends as soon as the endpoint answers again.
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
        read = read_stream_completion if stream else read_whole_completion

        async def once(endpoint: _Endpoint) -> Completion:
            started = time.monotonic()
            choices, usage, first_token_at = await self._post(endpoint, "/v1/completions", body, read, stream=stream)
            return self._account(endpoint, choices, usage, started, first_token_at)

        return await self._with_retries(once)

    async def tokenize(self, prompt: str) -> list[int]:
        """Token ids of `prompt` under the served model's tokenizer (vLLM's `/tokenize`)."""
        body = {"model": self.model, "prompt": prompt, "add_special_tokens": False}

        async def once(endpoint: _Endpoint) -> list[int]:
            payload = await self._post(endpoint, "/tokenize", body, read_json, stream=False)
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
        read: Callable[[str, aiohttp.ClientResponse], Awaitable[Any]],
        *,
        stream: bool,
    ) -> Any:
        """POST `body` to `endpoint` and `read` the answer; errors become `ServerError`s. A stream
        is bounded by the stall timeout between chunks, a whole answer by the request timeout."""
        timeout = self._stream_timeout if stream else self._whole_timeout
        self.stats.requests += 1
        try:
            async with self.session.post(
                endpoint.url + path, data=encode_json(body), headers=_JSON_HEADERS, timeout=timeout
            ) as response:
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
