"""`spectra api` over HTTP on fake model servers: answers through the official `openai` client, the
refusals of point 6 (each one line, the server up for the next request), the key, health, limits,
records, disconnects and the drain."""

import asyncio
import json

import aiohttp
import openai
import pytest

from engine.api.launch import running_api
from engine.run.store import MANIFEST_FILE, RECORDS_FILE, read_records
from evaluators.evaluate import main as evaluate
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.api.conftest import api, api_flags, model_flags, solver

PROBLEM = [{"role": "user", "content": "What is 2 + 2?"}]


def client(url: str, key: str = "none") -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{url}/v1", api_key=key, max_retries=0)


async def post(url: str, body, headers=None) -> tuple[int, dict, dict]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with aiohttp.ClientSession() as session:
        async with session.post(f"{url}/v1/chat/completions", data=data, headers=headers) as response:
            return response.status, await response.json(), dict(response.headers)


async def test_the_openai_client_gets_the_answer_its_reasoning_and_spectras_record():
    async with api() as server:
        answer = await client(server.url).chat.completions.create(model="spec", messages=PROBLEM)
        tokenizer = server.service.models["small"].chat.tokenizer
        first_draft = server.small.requests_for("draft")[0]["prompt"]
    message = answer.choices[0].message
    assert (message.content, message.reasoning_content, message.reasoning) == ("\\boxed{4}", "2 + 2 = 4", "2 + 2 = 4")
    assert answer.choices[0].finish_reason == "stop" and answer.model == "spec"
    assert answer.usage.completion_tokens_details.reasoning_tokens == answer.usage.completion_tokens > 0
    spectra = answer.model_extra["spectra"]
    (record,) = [c["record"] for c in spectra["choices"]]
    assert spectra["answer"] == "4" and record["problem_id"] == answer.id and record["runner"] == "spec"
    assert [(s["writer"], s["outcome"]) for s in record["tracks"][0]["steps"]] == [("small", "accepted")] * 2
    assert spectra["usage"]["big"]["requests"] == 2  # a score a step
    # the prompt counted once: the conversation the first step was written from
    assert answer.usage.prompt_tokens == len(tokenizer(first_draft, add_special_tokens=False)["input_ids"]) > 5


async def test_the_stream_sends_each_step_as_it_is_kept_then_the_answer():
    release = asyncio.Event()
    steps = ("2 + 2 = 4", "so the sum is four", "</think>\n\\boxed{4}")
    holding = solver(steps)

    def small(body):
        reply = holding(body)
        # The second step waits until the client has read the first: kept steps reach it at once.
        if "so the sum" in reply.text:
            reply.after = release
        return reply

    async with api(small=small) as server:
        stream = await client(server.url).chat.completions.create(
            model="spec", messages=PROBLEM, stream=True, stream_options={"include_usage": True}
        )
        reasoning, content, last = [], [], None
        async for chunk in stream:
            last = chunk
            for choice in chunk.choices:
                delta = choice.delta.model_extra
                if "reasoning" in delta:
                    assert delta["reasoning_content"] == delta["reasoning"]
                    assert chunk.model_extra["spectra"] == {"track": 0}
                    reasoning.append(delta["reasoning"])
                    release.set()
                content.append(choice.delta.content or "")
    assert reasoning == ["2 + 2 = 4", "\n\nso the sum is four"]
    assert "".join(content) == "\\boxed{4}"
    assert last.choices == [] and last.usage.completion_tokens > 0 and last.model_extra["spectra"]["answer"] == "4"


@pytest.mark.parametrize(
    "body, status, says",
    [
        (b"{not json", 400, "the body is not valid JSON"),
        ({"model": "o1", "messages": PROBLEM}, 404, "model 'o1' is not offered here"),
        ({"model": "spec", "messages": [{"role": "system", "content": "Be brief."}]}, 400, "no user message"),
        ({"model": "spec", "messages": PROBLEM, "max_tokens": 100_000}, 400, "over this server's limit of 32768"),
        (
            {"model": "spec", "messages": PROBLEM, "spectra": {"tracks": "x"}},
            400,
            "spectra: argument --tracks: invalid int value: 'x'",
        ),
        ({"model": "spec", "messages": PROBLEM, "tools": [{"type": "function"}]}, 400, "tools is not supported"),
        ({"model": "spec", "messages": PROBLEM, "pad": "x" * 2000}, 413, "over the limit of 1000 (--max_body_bytes)"),
    ],
)
async def test_a_bad_request_gets_one_line_and_the_server_answers_the_next(body, status, says):
    async with api("--max_body_bytes", "1000") as server:
        sent = len(server.big.requests) + len(server.small.requests)
        got, answer, _ = await post(server.url, body)
        assert (got, answer["error"]["code"]) == (status, status)
        assert says in answer["error"]["message"] and "\n" not in answer["error"]["message"]
        assert len(server.big.requests) + len(server.small.requests) == sent  # nothing ran
        ok, answer, _ = await post(server.url, {"model": "spec", "messages": PROBLEM})
        assert ok == 200 and answer["spectra"]["answer"] == "4"


async def test_a_request_id_the_client_gives_must_be_a_fit_problem_id():
    async with api() as server:
        status, answer, _ = await post(server.url, {"model": "spec", "messages": PROBLEM}, {"X-Request-Id": "a/b"})
        assert status == 400 and "X-Request-Id must be 1 to 128 letters, digits or ._:-" in answer["error"]["message"]
        status, answer, _ = await post(server.url, {"model": "spec", "messages": PROBLEM}, {"X-Request-Id": "q-7.1"})
        record = answer["spectra"]["choices"][0]["record"]
        assert (status, answer["id"], record["problem_id"]) == (200, "q-7.1", "q-7.1")


async def test_with_a_key_every_v1_route_needs_it_and_nothing_runs_without_it(monkeypatch):
    monkeypatch.setenv("SPECTRA_API_KEY", "s3cret")
    async with api() as server:
        sent = len(server.small.requests)
        for key in ("none", "s3cre", "s3cret2"):
            with pytest.raises(openai.AuthenticationError, match="missing or wrong API key"):
                await client(server.url, key).chat.completions.create(model="spec", messages=PROBLEM)
        with pytest.raises(openai.AuthenticationError):
            await client(server.url, "wrong").models.list()
        assert len(server.small.requests) == sent
        answer = await client(server.url, "s3cret").chat.completions.create(model="spec", messages=PROBLEM)
        assert answer.choices[0].message.content == "\\boxed{4}"
        async with aiohttp.ClientSession() as session, session.get(f"{server.url}/health") as health:
            assert health.status == 200  # health needs no key


async def test_the_models_list_is_the_methods_offered():
    async with api() as server:
        listed = await client(server.url).models.list()
    names = [m.id for m in listed.data]
    assert names == list(server.service.catalog.methods) and "spec" in names and "big+vote" in names
    spec = next(m for m in listed.data if m.id == "spec")
    assert spec.model_extra["spectra"]["kind"] == "runner" and spec.model_extra["spectra"]["models"] == ["big", "small"]


async def test_health_is_503_while_a_model_server_is_down():
    async with FakeOpenAIServer(solver()) as big:
        small = await FakeOpenAIServer(solver()).__aenter__()
        settings, flags = api_flags(*model_flags(big, small))
        async with running_api("127.0.0.1", 0, settings, flags) as (url, _), aiohttp.ClientSession() as session:
            async with session.get(f"{url}/health") as health:
                assert health.status == 200 and (await health.json())["status"] == "ok"
            await small.__aexit__(None, None, None)
            async with session.get(f"{url}/health") as health:
                assert health.status == 503
                assert (await health.json())["error"]["message"] == "model server down: small"


async def test_past_the_queue_a_request_gets_429_with_retry_after_and_an_id_in_flight_409():
    hold = asyncio.Event()
    argv = ("--max_problems_in_flight", "1", "--max_queued_requests", "1")
    async with api(*argv, small=solver(hold=hold)) as server:
        body = {"model": "spec", "messages": PROBLEM}
        first = asyncio.create_task(post(server.url, body, {"X-Request-Id": "one"}))
        second = asyncio.create_task(post(server.url, body))  # waits for the slot
        while server.service.admitted < 2:
            await asyncio.sleep(0.01)
        status, answer, headers = await post(server.url, body)
        assert (status, headers["Retry-After"]) == (429, "1")
        assert "1 problems are waiting (--max_queued_requests 1)" in answer["error"]["message"]
        status, answer, _ = await post(server.url, {**body, "n": 3})
        assert status == 400 and "n 3 is more than this server ever holds at once (2" in answer["error"]["message"]
        status, answer, _ = await post(server.url, body, {"X-Request-Id": "one"})
        assert status == 409 and "a request with id 'one' is in flight" in answer["error"]["message"]
        hold.set()
        assert [(await first)[0], (await second)[0]] == [200, 200]
        assert (await first)[1]["id"] == "one"


async def test_a_problem_that_fails_answers_502_with_one_line():
    def refusing(body):
        if body["max_tokens"] == 1:
            return Reply(text="2")
        return Reply(status=400, error_message="This model's maximum context length is 64 tokens")

    async with api(small=refusing) as server:
        status, answer, _ = await post(server.url, {"model": "small+vote", "messages": PROBLEM})
        assert status == 502
        message = answer["error"]["message"]
        assert message.startswith("1 of 1 problems failed; first error:") and "maximum context length" in message
        assert (await post(server.url, {"model": "big+vote", "messages": PROBLEM}))[0] == 200


async def test_each_request_is_a_record_of_its_method_and_settings_that_the_evaluators_read(tmp_path, capsys):
    async with api("--output_dir", str(tmp_path)) as server:
        ids = []
        for seed in (1, 1, 2):
            answer = await client(server.url).chat.completions.create(model="spec", messages=PROBLEM, seed=seed, n=2)
            ids.append(answer.id)
    folders = sorted(p for p in tmp_path.iterdir() if p.name.startswith("spec-"))
    assert len(folders) == 2  # one per seed
    records = read_records(folders[0] / RECORDS_FILE).records + read_records(folders[1] / RECORDS_FILE).records
    assert sorted((r.problem_id, r.repeat_id) for r in records) == sorted((i, c) for i in ids for c in (0, 1))
    assert all(r.dataset == "api" and r.reference_answer is None and r.answer == "4" for r in records)
    # The folder of seed 2 holds one request's problem, two choices as its repeats.
    (single,) = [f for f in folders if len(read_records(f / RECORDS_FILE).records) == 2]
    manifest = json.loads((single / MANIFEST_FILE).read_text())
    assert manifest["runner"] == "spec" and manifest["dataset"] == "api" and manifest["servers"]["big"]["urls"]
    capsys.readouterr()
    assert evaluate([str(single)]) == 0
    accuracy_row = capsys.readouterr().out.splitlines()[3]
    assert accuracy_row.split()[:6] == [single.name, "spec+vote", "api", "1", "x", "2"]
    assert accuracy_row.split()[6:8] == ["0/2", "n/a"]  # no reference: accuracy not applicable


async def test_a_client_that_goes_away_cancels_its_problems_requests():
    hold = asyncio.Event()  # never set: the step request waits until its client goes away
    async with api(small=solver(hold=hold)) as server:
        request = asyncio.create_task(post(server.url, {"model": "spec", "messages": PROBLEM, "n": 2}))
        while server.small.in_flight < 2:
            await asyncio.sleep(0.01)
        request.cancel()
        await server.small.quiet()
        assert server.small.disconnects == 2  # the engine closed both choices' requests
        while server.service.admitted:
            await asyncio.sleep(0.01)
        assert (await post(server.url, {"model": "big+vote", "messages": PROBLEM}))[0] == 200


async def test_a_streaming_client_that_goes_away_cancels_its_problems_requests():
    hold = asyncio.Event()
    steps = ("2 + 2 = 4", "so the sum is four", "</think>\n\\boxed{4}")
    holding = solver(steps)

    def small(body):
        reply = holding(body)
        reply.after = hold if "so the sum" in reply.text else None
        return reply

    async with api(small=small) as server:
        async with aiohttp.ClientSession() as session:
            body = {"model": "spec", "messages": PROBLEM, "stream": True}
            async with session.post(f"{server.url}/v1/chat/completions", json=body) as response:
                async for line in response.content:
                    if b'"reasoning"' in line:  # the first step is kept
                        break
                while not server.small.in_flight:  # the second is at the server, held
                    await asyncio.sleep(0.01)
        await server.small.quiet()
        assert server.small.disconnects == 1
        while server.service.admitted:
            await asyncio.sleep(0.01)


async def test_a_stopping_server_finishes_the_requests_in_flight_and_turns_new_ones_away():
    hold = asyncio.Event()
    async with FakeOpenAIServer(solver()) as big, FakeOpenAIServer(solver(hold=hold)) as small:
        settings, flags = api_flags(*model_flags(big, small))
        serving = running_api("127.0.0.1", 0, settings, flags)
        url, service = await serving.__aenter__()
        in_flight = asyncio.create_task(post(url, {"model": "spec", "messages": PROBLEM}))
        while not small.in_flight:
            await asyncio.sleep(0.01)
        stopping = asyncio.create_task(serving.__aexit__(None, None, None))
        while not settings.draining:
            await asyncio.sleep(0.01)
        hold.set()
        status, answer, _ = await in_flight
        await stopping
    assert status == 200 and answer["spectra"]["answer"] == "4"
