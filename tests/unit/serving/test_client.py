"""The model client against the scripted fake server: protocol, retries, limits, cancellation."""

import asyncio
import math
from dataclasses import replace

import aiohttp
import pytest

from engine.errors import RetryableServerError, ServerError
from engine.serving.client import ModelClient
from engine.serving.endpoints import ClientLimits
from engine.serving.servers import free_port
from tests.clocks import ManualClock, SteppingClock, settled
from tests.fake_openai import FakeOpenAIServer, Reply

FAST = ClientLimits(backoff_initial_s=0.01, backoff_max_s=0.02, max_attempts=3, stall_timeout_s=2.0)
CLOSED_PORT = "http://127.0.0.1:9"


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def client_for(session, *servers, limits=FAST):
    return ModelClient(session, "fake-model", [s.url for s in servers], limits)


async def test_non_streaming_completion_returns_text_usage_and_logprobs(session):
    top = [{"7": math.log(0.6), "3": math.log(0.3)}]
    reply = Reply(text="7", finish_reason="length", top_logprobs=top, prompt_tokens=11)
    async with FakeOpenAIServer([reply]) as server:
        result = await client_for(session, server).complete(
            "rate:", max_tokens=1, temperature=0.0, logprobs=10, stream=False, seed=3
        )
    assert result.text == "7"
    assert result.finish_reason == "length"
    assert result.prompt_tokens == 11 and result.completion_tokens == 1
    assert result.top_logprobs == top
    assert result.endpoint == server.url
    sent = server.requests[0]
    assert sent["logprobs"] == 10 and sent["seed"] == 3 and sent["temperature"] == 0.0
    assert sent["stream"] is False and "stream_options" not in sent


async def test_streaming_assembles_chunks_and_reads_usage_from_last_event(session):
    tops = [{"a": -0.1}, {"b": -0.2}, {"c": -0.3}]
    reply = Reply(text="abc", stop_reason="\n\n", top_logprobs=tops, prompt_tokens=4)
    async with FakeOpenAIServer([reply]) as server:
        result = await client_for(session, server).complete("p", max_tokens=8, stop=["\n\n"], logprobs=1, stream=True)
    assert result.text == "abc"
    assert result.finish_reason == "stop" and result.stop_reason == "\n\n"
    assert result.choices[0].tokens == ["a", "b", "c"]
    assert result.top_logprobs == tops
    assert (result.prompt_tokens, result.completion_tokens) == (4, 3)
    assert result.ttft_s is not None and 0 <= result.ttft_s <= result.latency_s
    assert server.requests[0]["stream_options"] == {"include_usage": True}
    assert server.requests[0]["stop"] == ["\n\n"]


async def test_n_choices_come_back_in_index_order(session):
    async with FakeOpenAIServer([Reply(text="x")]) as server:
        result = await client_for(session, server).complete("p", max_tokens=2, n=3, stream=False)
    assert [c.text for c in result.choices] == ["x", "x", "x"]


async def test_requests_are_whole_by_default_with_no_stream_options(session):
    async with FakeOpenAIServer([Reply(text="whole")]) as server:
        result = await client_for(session, server).complete("p", max_tokens=8)
    assert result.text == "whole" and result.ttft_s is None
    assert server.requests[0]["stream"] is False and "stream_options" not in server.requests[0]


@pytest.mark.parametrize("status", [500, 503, 429, 502, 504])
async def test_retryable_status_is_retried_then_succeeds(session, status):
    async with FakeOpenAIServer([Reply(status=status), Reply(text="fine")]) as server:
        client = client_for(session, server)
        result = await client.complete("p", max_tokens=4)
    assert result.text == "fine"
    assert result.attempts == 2
    assert client.stats.retries == 1 and client.stats.failures == 0
    assert len(server.requests) == 2


@pytest.mark.parametrize("status", [502, 503, 504])
async def test_what_a_restart_explains_is_retried_past_max_attempts(session, status):
    script = [Reply(status=status)] * 6 + [Reply(text="back")]
    async with FakeOpenAIServer(script) as server:
        client = client_for(session, server, limits=replace(FAST, max_attempts=2))
        result = await client.complete("p", max_tokens=4)
    assert result.text == "back" and result.attempts == 7
    assert client.stats.retries == 6 and client.stats.failures == 0


@pytest.mark.parametrize("status", [500, 429])
async def test_what_a_restart_does_not_explain_stops_at_max_attempts(session, status):
    async with FakeOpenAIServer([Reply(status=status)] * 3 + [Reply(text="never")]) as server:
        client = client_for(session, server, limits=replace(FAST, max_attempts=3))
        with pytest.raises(RetryableServerError) as caught:
            await client.complete("p", max_tokens=4)
    assert caught.value.status == status and not caught.value.unavailable
    assert len(server.requests) == 3 and client.stats.failures == 1


async def test_only_failures_a_restart_does_not_explain_count_against_max_attempts(session):
    script = [Reply(status=500), Reply(status=503), Reply(status=503), Reply(malformed=True), Reply(text="never")]
    async with FakeOpenAIServer(script) as server:
        client = client_for(session, server, limits=replace(FAST, max_attempts=2))
        with pytest.raises(RetryableServerError, match="malformed JSON"):
            await client.complete("p", max_tokens=4)
    assert len(server.requests) == 4, "two unexplained failures, with two 503s between them"


async def test_client_error_is_not_retried_and_names_server_status_and_message(session):
    reply = Reply(status=400, error_message="This model's maximum context length is 4096 tokens")
    async with FakeOpenAIServer([reply, Reply(text="never")]) as server:
        client = client_for(session, server)
        with pytest.raises(ServerError) as caught:
            await client.complete("p", max_tokens=4)
    assert not isinstance(caught.value, RetryableServerError)
    assert caught.value.status == 400
    assert server.url in str(caught.value) and "maximum context length" in str(caught.value)
    assert len(server.requests) == 1
    assert client.stats.failures == 1


@pytest.mark.parametrize("stream", [False, True])
async def test_stalled_response_times_out_and_gives_up_after_max_attempts(session, stream):
    limits = ClientLimits(
        stall_timeout_s=0.2, request_timeout_s=0.3, max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.01
    )
    # The server never answers (an event nobody sets): only the client's timeouts end an attempt.
    async with FakeOpenAIServer(lambda body: Reply(after=asyncio.Event())) as server:
        client = client_for(session, server, limits=limits)
        with pytest.raises(RetryableServerError, match="timed out") as caught:
            await client.complete("p", max_tokens=4, stream=stream)
    assert client.stats.requests == 2 and len(server.requests) <= 2 and not caught.value.unavailable


async def test_a_whole_answer_is_bounded_by_the_request_timeout_not_the_stall_timeout(session):
    # A silence five times the stall timeout: a stall timeout on a whole answer would always end it
    # first (its deadline is the earlier one); the request timeout is far beyond any machine's load.
    limits = replace(FAST, stall_timeout_s=0.1, request_timeout_s=120.0)
    async with FakeOpenAIServer([Reply(text="slow but whole", delay_s=0.5)]) as server:
        result = await client_for(session, server, limits=limits).complete("p", max_tokens=4)
    assert result.text == "slow but whole" and result.attempts == 1


async def test_a_stream_is_bounded_by_the_stall_timeout_between_chunks(session):
    # The steady stream lasts longer than the stall timeout (30 gaps of 0.02 s, at least 0.6 s, so a
    # bound on the whole stream would always end it) with gaps 25 times shorter than it; the stalled
    # one sends two chunks, then nothing until the client goes away.
    limits = replace(FAST, stall_timeout_s=0.5, request_timeout_s=120.0, max_attempts=1)
    steady_reply = Reply(text="ab" * 30, tokens=["ab"] * 30, chunk_delay_s=0.02)
    script = [steady_reply, Reply(text="abcd", stall_after_chunks=2)]
    async with FakeOpenAIServer(script) as server:
        client = client_for(session, server, limits=limits)
        steady = await client.complete("p", max_tokens=8, stream=True)
        with pytest.raises(RetryableServerError, match="timed out"):
            await client.complete("p", max_tokens=8, stream=True)
    assert steady.text == "ab" * 30 and steady.latency_s > limits.stall_timeout_s


async def test_stream_cut_midway_is_retried(session):
    script = [Reply(text="abcdef", cut_after_chunks=2), Reply(text="whole")]
    async with FakeOpenAIServer(script) as server:
        result = await client_for(session, server).complete("p", max_tokens=8, stream=True)
    assert result.text == "whole"
    assert result.attempts == 2


async def test_malformed_body_is_retried(session):
    async with FakeOpenAIServer([Reply(malformed=True), Reply(text="good")]) as server:
        result = await client_for(session, server).complete("p", max_tokens=8, stream=False)
    assert result.text == "good"
    assert len(server.requests) == 2


async def test_a_closed_port_is_retried_past_max_attempts_until_the_deadline(session):
    limits = ClientLimits(
        max_attempts=2, retry_deadline_s=1.0, backoff_initial_s=0.01, backoff_max_s=0.05, connect_timeout_s=1
    )
    clock = SteppingClock()  # the backoffs pass in no real time; refused attempts take none of the clock's
    client = ModelClient(session, "m", [CLOSED_PORT], limits, clock)
    with pytest.raises(RetryableServerError, match="127.0.0.1:9") as caught:
        await client.complete("p", max_tokens=1)
    assert caught.value.unavailable
    # until the 1 s deadline, not forever, and no backoff past it: the next one (at most 0.05 s) would be
    assert 1.0 - 0.05 <= clock.now() < 1.0
    assert client.stats.retries >= 1.0 / 0.05 - 1 and client.stats.failures == 1


async def test_a_server_back_on_its_port_is_found_by_health_polls_before_the_backoff_ends(session, monkeypatch):
    # Always the top of the jitter range, so the backoff is known: 2, 4, 8 s after attempts 1-3.
    monkeypatch.setattr("tenacity.wait.random.uniform", lambda low, high: high)
    limits = ClientLimits(max_attempts=1, backoff_initial_s=2.0, backoff_max_s=30.0, health_poll_s=0.1)
    port = free_port()
    clock = ManualClock()
    client = ModelClient(session, "fake-model", [f"http://127.0.0.1:{port}"], limits, clock)
    requests = [asyncio.create_task(client.complete("p", max_tokens=2)) for _ in range(10)]

    async def run_clock_until(done) -> None:
        """Move the clock from deadline to deadline, each time once every request still waiting
        is parked on it again (after its health probe or its attempt), until `done()`."""
        while True:
            await settled(lambda: clock.sleeping == sum(not r.done() for r in requests), "every request parked")
            if done():
                return
            clock.advance_to_next()

    await run_clock_until(lambda: clock.now() >= 2.5)  # refused at 0 and 2 s; the next attempt is due at 6 s
    assert not any(r.done() for r in requests)
    async with FakeOpenAIServer(lambda body: Reply(text="back"), port=port) as server:
        up_at = clock.now()
        await run_clock_until(lambda: all(r.done() for r in requests))
        results = [r.result() for r in requests]
    assert [r.text for r in results] == ["back"] * 10
    assert all(r.attempts == 3 for r in results), "the attempt cap of 1 does not apply to refused connections"
    # back at the first poll after the server came up (or the next, as the float sums of 0.1 s
    # fall), not at the backoff's 6 s
    assert clock.now() < up_at + 0.25, "the retry waited for the backoff instead of the health poll"
    assert len(server.requests) == 10 and server.health_checks >= 1
    # One probe per poll interval for all ten waiting requests, not one each.
    assert client.stats.health_probes <= clock.now() / 0.1 + 1


async def test_a_closed_port_is_passed_over_for_its_live_twin(session):
    async with FakeOpenAIServer(lambda body: Reply(text="from twin")) as twin:
        client = ModelClient(session, "fake-model", [CLOSED_PORT, twin.url], FAST)
        results = [await client.complete("p", max_tokens=1) for _ in range(4)]
    assert [r.text for r in results] == ["from twin"] * 4
    assert client.stats.retries <= 1 and len(twin.requests) == 4


async def test_requests_spread_over_endpoints_within_per_endpoint_limit(session):
    limits = ClientLimits(max_in_flight_per_endpoint=2)

    def reply(body):
        return Reply(text="x")

    # Each server answers once two of its requests were in flight at once (a gate, not a sleep).
    async with (
        FakeOpenAIServer(reply, gate_in_flight=2) as first,
        FakeOpenAIServer(reply, gate_in_flight=2) as second,
    ):
        client = client_for(session, first, second, limits=limits)
        async with asyncio.TaskGroup() as group:
            for _ in range(10):
                group.create_task(client.complete("p", max_tokens=1))
    assert first.peak_in_flight == 2 and second.peak_in_flight == 2
    assert len(first.requests) + len(second.requests) == 10
    assert len(first.requests) >= 4 and len(second.requests) >= 4


async def test_failing_endpoint_is_passed_over_for_its_healthy_twin(session):
    async with (
        FakeOpenAIServer(lambda b: Reply(status=503)) as bad,
        FakeOpenAIServer(lambda b: Reply(text="from good")) as good,
    ):
        client = client_for(session, bad, good)
        results = [await client.complete("p", max_tokens=1) for _ in range(4)]
    assert all(r.text == "from good" for r in results)
    assert len(bad.requests) <= 1


@pytest.mark.parametrize("stream", [True, False])
async def test_cancelling_the_caller_closes_the_connection_on_the_server(session, stream):
    # Streamed: cancelled while it reads a stream stalled after two chunks; whole: while it waits
    # for an answer that never comes (an event nobody sets).
    reply = Reply(text="slow", stall_after_chunks=2) if stream else Reply(text="slow", after=asyncio.Event())
    async with FakeOpenAIServer([reply]) as server:
        task = asyncio.create_task(client_for(session, server).complete("p", max_tokens=200, stream=stream))
        await settled(lambda: server.stalled == 1 if stream else server.in_flight == 1, "the request at the server")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.quiet()  # the server has seen the connection close
    assert server.disconnects == 1
    assert server.in_flight == 0


async def test_tokenize_returns_token_ids(session):
    async with FakeOpenAIServer([]) as server:
        tokens = await client_for(session, server).tokenize("ab")
    assert tokens == [97, 98]


async def test_an_error_event_inside_a_stream_is_an_error_not_a_short_answer(session):
    async with FakeOpenAIServer(
        [Reply(text="ab", error_event={"message": "engine died", "code": 500}), Reply(text="whole")]
    ) as server:
        result = await client_for(session, server).complete("p", max_tokens=8, stream=True)
    assert result.text == "whole" and result.attempts == 2


async def test_a_client_error_event_inside_a_stream_is_not_retried(session):
    async with FakeOpenAIServer([Reply(text="ab", error_event={"message": "bad logprobs", "code": 400})]) as server:
        with pytest.raises(ServerError, match="bad logprobs") as caught:
            await client_for(session, server).complete("p", max_tokens=8, stream=True)
    assert caught.value.status == 400 and len(server.requests) == 1


async def test_an_event_that_is_not_an_object_is_retried(session):
    async with FakeOpenAIServer([Reply(text="ab", raw_event=b"[1, 2]"), Reply(text="fine")]) as server:
        result = await client_for(session, server).complete("p", max_tokens=8, stream=True)
    assert result.text == "fine"


async def test_prompt_logprobs_are_read_by_token_id_position_by_position(session):
    positions = [
        None,
        {"17": {"logprob": -0.25, "rank": 1, "decoded_token": "a"}},
        {"3": {"logprob": -1.5, "rank": 1, "decoded_token": "b"}, "9": {"logprob": -2.0, "rank": 2}},
        {"5": {"rank": 1}},  # no logprob: malformed, found when read
    ]
    async with FakeOpenAIServer([Reply(text="x", prompt_logprobs=positions)]) as server:
        result = await client_for(session, server).complete([1, 17, 3, 5], max_tokens=1)
    prompt = result.choices[0].prompt_logprobs
    assert len(prompt) == 4 and prompt[0] is None
    assert prompt[1] == {17: -0.25} and prompt[-2] == {3: -1.5, 9: -2.0}
    assert prompt[1:3] == [{17: -0.25}, {3: -1.5, 9: -2.0}]
    with pytest.raises(ServerError, match="malformed prompt_logprobs at position 3"):
        prompt[3]


@pytest.mark.parametrize(
    ("body", "error"),
    [
        (b'[{"text": "a"}]', "unexpected body"),
        (b'{"choices": [{"index": 0, "text": 7}]}', "unexpected body"),
        (b'{"choices": [], "usage": {}}', "no choices in response"),
    ],
)
async def test_a_whole_answer_not_shaped_as_a_completion_is_retried(session, body, error):
    async with FakeOpenAIServer([Reply(raw_body=body), Reply(raw_body=body)]) as server:
        client = client_for(session, server, limits=replace(FAST, max_attempts=2))
        with pytest.raises(RetryableServerError, match=error):
            await client.complete("p", max_tokens=1)
    assert len(server.requests) == 2


METRICS = {"queue_time_ms": 12.5, "time_to_first_token_ms": 40.0, "generation_time_ms": 250.0, "mean_itl_ms": 5.0}


@pytest.mark.parametrize("stream", [False, True])
async def test_the_servers_per_request_metrics_are_read_as_seconds(session, stream):
    async with FakeOpenAIServer([Reply(text="abc", metrics=METRICS, cached_tokens=3)]) as server:
        result = await client_for(session, server).complete("p", max_tokens=4, stream=stream)
    timings = result.timings
    assert (timings.queue_s, timings.prefill_s, timings.generation_s) == (0.0125, 0.04, 0.25)
    assert timings.seconds == pytest.approx(0.3025)
    assert result.cached_prompt_tokens == 3


@pytest.mark.parametrize(
    ("metrics", "expected"),
    [
        (None, None),  # a server without --enable-per-request-metrics
        ({"queue_time_ms": 1.0, "time_to_first_token_ms": None, "generation_time_ms": None}, (0.001, None, None)),
        ({"mean_itl_ms": 3.0}, None),
        ({"queue_time_ms": "soon", "time_to_first_token_ms": -1, "generation_time_ms": 2000}, (None, None, 2.0)),
    ],
)
async def test_missing_or_partial_metrics_leave_what_is_unknown_none(session, metrics, expected):
    async with FakeOpenAIServer([Reply(text="a", metrics=metrics)]) as server:
        result = await client_for(session, server).complete("p", max_tokens=4)
    timings = result.timings
    assert (None if timings is None else (timings.queue_s, timings.prefill_s, timings.generation_s)) == expected
    assert timings is None or timings.seconds is None


async def test_the_api_key_goes_as_a_bearer_token_to_every_route(session):
    pooler = lambda body: [[0.2, 0.8]]  # noqa: E731
    async with (
        FakeOpenAIServer([Reply(), Reply()], api_key="k-123", pooler=pooler) as first,
        FakeOpenAIServer([Reply()], api_key="k-123") as second,
    ):
        client = ModelClient(session, "fake-model", [first.url, second.url], FAST, api_key="k-123", role="big")
        await client.complete("p", max_tokens=1)
        await client.complete("p", max_tokens=1, stream=True)
        await client.pool("p")
        await client.tokenize("p")
    sent = first.authorizations + second.authorizations
    assert first.load_reads and len(sent) >= 6 and set(sent) == {"Bearer k-123"}


@pytest.mark.parametrize(("key", "said"), [(None, "requires an API key"), ("wrong", "refused the API key sent")])
async def test_a_401_is_one_line_naming_the_role_and_its_key_flag_and_is_not_retried(session, key, said):
    async with FakeOpenAIServer([Reply(), Reply()], api_key="right") as server:
        client = ModelClient(session, "fake-model", [server.url], FAST, api_key=key, role="small")
        with pytest.raises(ServerError) as caught:
            await client.complete("p", max_tokens=1)
    message = str(caught.value)
    assert caught.value.status == 401 and not isinstance(caught.value, RetryableServerError)
    assert message == (
        f"{server.url}: HTTP 401: the small model's server {said}: "
        "give its key with --small_api_key or SPECTRA_SMALL_API_KEY"
    )
    assert "right" not in message and len(server.authorizations) == 1 and client.stats.retries == 0
