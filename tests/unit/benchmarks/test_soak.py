"""`benchmarks.soak` counts what the engine really does: on its own sim (faults and latency aside),
every track ends as scripted, with the answer stated in its last step, and the tracks agree."""

import dataclasses

from benchmarks.harness import bench_config, bench_problems, run_engine
from benchmarks.sim_behaviour import Latency
from benchmarks.sim_server import SimServer
from benchmarks.soak import PROBLEMS_IN_FLIGHT, REASONING, SIM, TRACKS, Tally

PROBLEMS = 3
QUICK = Latency(request_s=0.0, token_s=0.0, capacity=64)


async def test_the_soak_s_tracks_end_as_scripted_on_its_sim(make_models, tmp_path):
    config = dataclasses.replace(SIM, fault_rate=0.0, models={"small": QUICK, "big": QUICK})
    tally = Tally(tmp_path / "records.jsonl", PROBLEMS)
    run = bench_config(REASONING, tracks=TRACKS, problems_in_flight=PROBLEMS_IN_FLIGHT, tracks_in_flight=64)
    async with SimServer(config) as sim:
        await run_engine(run, make_models(big=sim, small=sim), bench_problems(PROBLEMS), on_record=tally, keep=False)
    assert (tally.problems, tally.tracks, tally.failed_tracks) == (PROBLEMS, PROBLEMS * TRACKS, 0)
    assert tally.scripted_tracks == PROBLEMS * TRACKS
    assert tally.agreed == PROBLEMS
