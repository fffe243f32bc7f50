"""`spectra api` on real vLLM-CPU servers, through the official `openai` client: the trained toy pair
answers toy problems (checked against their references), plainly and streamed; bad requests get one
line; a client that goes away, streaming or not, cancels its problem's requests on the servers
(their /metrics and their logs, as the client and early-stop tests check it); `spectra api` as a
command drains a request in flight on SIGTERM and exits 0."""

import asyncio
import json
import os
import signal
import sys
import time

import aiohttp
import openai
import pytest

from engine.api.launch import running_api
from engine.data.problems import load_problems
from engine.serving.servers import serve_models
from engine.serving.vllm_command import ServerSpec
from engine.toy.trained import MAX_POSITIONS
from tests.integration.test_client_vllm import abort_lines
from tests.integration.test_servers import metric
from tests.paths import REPO_ROOT
from tests.unit.api.conftest import api_flags

PROBLEMS = load_problems("toy")[:4]
# Greedy: the toy models' own answers, the same on every run.
GREEDY = {"temperature": 0.0, "seed": 0}


@pytest.fixture(scope="module")
async def toy_pair(toy_models, tmp_path_factory):
    """The trained toy pair (the trained big model, not the costly one: CI time), float32."""
    specs = [
        ServerSpec(name=role, model=str(path), dtype="float32", max_model_len=MAX_POSITIONS)
        for role, path in (("big", toy_models.big), ("small", toy_models.small))
    ]
    async with serve_models(specs, log_dir=tmp_path_factory.mktemp("toy-pair-logs")) as running:
        yield running


def served(servers) -> list[str]:
    return [a for role, s in servers.items() for a in (f"--{role}_model", s.model, f"--{role}_url", s.url)]


@pytest.fixture(scope="module")
async def toy_api(toy_pair, tmp_path_factory):
    settings, flags = api_flags(*served(toy_pair), "--output_dir", str(tmp_path_factory.mktemp("api-records")))
    async with running_api("127.0.0.1", 0, settings, flags) as (url, service):
        yield url, service


def client(url: str) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key="none", max_retries=0, timeout=120)


def user(problem) -> list[dict]:
    return [{"role": "user", "content": problem.problem}]


async def test_speculation_answers_toy_problems_through_the_openai_client(toy_api):
    url, service = toy_api
    answers = await asyncio.gather(
        *(client(url).chat.completions.create(model="spec", messages=user(p), **GREEDY) for p in PROBLEMS)
    )
    right = 0
    for problem, answer in zip(PROBLEMS, answers, strict=True):
        spectra = answer.model_extra["spectra"]
        record = spectra["choices"][0]["record"]
        assert record["problem"] == problem.problem and record["problem_id"] == answer.id
        assert answer.choices[0].message.content == f"\\boxed{{{spectra['answer']}}}"
        assert answer.choices[0].message.reasoning_content.strip()
        assert {s["writer"] for s in record["tracks"][0]["steps"]} <= {"small", "big"}
        assert spectra["usage"]["big"]["requests"] >= len(record["tracks"][0]["steps"])  # a score a step at least
        # the prompt once, as the server counted the first draft's
        first = record["tracks"][0]["steps"][0]["costs"][0]
        assert (first["purpose"], answer.usage.prompt_tokens) == ("draft", first["prompt_tokens"])
        right += spectra["answer"] == problem.answer
    assert right >= 3, f"{right} of {len(PROBLEMS)} toy problems right"
    assert service.admitted == 0


async def test_parallel_tracks_stream_the_leading_tracks_steps_then_the_answer(toy_api):
    url, _ = toy_api
    problem = PROBLEMS[0]
    stream = await client(url).chat.completions.create(
        model="spec+vote", messages=user(problem), stream=True, stream_options={"include_usage": True},
        extra_body={"spectra": {"tracks": 2}}, **GREEDY,
    )  # fmt: skip
    reasoning, tracks, content, last = [], set(), "", None
    async for chunk in stream:
        last = chunk
        for choice in chunk.choices:
            delta = choice.delta.model_extra or {}
            if "reasoning_content" in delta:
                reasoning.append(delta["reasoning_content"])
                tracks.add(chunk.model_extra["spectra"]["track"])
            content += choice.delta.content or ""
    spectra = last.model_extra["spectra"]
    (choice,) = spectra["choices"]
    assert len(tracks) == 1 and len(reasoning) >= 2  # one leading track, step by step
    leader = choice["record"]["tracks"][tracks.pop()]
    assert "".join(reasoning) == "\n\n".join(s["text"] for s in leader["steps"]).partition("</think>")[0].rstrip()
    assert content == f"\\boxed{{{spectra['answer']}}}" and spectra["answer"] == problem.answer
    assert len(choice["record"]["tracks"]) == 2 and choice["record"]["votes"]
    assert last.usage.completion_tokens_details.reasoning_tokens > 0


@pytest.mark.parametrize(
    "body, status, says",
    [
        ({"model": "o1"}, 404, "model 'o1' is not offered here"),
        ({"messages": [{"role": "system", "content": "Be brief."}]}, 400, "no user message"),
        ({"max_tokens": 10**6}, 400, "over this server's limit"),
        ({"spectra": {"tracks": "many"}}, 400, "spectra: argument --tracks: invalid int value: 'many'"),
    ],
)
async def test_a_bad_request_gets_one_line_and_the_server_stays_up(toy_api, body, status, says):
    url, _ = toy_api
    request = {"model": "spec", "messages": user(PROBLEMS[1]), **body}
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/chat/completions", json=request) as response:
            error = (await response.json())["error"]
            assert response.status == status and says in error["message"] and "\n" not in error["message"]
        async with session.get(f"{url}/health") as health:
            assert health.status == 200


@pytest.fixture(scope="module")
async def tiny_api(vllm_servers):
    """The API on the tiny random models, whose text never ends on its own: requests that last."""
    servers = {"big": vllm_servers.big, "small": vllm_servers.small}
    settings, flags = api_flags(*served(servers))
    async with running_api("127.0.0.1", 0, settings, flags) as (url, service):
        yield url, service


# Eight tracks of long steps on the small tiny model: requests are at the server whenever it is asked.
LASTING = {
    "model": "small+vote",
    "messages": [{"role": "user", "content": "Go on."}],
    "spectra": {"tracks": 8, "stepwise": True, "max_step_tokens": 500, "token_budget": 3000},
}


async def wait_for(check, what: str, seconds: float = 30.0) -> None:
    deadline = time.monotonic() + seconds
    while not await check():
        assert time.monotonic() < deadline, what
        await asyncio.sleep(0.05)


@pytest.mark.parametrize("stream", [False, True], ids=["plain", "streamed"])
async def test_a_client_that_goes_away_cancels_its_problems_requests_on_the_server(tiny_api, vllm_servers, stream):
    url, service = tiny_api
    small = vllm_servers.small
    async with aiohttp.ClientSession() as http:
        aborted_before = abort_lines(small)

        async def running() -> bool:
            return await metric(http, small.url, "vllm:num_requests_running") >= 1

        kept = asyncio.Event()

        async def ask() -> None:
            async with http.post(f"{url}/v1/chat/completions", json={**LASTING, "stream": stream}) as response:
                async for line in response.content:  # a plain answer comes only once the problem is done
                    if b'"reasoning"' in line:  # a step was kept and streamed: the tracks go on
                        kept.set()

        asking = asyncio.create_task(ask())
        if stream:
            await asyncio.wait_for(kept.wait(), 60)
        await wait_for(running, "no request of the problem reached the server")
        asking.cancel()  # the client goes away
        with pytest.raises(asyncio.CancelledError):
            await asking

        async def api_idle() -> bool:
            return service.admitted == 0

        async def server_idle() -> bool:
            return await metric(http, small.url, "vllm:num_requests_running") == 0

        async def aborted() -> bool:
            return abort_lines(small) > aborted_before

        await wait_for(api_idle, "the problem still runs after its client went away")  # no request will follow
        await wait_for(server_idle, "the server still runs the problem's requests")
        await wait_for(aborted, "no request was aborted: the in-flight ones ran to their end")


async def test_the_command_drains_a_request_in_flight_on_sigterm_and_exits_0(toy_pair, tmp_path):
    argv = ["-m", "runners.spectra", "api", *served(toy_pair), "--port", "0", "--log_level", "warning"]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *argv, cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )  # fmt: skip
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), 120)).decode()
        assert line.startswith("spectra api: serving "), line + (await process.stderr.read()).decode()
        url = line.rsplit(" ", 1)[1].strip()
        body = {"model": "spec", "messages": user(PROBLEMS[2]), "stream": True, **GREEDY}
        async with aiohttp.ClientSession() as http:
            async with http.post(f"{url}/v1/chat/completions", json=body) as response:
                events = []
                async for raw in response.content:
                    if raw.startswith(b"data: "):
                        events.append(raw[6:].strip())
                        if len(events) == 2:  # the stream is under way: stop the server
                            process.send_signal(signal.SIGTERM)
        assert events[-1] == b"[DONE]"
        last = json.loads(events[-2])
        assert last["spectra"]["answer"] == PROBLEMS[2].answer  # answered in full while draining
        assert await asyncio.wait_for(process.wait(), 60) == 0
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
