"""The sim's simulated GPU (`benchmarks.sim_gpu`): iteration costs by batch, context and prefill,
continuous batching, the prefix cache, pooling requests, and clients that leave. Times are exact:
the engine runs on a clock the test moves (tests/clocks.py)."""

import asyncio

import pytest

from benchmarks.sim_behaviour import PRM_STEP_TAG, Latency, SimConfig, plan_pooling
from benchmarks.sim_gpu import BatchEngine, GpuCost, LagFreeClock, PrefixCache
from benchmarks.sim_server import SimServer
from engine.errors import UsageError
from tests.clocks import ManualClock, settled

# 10 ms an iteration of one sequence, 16 ms of four (2 ms a sequence in between and beyond)
COST = GpuCost(decode_ms=((1, 10.0), (4, 16.0)), prefill_ms_per_token=0.01, reference_context=100)


def words(prefix: str, count: int) -> list[str]:
    return [f"{prefix}{i}" for i in range(count)]


def test_decode_cost_is_interpolated_by_batch_and_extrapolated_beyond():
    assert [COST.batch_ms(n) for n in (1, 2, 4, 8)] == pytest.approx([10.0, 12.0, 16.0, 24.0])
    single = GpuCost(decode_ms=((1, 7.0),), prefill_ms_per_token=0.0)
    assert single.batch_ms(1) == single.batch_ms(16) == 7.0


def test_an_iteration_charges_context_beyond_the_reference_and_uncached_prefill():
    cost = GpuCost(decode_ms=((1, 10.0), (4, 16.0)), prefill_ms_per_token=0.01, kv_ms_per_token=0.001)
    # two sequences of 3,000 tokens against a 2,000-token reference: 2,000 tokens more
    assert cost.iteration_ms(2, 6000) == pytest.approx(12.0 + 2.0)
    # a 600-token prompt of which 100 were cached, and a whole 100-token one
    assert cost.iteration_ms(2, 4000, [(100, 600), (0, 100)]) == pytest.approx(12.0 + 6.0)
    assert cost.scaled(4).iteration_ms(2, 6000, [(0, 500)]) == pytest.approx((12.0 + 2.0 + 5.0) / 4)


def test_attention_makes_a_token_cost_more_the_later_it_comes():
    cost = GpuCost(decode_ms=((1, 0.0),), prefill_ms_per_token=0.01, prefill_ms_per_token_squared=1e-6)
    assert cost.prefill_ms(0, 1000) == pytest.approx(10.0 + 1.0)
    # the same 1,000 tokens after 2,000 cached ones: (3000^2 - 2000^2) * 1e-6
    assert cost.prefill_ms(2000, 3000) == pytest.approx(10.0 + 5.0)
    assert cost.scaled(2).prefill_ms(2000, 3000) == pytest.approx(7.5)


@pytest.mark.parametrize(
    "decode_ms, error",
    [((), "increasing batch sizes"), (((4, 1.0), (1, 2.0)), "increasing batch sizes"), (((1, -1.0),), "negative")],
)
def test_impossible_costs_are_refused(decode_ms, error):
    with pytest.raises(UsageError, match=error):
        GpuCost(decode_ms=decode_ms, prefill_ms_per_token=0.0)


def test_the_prefix_cache_serves_whole_leading_blocks_and_never_the_last_token():
    cache = PrefixCache(block_tokens=16, capacity_tokens=1000)
    prompt = words("w", 40)
    assert cache.lookup(prompt) == 0
    cache.insert(prompt)
    assert cache.lookup(prompt) == 32  # two whole blocks of 16; the last 8 tokens were no block
    assert cache.lookup(prompt[:32]) == 31  # at least the last token is computed
    assert cache.lookup(prompt[:20] + words("x", 20)) == 16
    assert cache.lookup(["other", *prompt[1:]]) == 0  # a block is keyed by everything before it


def test_the_prefix_cache_drops_the_least_recently_used_blocks_beyond_its_capacity():
    cache = PrefixCache(block_tokens=16, capacity_tokens=64)
    first, second, third = words("a", 32), words("b", 32), words("c", 32)
    cache.insert(first)
    cache.insert(second)
    assert cache.lookup(first + ["x"]) == 32  # touched: now the most recently used
    cache.insert(third)
    assert [cache.lookup(p + ["x"]) for p in (first, second, third)] == [32, 0, 32]


async def run_engine(clock: ManualClock, engine: BatchEngine, sequences) -> None:
    """Move the clock from iteration to iteration until every sequence has finished."""
    while not all(s.finished_at is not None for s in sequences):
        await settled(lambda: clock.sleeping == 1, "the engine in an iteration")
        clock.advance_to_next()
        await asyncio.sleep(0)


async def test_requests_that_arrive_together_decode_as_one_batch():
    clock = ManualClock()
    engine = BatchEngine(COST, clock)
    sequences = [engine.submit(words(f"p{i}-", 100), words("t", 3)) for i in range(4)]
    await run_engine(clock, engine, sequences)
    await engine.close()
    # the first iteration prefills the four prompts (400 tokens) and gives each its first token
    assert clock.deadlines == pytest.approx([0.016 + 0.004, 0.036, 0.052])
    assert [s.finished_at for s in sequences] == pytest.approx([0.052] * 4)
    assert (engine.stats.iterations, engine.stats.peak_sequences, engine.stats.prompt_tokens) == (3, 4, 400)


async def test_a_request_joins_the_running_batch_at_the_next_iteration():
    clock = ManualClock()
    engine = BatchEngine(COST, clock)
    first = engine.submit(words("a", 100), words("t", 3))
    await settled(lambda: clock.sleeping == 1, "the first iteration")
    second = engine.submit(words("b", 50), words("u", 1))
    await run_engine(clock, engine, [first, second])
    await engine.close()
    # 10 + 1 ms alone; then both: 12 ms and the second's 50-token prefill; then the first alone
    assert clock.deadlines == pytest.approx([0.011, 0.011 + 0.0125, 0.011 + 0.0125 + 0.010])
    assert (second.finished_at, first.finished_at) == pytest.approx((0.0235, 0.0335))


async def test_a_prompt_the_cache_holds_is_prefilled_only_past_its_cached_blocks():
    clock = ManualClock()
    engine = BatchEngine(COST, clock)
    prompt = words("p", 200)
    first = engine.submit(prompt, words("t", 1))
    await run_engine(clock, engine, [first])
    # the track's next request: its prompt and reply so far, and more
    again = engine.submit(prompt + words("t", 1) + words("q", 40), words("t", 1))
    await run_engine(clock, engine, [again])
    await engine.close()
    assert again.cached == 192  # 12 whole blocks of 16 of the 201 tokens cached
    assert clock.deadlines == pytest.approx([0.012, 0.012 + 0.010 + 0.01 * (241 - 192) / 1000])
    assert (engine.stats.prompt_tokens, engine.stats.cached_tokens) == (200 + 241, 192)


async def test_the_batch_is_bounded_by_its_sequences_and_their_kv_cache():
    cost = GpuCost(decode_ms=((1, 10.0), (4, 16.0)), prefill_ms_per_token=0.0, max_sequences=3, kv_tokens=250)
    clock = ManualClock()
    engine = BatchEngine(cost, clock)
    # each context is 100 tokens and grows: two fit in 250 tokens, the third waits for a place
    sequences = [engine.submit(words(f"p{i}-", 100), words("t", 2)) for i in range(4)]
    await run_engine(clock, engine, sequences)
    await engine.close()
    assert engine.stats.peak_sequences == 2
    assert [s.finished_at for s in sequences] == pytest.approx([0.024, 0.024, 0.048, 0.048])


def gpu_config(**overrides) -> SimConfig:
    fields = {"models": {"m": Latency(), "prm": Latency()}, "gpu": {"m": COST, "prm": COST}, "step_tokens": 4}
    return SimConfig(**{**fields, **overrides})


async def answered(session, url: str, body: dict, clock: ManualClock) -> dict:
    """The JSON answer to `body`, moving the clock from iteration to iteration until it comes."""
    request = asyncio.create_task(session.post(url, json=body))
    while not request.done():
        await settled(lambda: clock.sleeping == 1 or request.done(), "an iteration or the answer")
        if clock.sleeping:
            clock.advance_to_next()
    async with request.result() as response:
        return await response.json()


async def test_completions_report_cached_prompt_tokens_as_vllm_does(session):
    clock = ManualClock()
    prompt = " ".join(words("w", 40))
    body = {"model": "m", "prompt": prompt, "max_tokens": 4, "stop": ["\n\n"]}
    async with SimServer(gpu_config(), clock) as sim:
        usages = [await answered(session, sim.url + "/v1/completions", body, clock) for _ in range(2)]
    usages = [u["usage"] for u in usages]
    assert [u["prompt_tokens"] for u in usages] == [40, 40]
    assert [u["prompt_tokens_details"]["cached_tokens"] for u in usages] == [0, 32]
    assert [u["completion_tokens"] for u in usages] == [4, 4]


async def test_a_pooling_request_answers_a_row_per_step_tag_after_one_prefill(session):
    clock = ManualClock()
    text = "problem " + " ".join(f"step {i} {PRM_STEP_TAG}" for i in range(3))
    async with SimServer(gpu_config(), clock) as sim:
        payload = await answered(session, sim.url + "/pooling", {"model": "prm", "input": text}, clock)
        stats = sim.stats
    words_in = len(text.split())
    assert clock.deadlines == pytest.approx([0.010 + 0.01 * words_in / 1000])
    assert payload["data"][0]["data"] == plan_pooling(text, gpu_config())
    assert len(payload["data"][0]["data"]) == 3 and payload["usage"]["prompt_tokens"] == words_in
    assert stats.requests["pool"] == 1 and sim.engines["prm"].stats.iterations == 1


async def test_a_model_without_a_prefix_cache_prefills_every_prompt_whole(session):
    # a PRM with step pooling, as vLLM serves it: a trace scored twice costs two whole prefills
    prm = GpuCost(decode_ms=((1, 0.0),), prefill_ms_per_token=0.01, prefix_cache=False)
    clock = ManualClock()
    text = " ".join(words("w", 200)) + f" {PRM_STEP_TAG}"
    async with SimServer(gpu_config(gpu={"m": COST, "prm": prm}), clock) as sim:
        for _ in range(2):
            await answered(session, sim.url + "/pooling", {"model": "prm", "input": text}, clock)
        engine = sim.engines["prm"]
    assert clock.deadlines == pytest.approx([0.00201, 0.00402])
    assert (engine.stats.prompt_tokens, engine.stats.cached_tokens) == (402, 0)


def test_pooling_rows_say_good_at_the_configured_rate():
    config = gpu_config(accept_rate=0.7, prm_threshold=0.6)
    rows = [row for i in range(500) for row in plan_pooling(f"q{i} a {PRM_STEP_TAG} b {PRM_STEP_TAG}", config)]
    good = sum(p_good >= 0.6 for _, p_good in rows) / len(rows)
    assert 0.65 < good < 0.75 and all(p_bad + p_good == pytest.approx(1.0) for p_bad, p_good in rows)


async def test_a_client_that_leaves_stops_its_sequence_at_the_next_iteration(session):
    clock = ManualClock()
    body = {"model": "m", "prompt": "a b c", "max_tokens": 100, "stop": ["\n\n"]}
    async with SimServer(gpu_config(step_tokens=100), clock) as sim:
        request = asyncio.create_task(session.post(sim.url + "/v1/completions", json=body))
        for _ in range(5):
            await settled(lambda: clock.sleeping == 1, "the next iteration")
            clock.advance_to_next()
        await settled(lambda: clock.sleeping == 1, "the sixth iteration")
        request.cancel()
        await settled(lambda: sim.stats.disconnects == 1, "the sim sees the client go")
        clock.advance_to_next()
        await settled(lambda: clock.sleeping == 0, "the engine idle")
        engine = sim.engines["m"]
    assert sim.stats.aborted_tokens == 5 and sim.stats.served == 0
    assert engine.stats.iterations == 6 and engine._running == []


def test_gpu_costs_travel_to_the_server_process_and_name_served_models():
    config = gpu_config()
    assert SimConfig.from_json(config.to_json()) == config
    with pytest.raises(UsageError, match="does not serve"):
        SimConfig(models={"m": Latency()}, gpu={"big": COST})


async def test_a_lag_free_clock_takes_a_late_wake_up_off_its_time_from_then_on():
    inner = ManualClock()
    clock = LagFreeClock(inner)
    first = asyncio.create_task(clock.sleep_until(1.0))
    await settled(lambda: inner.sleeping == 1, "the first sleep")
    inner.advance_to(1.3)  # woken 0.3 s late
    await first
    assert clock.now() == pytest.approx(1.0)
    second = asyncio.create_task(clock.sleep_until(2.0))
    await settled(lambda: inner.sleeping == 1, "the second sleep")
    assert inner.next_deadline == pytest.approx(2.3)
    inner.advance_to(2.3)  # on time
    await second
    assert clock.now() == pytest.approx(2.0) and clock.forgiven == pytest.approx(0.3)
