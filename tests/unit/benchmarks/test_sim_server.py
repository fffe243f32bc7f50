"""The sim server the benchmarks rest on: its answers end tracks as configured, its latency model
and capacity hold, and its faults fail requests as asked. The latency model is checked on a clock
the test moves (tests/clocks.py): exact times, whatever the machine's load."""

import asyncio

import pytest

from benchmarks.harness import sim_process, sim_stats
from benchmarks.sim_behaviour import FAULT_KINDS, Latency, SimConfig, answer_number, plan_reply
from benchmarks.sim_server import SimServer
from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.errors import RetryableServerError, UsageError
from engine.reasoning.judges.specreason import score_from_logprobs
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.track import track_messages
from engine.serving.client import ModelClient
from engine.serving.endpoints import ClientLimits
from tests.clocks import ManualClock, SteppingClock, settled
from tests.unit.conftest import run_one_track

PROBLEM = Problem(id="p1", problem="What is 6 * 7?", answer="42")
PROMPTS = load_prompt_set("default")
QUICK = Latency(request_s=0.0, token_s=0.001, capacity=16)
STEP = {"stop": ["\n\n", "</think>"], "max_tokens": 64}


def sim_config(**overrides) -> SimConfig:
    return SimConfig(**{"models": {"small": QUICK, "big": QUICK}, "steps_per_track": 3, "step_tokens": 4, **overrides})


async def run_spec_track(make_models, config: SimConfig):
    async with SimServer(config) as sim:
        models = make_models(big=sim, small=sim)
        record = await run_one_track(models, PROBLEM, PROMPTS, ReasoningConfig(seed=1), seed=1)
    head = models["big"].chat.render(list(track_messages(PROBLEM, PROMPTS, None)), "")
    return record, sim, head


@pytest.mark.parametrize(("accept_rate", "writer"), [(1.0, "small"), (0.0, "big")])
async def test_a_spec_track_thinks_the_configured_steps_then_answers(make_models, accept_rate, writer):
    record, sim, head = await run_spec_track(make_models, sim_config(accept_rate=accept_rate))
    # the last step states the answer, so thinking ends there and no answer is asked for (SpecReason)
    assert record.finish_reason == "answer" and record.error is None
    assert [s.writer for s in record.steps] == [writer] * 3
    assert [s.tokens for s in record.steps] == [4, 4, 4]
    assert record.answer == str(answer_number(head))
    rewrites = 3 if writer == "big" else 0
    assert sim.stats.requests == {"step": 3 + rewrites, "score": 3, "answer": 0, "rast": 0, "pool": 0, "tokenize": 0}
    assert sim.stats.served == 6 + rewrites and sim.stats.queued == 0


async def test_every_track_of_a_problem_makes_the_same_requests(make_models):
    first, _, _ = await run_spec_track(make_models, sim_config(accept_rate=0.5))
    second, _, _ = await run_spec_track(make_models, sim_config(accept_rate=0.5))
    assert [(s.writer, s.text, s.score) for s in first.steps] == [(s.writer, s.text, s.score) for s in second.steps]


def test_score_replies_accept_at_the_configured_rate_with_top_logprobs():
    config = sim_config(accept_rate=0.7)
    replies = [
        plan_reply("score", {"prompt": f"step {i}", "max_tokens": 1, "logprobs": 10}, config) for i in range(2000)
    ]
    scores = [score_from_logprobs(r.tokens[0], r.top_logprobs[0], "greedy").value for r in replies]
    accepted = sum(score >= config.accept_threshold for score in scores) / len(scores)
    assert 0.66 < accepted < 0.74
    assert all(
        len(r.top_logprobs[0]) == 10 and max(r.top_logprobs[0], key=r.top_logprobs[0].get) == r.tokens[0]
        for r in replies
    )


@pytest.mark.parametrize("threshold", [3, 7])
def test_the_digits_mean_decides_as_the_greedy_digit_does(threshold):
    # Lookahead Reasoning's judge reads the mean of the digits, SpecReason's the sampled digit
    config = sim_config(accept_rate=0.5, accept_threshold=threshold)
    for i in range(300):
        reply = plan_reply("score", {"prompt": f"step {i}", "max_tokens": 1, "logprobs": 10}, config)
        greedy = score_from_logprobs(reply.tokens[0], reply.top_logprobs[0], "greedy").value
        average = score_from_logprobs(reply.tokens[0], reply.top_logprobs[0], "average").value
        assert (greedy >= threshold) == (average >= threshold), f"digit {greedy}, mean {average:.2f}"


def test_a_step_is_cut_at_max_tokens():
    reply = plan_reply("step", {"prompt": "<think>\n", "model": "small", **STEP, "max_tokens": 3}, sim_config())
    assert (len(reply.tokens), reply.finish_reason, reply.stop_reason) == (3, "length", None)


async def start_requests(session, sim: SimServer, models: list[str], stream: bool = False) -> list[asyncio.Task]:
    """One request per entry of `models` (a model's name), all at the sim before this returns."""
    clients = {m: ModelClient(session, m, [sim.url]) for m in set(models)}
    tasks = [asyncio.create_task(clients[m].complete("<think>\n", stream=stream, **STEP)) for m in models]
    await settled(lambda: sim.stats.in_flight == len(models), "every request at the sim")
    return tasks


async def run_clock(clock: ManualClock, tasks: list[asyncio.Task], capacity: int) -> list:
    """Move `clock` from deadline to deadline until every request is answered, each time once the
    sim is quiet (as many requests parked on the clock as can hold decoding slots); the answers."""

    def quiet() -> bool:
        return clock.sleeping == min(capacity, sum(not t.done() for t in tasks))

    while not all(t.done() for t in tasks):
        await settled(quiet, "the sim quiet")
        if clock.sleeping:
            clock.advance_to_next()
    return [t.result() for t in tasks]


async def test_a_request_takes_request_time_plus_time_per_token(session):
    config = sim_config(models={"m": Latency(request_s=0.05, token_s=0.01, capacity=4)}, step_tokens=10)
    clock = ManualClock()
    async with SimServer(config, clock) as sim:
        (completion,) = await run_clock(clock, await start_requests(session, sim, ["m"], stream=True), 4)
    assert completion.completion_tokens == 10 and completion.stop_reason == "\n\n"
    # the first token at 0.05 + 0.01 s, then one every 0.01 s: the stream ends at 0.15 s
    assert clock.deadlines == pytest.approx([0.05 + 0.01 * k for k in range(1, 11)])
    assert clock.now() == pytest.approx(0.15) and sim.stats.late_s_max == 0.0


async def test_stream_interval_sends_several_tokens_an_event(session):
    config = sim_config(models={"m": QUICK}, step_tokens=10, stream_interval=4)
    body = {"model": "m", "prompt": "<think>\n", "stream": True, "stream_options": {"include_usage": True}, **STEP}
    async with SimServer(config) as sim:
        async with session.post(sim.url + "/v1/completions", json=body) as response:
            events = [line for line in (await response.read()).split(b"\n") if line.startswith(b"data:")]
        completion = await ModelClient(session, "m", [sim.url]).complete("<think>\n", stream=True, **STEP)
    assert len(events) == 3 + 2  # 4 + 4 + 2 tokens, the usage, [DONE]
    assert completion.completion_tokens == 10 and completion.text == "".join(f" m0w{i}" for i in range(10))[1:]


async def test_requests_beyond_capacity_wait_for_a_slot(session):
    config = sim_config(models={"m": Latency(request_s=0.0, token_s=0.01, capacity=2)}, step_tokens=10)
    clock = ManualClock()
    async with SimServer(config, clock) as sim:
        tasks = await start_requests(session, sim, ["m"] * 6)
        await run_clock(clock, tasks, 2)
    # three rounds of two requests of 0.1 s, each round starting when the one before ends
    assert clock.deadlines == pytest.approx([0.1, 0.1, 0.2, 0.2, 0.3, 0.3])
    assert sim.stats.peak_decoding == {"m": 2} and sim.stats.peak_in_flight == 6 and sim.stats.queued == 4
    assert sim.stats.served == 6


# What a server restart explains is retried until the deadline; the other faults until max_attempts.
RESTART_LIKE_FAULTS = ("http_503", "reset")


@pytest.mark.parametrize("stream", [True, False])
@pytest.mark.parametrize("kind", FAULT_KINDS)
async def test_a_fault_rate_of_one_fails_every_attempt(session, kind, stream):
    # The sim stalls far longer than the client waits (its handler ends when the client goes away);
    # only the stall needs the client's timeouts, the other faults answer at once.
    config = sim_config(models={"m": QUICK}, fault_rate=1.0, fault_kinds=(kind,), stall_s=600.0, step_tokens=8)
    stall_s, request_s = (0.3, 0.6) if kind == "stall" else (60.0, 60.0)
    limits = ClientLimits(
        max_attempts=3,
        retry_deadline_s=1.5,
        backoff_initial_s=0.1,
        backoff_max_s=0.2,
        stall_timeout_s=stall_s,
        request_timeout_s=request_s,
    )
    # The retry deadline is kept on a clock that only the backoffs move: at least 1.5 / 0.2 retries
    # fit before it, however long the machine takes over each attempt.
    async with SimServer(config) as sim:
        client = ModelClient(session, "m", [sim.url], limits, SteppingClock())
        with pytest.raises(RetryableServerError) as caught:
            await client.complete("<think>\n", stream=stream, **STEP)
    faults = sim.stats.faults[kind]
    assert sum(sim.stats.faults.values()) == faults and sim.stats.served == 0
    assert caught.value.unavailable == (kind in RESTART_LIKE_FAULTS)
    assert faults >= 1.5 / 0.2 if kind in RESTART_LIKE_FAULTS else faults == 3
    assert (client.stats.retries, client.stats.failures) == (faults - 1, 1)


async def fault_pattern(session, seed: int) -> list[bool]:
    config = sim_config(models={"m": QUICK}, fault_rate=0.3, fault_kinds=("http_503",), seed=seed)
    failed = []
    async with SimServer(config) as sim:
        # A deadline of 0 leaves no time for a retry, even of the 503s that a restart explains.
        client = ModelClient(session, "m", [sim.url], ClientLimits(max_attempts=1, retry_deadline_s=0.0))
        for _ in range(30):
            try:
                await client.complete("<think>\n", **STEP)
            except RetryableServerError:
                failed.append(True)
            else:
                failed.append(False)
    return failed


async def test_faults_are_drawn_the_same_way_for_the_same_seed(session):
    first, again, other = [await fault_pattern(session, seed) for seed in (5, 5, 6)]
    assert first == again and first != other
    assert 0 < sum(first) < 30


async def test_the_server_process_serves_its_endpoints_and_counters(session):
    async with sim_process(sim_config()) as url:
        async with session.get(url + "/health") as health, session.get(url + "/v1/models") as models:
            assert health.status == 200
            assert [m["id"] for m in (await models.json())["data"]] == ["small", "big"]
        client = ModelClient(session, "big", [url])
        assert len(await client.tokenize("three little words")) == 3
        score = await client.complete("a step", max_tokens=1, logprobs=10, stream=False)
        assert score.text.isdigit() and len(score.top_logprobs[0]) == 10
        stats = await sim_stats(session, url)
    assert stats["requests"] == {"step": 0, "score": 1, "answer": 0, "rast": 0, "pool": 0, "tokenize": 1}
    assert stats["served"] == 1


@pytest.mark.parametrize("stream", [True, False])
async def test_a_request_its_client_leaves_counts_the_tokens_generated_until_then(session, stream):
    config = sim_config(models={"m": Latency(request_s=0.05, token_s=0.01, capacity=4)}, step_tokens=100)
    clock = ManualClock()
    async with SimServer(config, clock) as sim:
        client = ModelClient(session, "m", [sim.url])
        request = asyncio.create_task(client.complete("<think>\n", max_tokens=100, stop=["\n\n"], stream=stream))
        # to 0.35 s: 0.05 s, then 30 of the 100 tokens (streamed: sent one by one as they are due)
        await settled(lambda: clock.sleeping == 1, "the request at the sim")
        while clock.next_deadline <= 0.35 + 1e-9:
            clock.advance_to_next()
            await settled(lambda: clock.sleeping == 1, "the next token due")
        clock.advance_to(0.35)
        request.cancel()
        with pytest.raises(asyncio.CancelledError):
            await request
        await settled(lambda: sim.stats.disconnects == 1, "the sim sees the client go")
    assert sim.stats.disconnects == 1 and sim.stats.served == 0 and sim.stats.completion_tokens == 0
    assert sim.stats.aborted_tokens == 30


async def requests_on_a_clock(session, config: SimConfig, models: list[str]) -> tuple[ManualClock, SimServer]:
    """Requests to models `models` that all arrive at time 0 of a clock the test moves, run to
    their ends; the clock (its time: when the last one ended) and the sim."""
    clock = ManualClock()
    async with SimServer(config, clock) as sim:
        await run_clock(clock, await start_requests(session, sim, models), capacity=64)
    return clock, sim


async def test_a_models_serial_cost_is_paid_one_request_at_a_time_before_its_latency(session):
    serial = Latency(request_s=0.002, token_s=0.0001, capacity=64, request_cpu_s=0.05)
    clock, sim = await requests_on_a_clock(session, sim_config(models={"m": serial}, step_tokens=10), ["m"] * 8)
    # eight turns of 50 ms one after the other, then the last one's 2 + 1 ms of latency
    assert clock.now() == pytest.approx(8 * 0.05 + 0.002 + 10 * 0.0001)
    # the k-th request waits k turns: 0 + 1 + ... + 7 = 28 turns of 50 ms
    assert sim.stats.serial_wait_s_total == pytest.approx(28 * 0.05)
    # each decodes once its turn is over, while the later ones still wait for theirs
    assert sim.stats.served == 8 and sim.stats.peak_decoding == {"m": 1}


async def test_each_model_has_its_own_serial_worker(session):
    serial = Latency(request_s=0.0, token_s=0.001, capacity=64, request_cpu_s=0.1)
    config = sim_config(models={"a": serial, "b": serial}, step_tokens=1)
    clock, sim = await requests_on_a_clock(session, config, ["a", "b"] * 4)
    # four turns per model, the two models at once: 0.4 s (and a token), not the 0.8 s of one shared worker
    assert clock.now() == pytest.approx(0.4 + 0.001)
    # waits of 2 x (0.1 + 0.2 + 0.3) = 1.2 s; one shared worker would make them 0.1 + ... + 0.7 = 2.8 s
    assert sim.stats.serial_wait_s_total == pytest.approx(2 * (0.1 + 0.2 + 0.3))


async def test_no_serial_cost_by_default(session):
    clock, sim = await requests_on_a_clock(session, sim_config(models={"m": QUICK}, step_tokens=10), ["m"] * 16)
    assert Latency().request_cpu_s == 0.0 and sim.stats.serial_wait_s_total == 0.0
    assert sim.stats.peak_decoding == {"m": 16} and clock.now() == pytest.approx(10 * 0.001)


def test_a_negative_serial_cost_is_refused():
    with pytest.raises(UsageError, match="request_cpu_s"):
        SimConfig(models={"m": Latency(request_cpu_s=-0.01)})


async def test_occupied_time_counts_only_when_some_request_is_in_flight(session):
    config = sim_config(models={"m": Latency(request_s=0.0, token_s=0.01, capacity=4)}, step_tokens=10)
    clock = ManualClock()
    async with SimServer(config, clock) as sim:
        await run_clock(clock, await start_requests(session, sim, ["m", "m"]), 4)  # both in [0, 0.1]
        clock.advance_to(0.5)  # the client's own work: nothing at the sim
        await run_clock(clock, await start_requests(session, sim, ["m"]), 4)  # [0.5, 0.6]
    assert clock.now() == pytest.approx(0.6) and sim.stats.occupied_s == pytest.approx(0.2)
