"""Before a run times anything, every server it calls gets one request: a short greedy completion,
or a pooling request where the run reads the server by pooling; a warm-up that fails is a warning."""

import json

import structlog

from engine.reasoning.strategies import STRATEGIES
from engine.run.config import ModelConfig, RunConfig
from engine.run.store import RECORDS_FILE, read_records
from engine.run.warmup import WARM_UP_TOKENS, pooled_roles, warm_servers
from engine.serving.chat import ChatFormat
from engine.serving.client import ModelClient
from engine.serving.models import Model
from runners.spectra import main
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.paths import REPO_ROOT
from tests.threaded_server import served_in_a_thread
from tests.unit.conftest import FAST_LIMITS, chatml_tokenizer

TOY_TOKENIZER = REPO_ROOT / "engine" / "toy" / "weights" / "tokenizer"


def search_config(tmp_path, prm_kind: str, **models: tuple[str, ...]) -> RunConfig:
    settings = STRATEGIES["best_of_n"].settings(scorer="prm", prm_kind=prm_kind)
    return RunConfig(
        runner="search",
        output_dir=str(tmp_path),
        models={role: ModelConfig(role, urls) for role, urls in models.items()},
        policy="small",
        strategy="best_of_n",
        strategy_settings=settings,
        client=FAST_LIMITS,
    )


def handles(session, config: RunConfig) -> dict[str, Model]:
    chat = ChatFormat(chatml_tokenizer(), thinking=True)
    return {
        role: Model(role, ModelClient(session, role, list(m.urls), FAST_LIMITS), chat)
        for role, m in config.models.items()
    }


async def test_every_replica_of_every_role_gets_one_request_and_a_pooling_prm_a_pooling_one(session, tmp_path):
    async with (
        FakeOpenAIServer(lambda body: Reply("hello")) as small_a,
        FakeOpenAIServer(lambda body: Reply("hello")) as small_b,
        FakeOpenAIServer(pooler=lambda body: [[0.5, 0.5]]) as prm,
    ):
        config = search_config(tmp_path, "pooling", small=(small_a.url, small_b.url), prm=(prm.url,))
        warmed = await warm_servers(config, session, handles(session, config))
    assert set(warmed) == {small_a.url, small_b.url, prm.url}
    for server in (small_a, small_b):
        (body,) = server.requests
        assert server.purposes == ["warm_up"] and server.pooling_requests == []
        assert body["temperature"] == 0.0 and body["max_tokens"] == WARM_UP_TOKENS and "seed" not in body
    assert prm.requests == [] and prm.pooling_purposes == ["warm_up"]


def test_only_servers_read_by_pooling_get_a_pooling_request(tmp_path):
    assert pooled_roles(search_config(tmp_path, "pooling", small=("u",), prm=("u",))) == {"embedder", "prm"}
    for kind in ("token", "tag_token"):  # a causal LM either way: a completion warms it
        assert pooled_roles(search_config(tmp_path, kind, small=("u",), prm=("u",))) == {"embedder"}


async def test_a_failed_warm_up_is_a_warning_and_leaves_the_server_out(session, tmp_path):
    async with FakeOpenAIServer(lambda body: Reply(status=400, error_message="no")) as refusing:
        config = search_config(tmp_path, "pooling", small=(refusing.url,))
        with structlog.testing.capture_logs() as logs:
            warmed = await warm_servers(config, session, handles(session, config))
    assert warmed == {}
    (warning,) = [e for e in logs if e["log_level"] == "warning"]
    assert warning["event"] == "warm_up_failed" and warning["url"] == refusing.url


def test_a_run_from_the_command_line_warms_its_server_before_its_first_problem(tmp_path, capsys):
    problems = tmp_path / "problems.jsonl"
    problems.write_text(
        "".join(json.dumps({"id": str(i), "problem": "What is 2 + 2?", "answer": "4"}) + "\n" for i in range(2))
    )
    server = FakeOpenAIServer(lambda body: Reply("So \\boxed{4}"))
    out = tmp_path / "run"
    flags = ["--runner", "base", "--big_model", "fake-model", "--big_tokenizer", str(TOY_TOKENIZER)]
    flags += ["--dataset_name", str(problems), "--output_dir", str(out), "--no_progress"]
    with served_in_a_thread(server) as url:
        assert main(["run", *flags, "--big_url", url]) == 0
    # one warm-up, then the two problems' requests (runner base: one request a problem)
    assert server.purposes == ["warm_up", "step", "step"]
    records = read_records(out / RECORDS_FILE).records
    assert all(c.purpose != "warm_up" for r in records for t in r.tracks for c in t.costs), "a warm-up is no problem's"
