"""The model client against the scripted fake server: protocol, retries, limits, cancellation."""

import asyncio
import math

import aiohttp
import pytest

from engine.client import ClientLimits, ModelClient
from engine.errors import RetryableServerError, ServerError
from tests.fake_openai import FakeOpenAIServer, Reply

FAST = ClientLimits(backoff_initial_s=0.01, backoff_max_s=0.02, max_attempts=3, stall_timeout_s=2.0)


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
        result = await client_for(session, server).complete("p", max_tokens=8, stop=["\n\n"], logprobs=1)
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


@pytest.mark.parametrize("status", [500, 503, 429])
async def test_retryable_status_is_retried_then_succeeds(session, status):
    async with FakeOpenAIServer([Reply(status=status), Reply(text="fine")]) as server:
        client = client_for(session, server)
        result = await client.complete("p", max_tokens=4)
    assert result.text == "fine"
    assert result.attempts == 2
    assert client.stats.retries == 1 and client.stats.failures == 0
    assert len(server.requests) == 2


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


async def test_stalled_response_times_out_and_gives_up_after_max_attempts(session):
    limits = ClientLimits(
        stall_timeout_s=0.2, request_timeout_s=0.3, max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.01
    )
    async with FakeOpenAIServer(lambda body: Reply(delay_s=5.0)) as server:
        with pytest.raises(RetryableServerError, match="timed out"):
            await client_for(session, server, limits=limits).complete("p", max_tokens=4)
    assert len(server.requests) == 2


async def test_stream_cut_midway_is_retried(session):
    script = [Reply(text="abcdef", cut_after_chunks=2), Reply(text="whole")]
    async with FakeOpenAIServer(script) as server:
        result = await client_for(session, server).complete("p", max_tokens=8)
    assert result.text == "whole"
    assert result.attempts == 2


async def test_malformed_body_is_retried(session):
    async with FakeOpenAIServer([Reply(malformed=True), Reply(text="good")]) as server:
        result = await client_for(session, server).complete("p", max_tokens=8, stream=False)
    assert result.text == "good"
    assert len(server.requests) == 2


async def test_unreachable_endpoint_is_a_retryable_connection_error(session):
    limits = ClientLimits(max_attempts=2, backoff_initial_s=0.01, backoff_max_s=0.01, connect_timeout_s=1)
    client = ModelClient(session, "m", ["http://127.0.0.1:9"], limits)
    with pytest.raises(RetryableServerError, match="127.0.0.1:9"):
        await client.complete("p", max_tokens=1)


async def test_requests_spread_over_endpoints_within_per_endpoint_limit(session):
    limits = ClientLimits(max_in_flight_per_endpoint=2)

    def slow(body):
        return Reply(text="x", delay_s=0.1)

    async with FakeOpenAIServer(slow) as first, FakeOpenAIServer(slow) as second:
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


async def test_cancelling_the_caller_closes_the_stream_on_the_server(session):
    reply = Reply(text="slow" * 50, chunk_delay_s=0.05)
    async with FakeOpenAIServer([reply]) as server:
        task = asyncio.create_task(client_for(session, server).complete("p", max_tokens=200))
        while not server.requests:
            await asyncio.sleep(0.01)
        await asyncio.sleep(0.1)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        for _ in range(100):
            if server.disconnects:
                break
            await asyncio.sleep(0.02)
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
        result = await client_for(session, server).complete("p", max_tokens=8)
    assert result.text == "whole" and result.attempts == 2


async def test_a_client_error_event_inside_a_stream_is_not_retried(session):
    async with FakeOpenAIServer([Reply(text="ab", error_event={"message": "bad logprobs", "code": 400})]) as server:
        with pytest.raises(ServerError, match="bad logprobs") as caught:
            await client_for(session, server).complete("p", max_tokens=8)
    assert caught.value.status == 400 and len(server.requests) == 1


async def test_an_event_that_is_not_an_object_is_retried(session):
    async with FakeOpenAIServer([Reply(text="ab", raw_event=b"[1, 2]"), Reply(text="fine")]) as server:
        result = await client_for(session, server).complete("p", max_tokens=8)
    assert result.text == "fine"
