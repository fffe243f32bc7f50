"""The endpoints of one model and what keeps requests to them going: the choice of endpoint
(`engine.serving.routing`: a track's requests stay on its replica), the bound on requests in
flight per endpoint, retries with backoff and jitter, and the ride-out of a server restart
(`/health` polled while a retry waits, the wait ended as soon as it answers again).
`engine.serving.client` sends the requests through an `EndpointPool`.
"""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import structlog
from tenacity import AsyncRetrying, RetryCallState, retry_if_exception_type, wait_random_exponential

from engine.clock import WALL_CLOCK, Clock
from engine.errors import RetryableServerError, ServerError, UsageError
from engine.serving.routing import (
    AFFINE,
    DEFAULT_AFFINITY_BOUND,
    ROUTINGS,
    UNBOUNDED,
    ReplicaLoads,
    RouteKey,
    choose_replica,
)

log = structlog.get_logger(__name__)


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

    With several endpoints (replicas), `routing` picks one per request (`engine.serving.routing`):
    `affine` keeps a track on the replica that took its previous request unless that one's load
    is more than `affinity_bound` requests above the least loaded's (`"none"`: no bound);
    `least_loaded` sends every request to the least loaded.
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
    routing: str = AFFINE
    affinity_bound: int | str = DEFAULT_AFFINITY_BOUND

    def __post_init__(self) -> None:
        if self.routing not in ROUTINGS:
            raise UsageError(f"--routing must be one of {', '.join(ROUTINGS)}, not {self.routing!r}")
        bound = self.affinity_bound
        if bound != UNBOUNDED and not (isinstance(bound, int) and bound >= 0):
            raise UsageError(f"--affinity_bound takes a number of requests, 0 or more, or {UNBOUNDED}; not {bound!r}")


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
class Endpoint:
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
    clock: Clock
    started: float
    unexplained: int = 0
    last: RetryableServerError | None = None

    def add(self, error: RetryableServerError) -> None:
        self.last = error
        self.unexplained += not error.unavailable

    def exhausted(self, state: RetryCallState) -> bool:
        # As tenacity's stop_before_delay: no backoff sleep or new attempt may start past the deadline.
        past_deadline = self.clock.now() - self.started + state.upcoming_sleep >= self.limits.retry_deadline_s
        return past_deadline or self.unexplained >= self.limits.max_attempts


class EndpointPool:
    """The endpoints serving one model (`model`: its served name, for logs); `attempt` runs a
    request against the endpoint routing picks, with retries. `stats` counts over its life. Its
    deadlines, backoffs, health polls and load readings read and wait on `clock` (tests pass one
    they move); `headers` go with its health and load requests (the model's key)."""

    def __init__(
        self,
        session: aiohttp.ClientSession,
        model: str,
        urls: list[str],
        limits: ClientLimits,
        clock: Clock = WALL_CLOCK,
        *,
        headers: Mapping[str, str] | None = None,
    ):
        if not urls:
            raise ValueError("ModelClient needs at least one endpoint URL")
        self.session = session
        self.model = model
        self.limits = limits
        self.clock = clock
        self.stats = ClientStats()
        self._endpoints = {
            url.rstrip("/"): Endpoint(url.rstrip("/"), asyncio.Semaphore(limits.max_in_flight_per_endpoint))
            for url in urls
        }
        self._health_timeout = aiohttp.ClientTimeout(total=_HEALTH_TIMEOUT_S)
        self._headers = dict(headers or {})
        self.loads = ReplicaLoads(session, clock, self._headers)
        # Track -> the replica that took its previous request; a finished track's entry goes with it.
        self._affinity: weakref.WeakKeyDictionary[RouteKey, Endpoint] = weakref.WeakKeyDictionary()
        self._wait = wait_random_exponential(multiplier=limits.backoff_initial_s, max=limits.backoff_max_s)

    @property
    def urls(self) -> list[str]:
        return list(self._endpoints)

    def in_flight(self) -> dict[str, int]:
        """Requests in flight per endpoint URL."""
        return {e.url: e.in_flight for e in self._endpoints.values()}

    async def attempt(self, once: Callable[[Endpoint, int], Awaitable[Any]], route: RouteKey | None = None) -> Any:
        """Run `once` on an endpoint (for the track `route` names, if any), with retries."""
        started = self.clock.now()
        try:
            # Nearly every request succeeds at once; tenacity's machinery costs about 90 us a
            # request (benchmarks/README.md), so it is set up only when a retry is needed.
            return await self._attempt(once, 1, route)
        except RetryableServerError as error:
            return await self._retry(once, _Failures(self.limits, self.clock, started), error, route)
        except ServerError:
            self.stats.failures += 1
            raise

    async def _retry(
        self,
        once: Callable[[Endpoint, int], Awaitable[Any]],
        failures: _Failures,
        first: RetryableServerError,
        route: RouteKey | None,
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
                        return await self._attempt(once, attempt.retry_state.attempt_number, route)
                    except RetryableServerError as error:
                        failures.add(error)
                        raise
        except ServerError:
            self.stats.failures += 1
            raise

    async def _attempt(
        self, once: Callable[[Endpoint, int], Awaitable[Any]], number: int, route: RouteKey | None
    ) -> Any:
        endpoint = await self._pick_endpoint(route)
        endpoint.waiting += 1
        try:
            await endpoint.slots.acquire()
        finally:
            endpoint.waiting -= 1
        endpoint.in_flight += 1
        try:
            result = await once(endpoint, number)
        except RetryableServerError:
            endpoint.unhealthy_until = self.clock.now() + _UNHEALTHY_COOLDOWN_S
            raise
        finally:
            endpoint.in_flight -= 1
            endpoint.slots.release()
        return result

    async def _pick_endpoint(self, route: RouteKey | None) -> Endpoint:
        """The endpoint routing picks for a request of the track `route` names (None: no track);
        under affine routing the track's next request follows it there."""
        endpoints = list(self._endpoints.values())
        if len(endpoints) == 1:
            return endpoints[0]
        now = self.clock.now()
        healthy = {e.url for e in endpoints if e.unhealthy_until <= now}
        # A replica passed over as unhealthy is not asked its load either (it may not answer).
        await self.loads.refresh([e for e in endpoints if e.url in healthy] or endpoints)
        affine = route is not None and self.limits.routing == AFFINE
        previous = self._affinity.get(route) if affine else None
        loads = {e.url: self.loads.load(e) for e in endpoints}
        endpoint = self._endpoints[
            choose_replica(loads, healthy, previous.url if previous else None, self.limits.affinity_bound)
        ]
        if affine:
            self._affinity[route] = endpoint
        return endpoint

    async def _backoff(self, seconds: float, error: RetryableServerError | None) -> None:
        """Sleep `seconds` before a retry. After an error a restart explains, poll the endpoint's
        `/health` meanwhile, and end the sleep as soon as it answers again after being down."""
        endpoint = self._endpoints.get(error.server) if error is not None and error.unavailable else None
        wake = self.clock.now() + seconds
        seen_down = False
        while (left := wake - self.clock.now()) > 0:
            if endpoint is None or left <= self.limits.health_poll_s:
                await self.clock.sleep(left)
                return
            await self.clock.sleep(self.limits.health_poll_s)
            up = await self._probe(endpoint)
            if up and seen_down:
                return
            seen_down = seen_down or not up

    async def _probe(self, endpoint: Endpoint) -> bool:
        """Whether `endpoint` answers `GET /health`; all requests waiting on it share one probe
        per `health_poll_s`."""
        async with endpoint.probing:
            if self.clock.now() - endpoint.probed_at >= self.limits.health_poll_s:
                up = await self._healthy(endpoint)
                if up and endpoint.down:
                    # Back from a restart: send it requests again at once.
                    endpoint.unhealthy_until = 0.0
                    log.info("endpoint_up", model=self.model, endpoint=endpoint.url)
                elif not up:
                    endpoint.unhealthy_until = self.clock.now() + _UNHEALTHY_COOLDOWN_S
                endpoint.down, endpoint.probed_at = not up, self.clock.now()
            return not endpoint.down

    async def _healthy(self, endpoint: Endpoint) -> bool:
        self.stats.health_probes += 1
        try:
            async with self.session.get(
                endpoint.url + "/health", headers=self._headers, timeout=self._health_timeout
            ) as response:
                return response.status == 200
        except (TimeoutError, aiohttp.ClientError):
            return False
