"""Pipelined speculation on the tiny vLLM-CPU models: with greedy steps (temperature 0; the judge
is greedy already), a run at `--pipeline_depth` 1 and 2 writes the records of the sequential run.

Random weights write random text, so the drafts are kept or rewritten at random: both happen over
a few problems, which is what the comparison needs."""

import dataclasses

import pytest

from engine.config import DataConfig, ModelConfig, ReasoningConfig, RunConfig, SchedulerLimits
from engine.policies.spec import SpecSettings
from engine.run import execute

GREEDY = ReasoningConfig(token_budget=96, max_step_tokens=16, answer_max_tokens=8, temperature=0.0, seed=1)


def config_for(servers, tmp_path, depth: int) -> RunConfig:
    return RunConfig(
        runner="spec",
        output_dir=str(tmp_path / f"depth{depth}"),
        models={
            "big": ModelConfig(servers.big.model, (servers.big.url,)),
            "small": ModelConfig(servers.small.model, (servers.small.url,)),
        },
        policy_settings=SpecSettings(pipeline_depth=depth),
        reasoning=GREEDY,
        data=DataConfig(dataset_name="demo", problem_id="0-2"),
        # One problem at a time: each request then runs alone or beside the ones its own track
        # made ahead, never beside another problem's.
        limits=SchedulerLimits(max_problems_in_flight=1),
    )


def tracks_without_timings_and_waste(record) -> list[dict]:
    tracks = []
    for track in record.tracks:
        data = dataclasses.asdict(track)
        for name in ("latency_s", "finished_at", "wasted"):
            data.pop(name)
        for step in data["steps"]:
            step.pop("latency_s"), step.pop("wasted")
        tracks.append(data)
    return tracks


@pytest.mark.parametrize("depth", [1, 2])
async def test_a_pipelined_run_writes_the_records_of_the_sequential_one(vllm_servers, tmp_path, depth):
    sequential = await execute(config_for(vllm_servers, tmp_path, 0), progress=False)
    pipelined = await execute(config_for(vllm_servers, tmp_path, depth), progress=False)
    writers = {s.writer for r in sequential.records for t in r.tracks for s in t.steps}
    assert writers == {"small", "big"}, "the comparison needs kept and rewritten drafts"
    assert len(pipelined.records) == len(sequential.records) == 3
    for seq, pipe in zip(sequential.records, pipelined.records, strict=True):
        assert (pipe.problem_id, pipe.answer, pipe.votes) == (seq.problem_id, seq.answer, seq.votes)
        assert tracks_without_timings_and_waste(pipe) == tracks_without_timings_and_waste(seq)
        for track in pipe.tracks:
            assert track.wasted == {} or track.wasted["small"].requests >= 1
    assert all(t.wasted == {} for r in sequential.records for t in r.tracks)
