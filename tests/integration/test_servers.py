"""Starting, checking and stopping real vLLM servers, and the parts of vLLM's OpenAI protocol that
spectra relies on: completion logprobs, usage at the end of a stream, abort when a stream is closed."""

import asyncio
import json
import re
import time
from pathlib import Path

import aiohttp
import pytest
from transformers import AutoTokenizer

from engine.errors import ServerStartError, UsageError
from engine.serving.servers import ServedModel, check_server, free_port, serve_models
from engine.serving.vllm_command import ServerSpec
from engine.toy.tiny import MAX_POSITIONS


@pytest.fixture
async def http():
    async with aiohttp.ClientSession() as session:
        yield session


async def stream_events(http, url: str, body: dict, *, stop_after: int | None = None) -> list[dict | str]:
    """The `data:` payloads of a streamed completion; closes the stream after `stop_after` events."""
    events: list[dict | str] = []
    async with http.post(f"{url}/v1/completions", json={**body, "stream": True}) as resp:
        assert resp.status == 200, await resp.text()
        async for raw in resp.content:
            line = raw.decode().strip()
            if not line.startswith("data:"):
                continue
            data = line.removeprefix("data:").strip()
            events.append(data if data == "[DONE]" else json.loads(data))
            if stop_after is not None and len(events) >= stop_after:
                break
    return events


async def metric(http, url: str, name: str) -> float:
    async with http.get(f"{url}/metrics") as resp:
        text = await resp.text()
    values = [float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith(name + "{")]
    assert values, f"{name} not in /metrics"
    return sum(values)


async def test_servers_are_healthy_and_serve_their_model(vllm_servers, http):
    for server in (vllm_servers.big, vllm_servers.small):
        async with http.get(f"{server.url}/health") as resp:
            assert resp.status == 200
        async with http.get(f"{server.url}/v1/models") as resp:
            served = [entry["id"] for entry in (await resp.json())["data"]]
        assert served == [server.model]
        # The tiny models' own context length (engine.toy.tiny.MAX_POSITIONS), as vLLM reports it.
        assert await check_server(http, server.url, server.model) == ServedModel(server.model, MAX_POSITIONS)
        assert await check_server(http, server.url + "/", None) == ServedModel(server.model, MAX_POSITIONS)
    assert vllm_servers.big.model != vllm_servers.small.model


async def test_check_server_names_the_unknown_model_and_what_is_served(vllm_servers, http):
    with pytest.raises(UsageError) as caught:
        await check_server(http, vllm_servers.small.url, "no-such-model", role="small")
    message = str(caught.value)
    assert "'no-such-model'" in message and vllm_servers.small.model in message and "--small_model" in message
    assert "\n" not in message


async def test_check_server_reports_an_unreachable_port(http):
    url = f"http://127.0.0.1:{free_port()}"
    with pytest.raises(UsageError) as caught:
        await check_server(http, url, "any", role="small")
    message = str(caught.value)
    assert message.startswith(f"cannot reach model server at {url}: ")
    assert message.endswith("start it or fix --small_url") and "\n" not in message


async def test_completion_returns_top_logprobs_per_token(vllm_servers, http):
    tokenizer = AutoTokenizer.from_pretrained(vllm_servers.models.big)
    prompt = tokenizer.apply_chat_template(
        [{"role": "user", "content": "What is 2 + 3?"}], tokenize=False, add_generation_prompt=True
    )
    body = {
        "model": vllm_servers.big.model,
        "prompt": prompt,
        "max_tokens": 4,
        "logprobs": 5,
        "temperature": 0,
        "ignore_eos": True,
    }
    async with http.post(f"{vllm_servers.big.url}/v1/completions", json=body) as resp:
        assert resp.status == 200, await resp.text()
        choice_and_usage = await resp.json()
    choice, usage = choice_and_usage["choices"][0], choice_and_usage["usage"]
    logprobs = choice["logprobs"]
    assert usage["prompt_tokens"] == len(tokenizer(prompt, add_special_tokens=False)["input_ids"])
    assert usage["completion_tokens"] == 4 and choice["finish_reason"] == "length"
    assert len(logprobs["tokens"]) == len(logprobs["token_logprobs"]) == len(logprobs["top_logprobs"]) == 4
    rows = zip(logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"], strict=True)
    for token, logprob, top in rows:
        # A dict keyed by decoded text: the sampled token plus the top 5; tokens that decode to the
        # same text collapse into one key, so there can be fewer entries.
        assert isinstance(top, dict) and 1 <= len(top) <= 6
        assert top[token] == pytest.approx(logprob) and logprob <= 0
        # Greedy decoding: the sampled token is the most likely one.
        assert max(top.values()) == pytest.approx(logprob)


async def test_stream_reports_usage_last_only_when_asked(vllm_servers, http):
    body = {"model": vllm_servers.small.model, "prompt": "Let's think", "max_tokens": 5, "ignore_eos": True}
    plain = await stream_events(http, vllm_servers.small.url, body)
    assert plain[-1] == "[DONE]" and not any("usage" in event for event in plain[:-1])

    events = await stream_events(http, vllm_servers.small.url, {**body, "stream_options": {"include_usage": True}})
    *chunks, last, done = events
    assert done == "[DONE]"
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 5
    # vLLM may put several tokens in one chunk when it falls behind
    assert all("usage" not in chunk for chunk in chunks) and 1 <= len(chunks) <= 5
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


async def test_a_repeated_prefix_is_served_from_the_prefix_cache(vllm_servers, http):
    prompt = "Step 1: add 3 and 4 to get 7.\n\n" * 40
    cached = []
    for ending in ("Step 2:", "Step 3:"):
        body = {"model": vllm_servers.big.model, "prompt": prompt + ending, "max_tokens": 1}
        async with http.post(f"{vllm_servers.big.url}/v1/completions", json=body) as resp:
            usage = (await resp.json())["usage"]
        cached.append(usage["prompt_tokens_details"]["cached_tokens"])
    # Whole KV blocks only (128 tokens on CPU), so the second request reuses most of the first.
    assert cached[0] < usage["prompt_tokens"] // 2 < cached[1] <= usage["prompt_tokens"]


async def test_closing_a_stream_aborts_the_request(vllm_servers, http):
    server = vllm_servers.small
    generated_before = await metric(http, server.url, "vllm:generation_tokens_total")
    body = {"model": server.model, "prompt": "Let's think", "max_tokens": 3000, "ignore_eos": True}
    first, *_ = await stream_events(http, server.url, body, stop_after=3)
    deadline = time.monotonic() + 10
    while await metric(http, server.url, "vllm:num_requests_running") > 0:
        assert time.monotonic() < deadline, "request still running after its stream was closed"
        await asyncio.sleep(0.1)
    # Far fewer than the 3000 tokens asked for: vLLM stopped generating when the client left.
    assert await metric(http, server.url, "vllm:generation_tokens_total") - generated_before < 1000
    log_text = server.log_path.read_text(errors="replace")
    assert re.search(rf"Request {re.escape(first['id'])}\S* aborted", log_text), "no abort line in the log"


async def test_a_server_that_dies_raises_one_line_with_its_error(tmp_path: Path):
    spec = ServerSpec(name="broken", model=str(tmp_path / "no-model-here"), env={"HF_HUB_OFFLINE": "1"})
    with pytest.raises(ServerStartError) as caught:
        async with serve_models([spec], log_dir=tmp_path / "logs", startup_timeout_s=120):
            pytest.fail("a server without a model must not become healthy")
    message = str(caught.value)
    assert message.startswith("vLLM server 'broken'") and "exited with code" in message and "\n" not in message
    # vLLM's error names the bad model path; the one line carries it, and where the log is.
    assert "no-model-here" in message.split("; its error: ")[1]
    assert message.endswith(f"; log: {tmp_path / 'logs' / 'broken.log'}")


async def test_a_server_that_is_not_ready_in_time_is_stopped(tiny_models, tmp_path: Path):
    marker = f"timeout-probe-{tmp_path.name}"
    spec = ServerSpec(name="slow", model=str(tiny_models.small), served_model_name=marker)
    with pytest.raises(ServerStartError, match=r"was not healthy after 2 s"):
        async with serve_models([spec], log_dir=tmp_path, startup_timeout_s=2):
            pytest.fail("vLLM cannot be healthy within 2 s")
    assert _processes_mentioning(marker) == []


def _processes_mentioning(text: str) -> list[int]:
    """Ids of live processes whose command line contains `text` (Linux /proc)."""
    found = []
    for proc_dir in Path("/proc").glob("[0-9]*"):
        try:
            cmdline = (proc_dir / "cmdline").read_bytes().decode(errors="replace")
        except OSError:  # the process ended while we looked
            continue
        if text in cmdline:
            found.append(int(proc_dir.name))
    return found
