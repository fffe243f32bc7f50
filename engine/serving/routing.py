"""Which replica of a model a request goes to.

Step-wise reasoning re-sends a track's whole reasoning so far with every step; the replica that
served the track's previous request holds that prefix in its cache, any other one prefills it again.
So with `affine` routing a track's requests to one model go to the replica that took its previous
one, unless that replica is unhealthy or its load is more than `affinity_bound` requests above the
least loaded replica's; a track's first request, and every request under `least_loaded` routing,
goes to the least loaded (vLLM's production-stack router, Ray Serve's prefix-aware router and llm-d
route by prefix for the same reason). `choose_replica` is that decision, a pure function.

Load is what the replicas report (`ReplicaLoads`: vLLM's `GET /load`, the requests its API server
has in hand when started with `--enable-server-load-tracking`), so the shards of a job array and
`spectra api` see each other's requests, plus this process's own requests since the reading.
A server that reports nothing (no `/load`, or the flag off: it then reads 0) leaves this
process's own requests in flight as its load.
"""

from __future__ import annotations

import asyncio
from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

import aiohttp
import structlog

from engine.clock import Clock

log = structlog.get_logger(__name__)

AFFINE, LEAST_LOADED = "affine", "least_loaded"
ROUTINGS = (AFFINE, LEAST_LOADED)
# `--affinity_bound none`: a track stays on its replica whatever the load, unless it is unhealthy.
UNBOUNDED = "none"
# The best of {1, 2, 4, 8, none} in benchmarks/routing.py (benchmarks/README.md).
DEFAULT_AFFINITY_BOUND = 4
# How old a reading of the replicas' load may be before a request reads them again.
LOAD_POLL_S = 0.5
# A request waits for the reading it starts: a replica that takes longer to say its load is read as
# saying nothing this time.
_LOAD_TIMEOUT_S = 1.0


class RouteKey:
    """Names the requests of one track to its models (`Model.for_track` makes one per handle).
    Compared by identity; held weakly by the pools, so a finished track's entry goes with it."""

    __slots__ = ("__weakref__",)


def choose_replica(
    loads: Mapping[str, int], healthy: Collection[str], previous: str | None, bound: int | str | None
) -> str:
    """The replica (a URL of `loads`, in the pool's order) a request goes to: `previous` (the one
    that took the track's previous request; None for a first request or `least_loaded` routing)
    when it is healthy and its load is at most `bound` above the least loaded healthy replica's
    (`UNBOUNDED`: any load), else the least loaded healthy one, the first of equals. With no
    healthy replica, every replica is a candidate."""
    candidates = [url for url in loads if url in healthy] or list(loads)
    least = min(candidates, key=loads.__getitem__)
    if previous not in candidates:
        return least
    if bound == UNBOUNDED or loads[previous] - loads[least] <= int(bound):
        return previous
    return least


class Loaded(Protocol):
    """An endpoint as routing sees it: its URL and this process's requests to it (in flight or waiting)."""

    url: str

    @property
    def load(self) -> int: ...


class ReplicaLoads:
    """The load of each replica: the last reading of its `GET /load` (taken at most every
    `LOAD_POLL_S` on `clock`) plus this process's requests to it since then, never less than
    this process's own requests in flight; `headers` go with each reading (the model's key)."""

    def __init__(self, session: aiohttp.ClientSession, clock: Clock, headers: Mapping[str, str]):
        self.session = session
        self.clock = clock
        self.headers = dict(headers)
        self.readings = 0
        self._reported: dict[str, int | None] = {}
        self._own_then: dict[str, int] = {}
        self._read_at = float("-inf")
        self._reading = False
        self._timeout = aiohttp.ClientTimeout(total=_LOAD_TIMEOUT_S)

    def load(self, endpoint: Loaded) -> int:
        """`endpoint`'s load now, as the last reading and this process's requests since tell it."""
        own = endpoint.load
        reported = self._reported.get(endpoint.url)
        if reported is None:
            return own
        return max(own, reported + own - self._own_then[endpoint.url])

    async def refresh(self, endpoints: Sequence[Loaded]) -> None:
        """Read every replica's load again when the last reading is older than `LOAD_POLL_S`; a
        request that finds a reading under way routes on the one before."""
        if self._reading or self.clock.now() - self._read_at < LOAD_POLL_S:
            return
        self._reading = True
        try:
            await asyncio.gather(*(self._read(endpoint) for endpoint in endpoints))
            self._read_at = self.clock.now()
            self.readings += 1
        finally:
            self._reading = False

    async def _read(self, endpoint: Loaded) -> None:
        """Read `endpoint`'s load, and this process's requests to it as the answer comes: what
        the server counted when it answered (requests sent while the reading was under way
        included)."""
        self._reported[endpoint.url] = await self._reported_load(endpoint.url)
        self._own_then[endpoint.url] = endpoint.load

    async def _reported_load(self, url: str) -> int | None:
        try:
            async with self.session.get(url + "/load", headers=self.headers, timeout=self._timeout) as response:
                if response.status != 200:
                    return None
                body = await response.json(content_type=None)
        except (aiohttp.ClientError, TimeoutError, ValueError):
            return None
        value = body.get("server_load") if isinstance(body, dict) else None
        if not isinstance(value, int) or value < 0:
            log.debug("replica_load_unreadable", endpoint=url)
            return None
        return value
