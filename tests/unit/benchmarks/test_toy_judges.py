"""The step judges' rows of the toy world (issue 32, point 6): the bound from measured costs, the
share of drafts kept, the target's verdict, the warm-up, and commands every runner accepts."""

from pathlib import Path

import aiohttp
import pytest

from benchmarks.toy_judges import (
    BIG_ALONE,
    JUDGE_MODES,
    judge_rows,
    judged_mode,
    kept_share,
    scored_prefix,
    speed_bound,
)
from benchmarks.toy_speed import Cost, warm_up
from benchmarks.toy_world import Figures, run_config
from engine.records import ProblemRecord, RequestCost, Role, StepOutcome, StepRecord, TrackRecord
from engine.run.config import ModelConfig
from engine.serving.servers import RunningServer
from tests.fake_openai import FakeOpenAIServer, Reply

MODELS = {
    name: ModelConfig(model=name.upper(), urls=(f"http://{name}",)) for name in ("big", "small", "prm", "prm_token")
}


def judged(outcome: StepOutcome, tokens: int = 10, prompt_tokens: int = 60, seconds: float = 0.03) -> StepRecord:
    """A step whose draft a PRM rated (its entry marked with the judge), kept or rewritten."""
    cost = RequestCost(Role.PRM, "prm", "http://prm", "PRM", prompt_tokens=prompt_tokens, client_s=seconds, judge="prm")
    return StepRecord(index=0, text="x", writer=Role.SMALL, tokens=tokens, outcome=outcome, costs=[cost])


def record(*steps: StepRecord) -> ProblemRecord:
    track = TrackRecord(track_id=0, steps=list(steps))
    return ProblemRecord("run", "toy", "0", 0, "spec", "problem", "1", tracks=[track])


KEPT, REWRITTEN = StepOutcome.ACCEPTED, StepOutcome.REWRITTEN


def test_the_bound_is_the_draft_and_the_score_and_the_rejected_share_of_a_big_step_over_a_big_step():
    # 10 tokens: small 4 ms, big 36 ms a token, a 30 ms score, 75% kept: (40 + 30 + 0.25 x 360) / 360
    assert speed_bound(10, 4.0, 36.0, 30.0, 0.75) == pytest.approx(160 / 360)
    # every draft kept and free scores: the small model's share of the cost a token
    assert speed_bound(10, 4.0, 36.0, 0.0, 1.0) == pytest.approx(4 / 36)


def test_drafts_kept_count_the_checked_steps_only_and_the_prefix_leaves_out_the_judged_step():
    records = [
        record(judged(KEPT, prompt_tokens=50), judged(REWRITTEN, prompt_tokens=70)),
        record(judged(KEPT, prompt_tokens=90), StepRecord(index=1, text="y", writer=Role.BIG, tokens=99)),
    ]
    assert kept_share(records) == pytest.approx(2 / 3)
    assert kept_share([record(StepRecord(index=0, text="y", writer=Role.BIG, tokens=5))]) is None
    # scores read 70 tokens on average, a judged step is 10
    assert scored_prefix(records) == 60


def test_rows_judge_the_prm_against_the_target_and_put_each_one_draft_bound_beside_it():
    latency = {BIG_ALONE.name: 2.0, "spec@1": 1.6, "spec_prm@1": 1.0, "spec_prm_token@1": 0.9}
    accuracy = {"spec_prm@1": 0.95, "spec_prm_token@1": 0.94}
    figures = {
        m.name: Figures(10, accuracy.get(m.name, 1.0), {"small": 50.0, "big": 12.0}, latency.get(m.name, 1.2), 1.0)
        for m in JUDGE_MODES
    }
    judged_steps = [record(judged(KEPT), judged(KEPT), judged(KEPT), judged(REWRITTEN, seconds=0.05))]
    records = {m.name: judged_steps for m in JUDGE_MODES}
    records[BIG_ALONE.name] = [record(StepRecord(index=0, text="all", writer=Role.BIG, tokens=60))]
    costs = {"small": Cost(4.0, 0.0, 0.0), "big": Cost(36.0, 0.0, 0.0)}
    scores = {"judge": 100.0, "prm": 30.0, "prm_token": 20.0}
    commands = {m.name: f"CMD {m.name}" for m in JUDGE_MODES}
    rows = judge_rows(figures, records, costs, scores, 150, commands)
    assert [row[0] for row in rows] == [
        "big@1",
        "spec@1",
        "  spec@1: bound from measured costs",
        "spec_prm@1",
        "  spec_prm@1: bound from measured costs",
        "spec_prm_token@1",
        "  spec_prm_token@1: bound from measured costs",
        "spec_drafts2@1",
        "spec_prm_drafts2@1",
        "spec_prm_token_drafts2@1",
        "spec_drafts3@1",
        "spec_prm_drafts3@1",
        "spec_prm_token_drafts3@1",
    ]
    by_name = {row[0]: row for row in rows}
    assert by_name["big@1"][1].startswith("100.0% right, no drafts, big 12.0 tokens/problem, 2.00 s/problem")
    assert by_name["spec_prm@1"][1] == (
        "95.0% right, 75.0% of steps kept a draft, big 12.0 tokens/problem, 1.00 s/problem, 0.50x big's latency"
    )
    # at 0.5x and 95% of the big model's accuracy it passes; 94% misses however fast
    assert [by_name[n][3] for n in ("spec@1", "spec_prm@1", "spec_prm_token@1")] == ["", "PASS", "MISS"]
    bound = by_name["  spec_prm@1: bound from measured costs"]
    assert bound[1] == (
        "0.44x = (10.0 x 4.0 + 30 + (1 - 0.75) x 10.0 x 36.0) / (10.0 x 36.0) ms; its scores in the run: median 30 ms"
    )
    assert bound[4].endswith("at a 150-token prefix")
    assert by_name["  spec_prm_token@1: bound from measured costs"][1].startswith("0.42x")
    assert by_name["spec_prm_drafts2@1"][4] == "CMD spec_prm_drafts2@1"


def test_every_judged_mode_is_a_command_its_runner_accepts_with_the_prm_it_names(tmp_path):
    for mode in JUDGE_MODES:
        config = run_config(mode, MODELS, 100, tmp_path)
        assert config.limits.max_problems_in_flight == 1, mode.name
    pooling, token = run_config(judged_mode("prm"), MODELS, 4, tmp_path), judged_mode("prm_token", 3)
    assert pooling.model("prm").model == "PRM" and pooling.policy_settings.prm_kind == "pooling"
    token_config = run_config(token, MODELS, 4, tmp_path)
    assert token_config.model("prm").model == "PRM_TOKEN" and token_config.policy_settings.prm_kind == "tag_token"
    assert token_config.policy_settings.drafts_per_step == 3 and token_config.reasoning.temperature == 0.6


async def test_the_warm_up_asks_each_server_once_and_the_pooling_one_to_pool(tmp_path: Path):
    async with (
        FakeOpenAIServer([Reply(text="1")]) as big,
        FakeOpenAIServer(pooler=lambda body: [[0.1, 0.9]]) as prm,
    ):
        servers = {
            name: RunningServer(name, server.url, server.served_model, 0, tmp_path / name)
            for name, server in (("big", big), ("prm", prm))
        }
        async with aiohttp.ClientSession() as session:
            await warm_up(session, servers, pooling=("prm",))
    assert [body["max_tokens"] for body in big.requests] == [1] and not big.pooling_requests
    assert len(prm.pooling_requests) == 1 and not prm.requests
