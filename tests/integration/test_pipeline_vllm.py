"""Pipelined speculation on the tiny vLLM-CPU models: with greedy steps (temperature 0; the judge
is greedy already), a run at `--pipeline_depth` 1 and 2 writes the records of the sequential run.

The tiny random judge rates every step 0, so threshold 0 keeps every draft (the drafts made ahead
are all used) and threshold 7 rewrites every draft (the drafts made on top of it are thrown away)."""

import dataclasses

import pytest

from engine.reasoning.policies.spec import SpecSettings
from engine.reasoning.settings import ReasoningConfig
from engine.run.config import DataConfig, ModelConfig, RunConfig, SchedulerLimits
from engine.run.execute import execute

GREEDY = ReasoningConfig(token_budget=96, max_step_tokens=16, answer_max_tokens=8, temperature=0.0, seed=1)


def config_for(servers, tmp_path, depth: int, threshold: float) -> RunConfig:
    return RunConfig(
        runner="spec",
        output_dir=str(tmp_path / f"depth{depth}"),
        models={
            "big": ModelConfig(servers.big.model, (servers.big.url,)),
            "small": ModelConfig(servers.small.model, (servers.small.url,)),
        },
        policy_settings=SpecSettings(pipeline_depth=depth, score_threshold=threshold),
        reasoning=GREEDY,
        data=DataConfig(dataset_name="demo", problem_id="0-2"),
        # One problem at a time: each request then runs alone or beside the ones its own track
        # made ahead, never beside another problem's.
        limits=SchedulerLimits(max_problems_in_flight=1),
    )


def used_costs(costs) -> list[tuple]:
    """The requests a record used, without timings or what the server's prefix cache held then."""
    return sorted((c.role, c.purpose, c.prompt_tokens, c.completion_tokens) for c in costs if not c.wasted)


def tracks_without_timings_and_waste(record) -> list[dict]:
    tracks = []
    for track in record.tracks:
        data = dataclasses.asdict(track)
        for name in ("latency_s", "finished_at", "wasted"):
            data.pop(name)
        data["costs"] = used_costs(track.costs)
        for step, kept in zip(data["steps"], track.steps, strict=True):
            step.pop("latency_s"), step.pop("wasted")
            step["costs"] = used_costs(kept.costs)
        tracks.append(data)
    return tracks


@pytest.mark.parametrize(("threshold", "writer"), [(0.0, "small"), (7.0, "big")])
@pytest.mark.parametrize("depth", [1, 2])
async def test_a_pipelined_run_writes_the_records_of_the_sequential_one(
    vllm_servers, tmp_path, depth, threshold, writer
):
    sequential = await execute(config_for(vllm_servers, tmp_path, 0, threshold), progress=False)
    pipelined = await execute(config_for(vllm_servers, tmp_path, depth, threshold), progress=False)
    assert {s.writer for r in sequential.records for t in r.tracks for s in t.steps} == {writer}
    assert len(pipelined.records) == len(sequential.records) == 3
    for seq, pipe in zip(sequential.records, pipelined.records, strict=True):
        assert (pipe.problem_id, pipe.answer, pipe.votes) == (seq.problem_id, seq.answer, seq.votes)
        assert tracks_without_timings_and_waste(pipe) == tracks_without_timings_and_waste(seq)
    assert all(t.wasted == {} for r in sequential.records for t in r.tracks)
    wasted = [t.wasted for r in pipelined.records for t in r.tracks]
    if writer == "small":  # every draft made ahead was used, and none past the end of thinking
        assert wasted == [{}, {}, {}]
    else:  # each rejected draft had a draft made on top of it, thrown away
        assert all(w["small"].requests >= 1 for w in wasted)
