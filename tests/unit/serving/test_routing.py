"""Routing among replicas: the decision by hand-computed cases, the load the replicas report, and a
track's requests through the client against two scripted replicas."""

from dataclasses import dataclass

import aiohttp
import pytest

from engine.serving.client import ModelClient
from engine.serving.endpoints import ClientLimits
from engine.serving.routing import LOAD_POLL_S, UNBOUNDED, ReplicaLoads, RouteKey, choose_replica
from tests.clocks import ManualClock
from tests.fake_openai import FakeOpenAIServer, Reply

A, B, C = "http://a", "http://b", "http://c"
EVERY = {A, B, C}


@pytest.mark.parametrize(
    ("loads", "healthy", "previous", "bound", "chosen"),
    [
        # a track's first request: the least loaded, the first of equals
        ({A: 3, B: 1, C: 2}, EVERY, None, 4, B),
        ({A: 2, B: 2, C: 2}, EVERY, None, 4, A),
        # within the bound: the track's replica, though another is less loaded (5 - 2 = 3 <= 4)
        ({A: 5, B: 2}, EVERY, A, 4, A),
        # exactly the bound above the least loaded stays (6 - 2 = 4); one more leaves (7 - 2 = 5 > 4)
        ({A: 6, B: 2}, EVERY, A, 4, A),
        ({A: 7, B: 2}, EVERY, A, 4, B),
        # bound 0: stays only while no replica is less loaded
        ({A: 2, B: 2}, EVERY, B, 0, B),
        ({A: 1, B: 2}, EVERY, B, 0, A),
        # no bound: stays whatever the load
        ({A: 100, B: 0}, EVERY, A, UNBOUNDED, A),
        # an unhealthy replica is left, for the least loaded healthy one (A is less loaded but down too)
        ({A: 0, B: 3, C: 1}, {B, C}, A, 4, C),
        ({A: 0, B: 5, C: 1}, {B, C}, B, UNBOUNDED, B),
        ({A: 0, B: 9, C: 1}, {A, C}, B, UNBOUNDED, A),
        # none healthy: every replica is a candidate (the retry has to go somewhere)
        ({A: 4, B: 1}, set(), A, 4, A),
        ({A: 6, B: 1}, set(), A, 4, B),
    ],
)
def test_choose_replica_by_hand_computed_cases(loads, healthy, previous, bound, chosen):
    assert choose_replica(loads, healthy, previous, bound) == chosen


@dataclass
class Held:
    """An endpoint as routing sees it: a URL and this process's requests to it."""

    url: str
    load: int = 0


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


async def test_a_replicas_load_is_its_reading_plus_this_process_requests_since(session):
    async with FakeOpenAIServer() as server:
        server.other_load = 5
        loads = ReplicaLoads(session, ManualClock(), {})
        held = Held(server.url, load=2)
        await loads.refresh([held])
        assert loads.load(held) == 5  # read while 2 of ours were in hand: 5 in all there
        held.load = 4
        assert loads.load(held) == 7  # 5 + (4 - 2): two more of ours since
        held.load = 0
        assert loads.load(held) == 3  # ours finished: the other clients' 3 remain
        held.load = 9
        server.other_load = 0  # not read again yet: the reading stands
        assert loads.load(held) == 12


async def test_a_replica_that_reads_zero_or_nothing_counts_this_process_requests_alone(session):
    async with FakeOpenAIServer() as server:
        loads = ReplicaLoads(session, ManualClock(), {})
        tracked_off, unreadable = Held(server.url, load=4), Held("http://127.0.0.1:9", load=3)
        await loads.refresh([tracked_off, unreadable])
        # vLLM without --enable-server-load-tracking reads 0 whatever it holds: never below our own
        tracked_off.load = 6
        assert loads.load(tracked_off) == 6
        assert loads.load(unreadable) == 3


async def test_loads_are_read_at_most_once_a_poll_interval(session):
    clock = ManualClock()
    async with FakeOpenAIServer() as server:
        loads = ReplicaLoads(session, clock, {})
        held = Held(server.url)
        await loads.refresh([held])
        await loads.refresh([held])
        assert (loads.readings, server.load_reads) == (1, 1)
        clock.time += LOAD_POLL_S
        server.other_load = 2
        await loads.refresh([held])
        assert (loads.readings, server.load_reads) == (2, 2) and loads.load(held) == 2


def two_replica_client(session, first, second, clock, **limits):
    return ModelClient(session, "fake-model", [first.url, second.url], ClientLimits(**limits), clock)


def answering(text="ok"):
    return lambda body: Reply(text)


async def test_a_tracks_requests_stay_on_its_replica_and_a_new_track_goes_to_the_least_loaded(session):
    clock = ManualClock()
    async with FakeOpenAIServer(answering()) as first, FakeOpenAIServer(answering()) as second:
        client = two_replica_client(session, first, second, clock, affinity_bound=4)
        track = RouteKey()
        served = [(await client.complete("p", max_tokens=1, route=track)).endpoint for _ in range(3)]
        assert served == [first.url] * 3  # equal loads: the first of equals, then the track stays
        first.other_load = 3  # within the bound: the track stays
        clock.time += LOAD_POLL_S
        assert (await client.complete("p", max_tokens=1, route=track)).endpoint == first.url
        # a new track's first request goes to the least loaded replica
        assert (await client.complete("p", max_tokens=1, route=RouteKey())).endpoint == second.url


async def test_a_track_leaves_a_replica_loaded_more_than_the_bound_above_the_least_and_stays_where_it_went(session):
    clock = ManualClock()
    async with FakeOpenAIServer(answering()) as first, FakeOpenAIServer(answering()) as second:
        client = two_replica_client(session, first, second, clock, affinity_bound=2)
        track = RouteKey()
        assert (await client.complete("p", max_tokens=1, route=track)).endpoint == first.url
        first.other_load = 3  # 3 - 0 > 2
        clock.time += LOAD_POLL_S
        assert (await client.complete("p", max_tokens=1, route=track)).endpoint == second.url
        first.other_load = 0  # the track's prefix is on the second replica now
        clock.time += LOAD_POLL_S
        assert (await client.complete("p", max_tokens=1, route=track)).endpoint == second.url


async def test_without_a_bound_a_track_stays_on_a_loaded_replica(session):
    clock = ManualClock()
    async with FakeOpenAIServer(answering()) as first, FakeOpenAIServer(answering()) as second:
        client = two_replica_client(session, first, second, clock, affinity_bound=UNBOUNDED)
        track = RouteKey()
        await client.complete("p", max_tokens=1, route=track)
        first.other_load = 50
        clock.time += LOAD_POLL_S
        assert (await client.complete("p", max_tokens=1, route=track)).endpoint == first.url


async def test_a_track_on_a_failing_replica_is_retried_on_the_other_and_stays_there(session):
    clock = ManualClock()
    failing = [Reply("ok"), Reply(status=500)]
    async with FakeOpenAIServer(failing) as first, FakeOpenAIServer(answering()) as second:
        client = two_replica_client(session, first, second, clock, backoff_initial_s=0)
        track = RouteKey()
        assert (await client.complete("p", max_tokens=1, route=track)).endpoint == first.url
        # the second request fails on the track's replica; the retry goes to the healthy one
        assert (await client.complete("p", max_tokens=1, route=track)).endpoint == second.url
        reads = (first.load_reads, second.load_reads)
        clock.time += LOAD_POLL_S  # still passed over: the unhealthy replica is not asked its load
        assert (await client.complete("p", max_tokens=1, route=track)).endpoint == second.url
        assert (first.load_reads, second.load_reads) == (reads[0], reads[1] + 1)
        clock.time += 60  # the first replica is healthy again, as loaded: the track stays where it went
        assert (await client.complete("p", max_tokens=1, route=track)).endpoint == second.url
        assert len(first.requests) == 2 and len(second.requests) == 3


async def test_least_loaded_routing_follows_the_load_not_the_track(session):
    clock = ManualClock()
    async with FakeOpenAIServer(answering()) as first, FakeOpenAIServer(answering()) as second:
        client = two_replica_client(session, first, second, clock, routing="least_loaded")
        track = RouteKey()
        assert (await client.complete("p", max_tokens=1, route=track)).endpoint == first.url
        first.other_load = 1
        clock.time += LOAD_POLL_S
        assert (await client.complete("p", max_tokens=1, route=track)).endpoint == second.url


async def test_one_endpoint_reads_no_load(session):
    async with FakeOpenAIServer(answering()) as server:
        client = ModelClient(session, "fake-model", [server.url])
        await client.complete("p", max_tokens=1, route=RouteKey())
    assert server.load_reads == 0
