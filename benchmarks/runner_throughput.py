"""How many reasoning steps per second one runner process sustains, so a fleet knows how many to start.

The sim server answers at once (no request or token latency, capacity for every request), so the
only limit left is CPU: the engine process's own, and the sim's in its process. At each
concurrency level (problems x tracks in flight) the real engine runs `spec` with every draft
accepted, so a step is one draft (small model) and one score (big model). Printed: steps/s and
requests/s sustained, the engine's CPU per step and how busy its core was (1.00 = a full core),
the sim's CPU per step, and the rule of thumb: GPU pairs that together serve S steps/s need
ceil(S / sustained) runner processes (`--shard`), with an example on assumed GPU figures.

A measurement with no target: it always exits 0. On a shared machine other processes take CPU
from the engine, so its steps/s there are a floor; the rule rests on its CPU per step, which
their load moves far less: sustained = 1 / (engine CPU per step), a runner with a core of its own.

Run from the repository root: `python -m benchmarks.runner_throughput` (under a minute).
"""

from __future__ import annotations

import argparse
import math
import os
import sys
from dataclasses import dataclass

from benchmarks.harness import (
    Measured,
    add_models_dir_argument,
    bench_chat_format,
    bench_config,
    bench_problems,
    bench_session,
    print_table,
    run_engine,
    sim_models,
    sim_process,
    sim_stats,
)
from benchmarks.sim_behaviour import Latency, SimConfig
from engine.logging import configure_logging
from engine.loop import run
from engine.reasoning.settings import ReasoningConfig
from engine.serving.chat import ChatFormat
from engine.serving.endpoints import ClientLimits

# No latency and room for every request: the sim is never what the engine waits for. Every
# score accepts its draft (accept_rate 1), so each step is exactly a draft and a score.
INSTANT = Latency(request_s=0.0, token_s=0.0, capacity=100_000)
SIM = SimConfig(models={"small": INSTANT, "big": INSTANT}, steps_per_track=16, step_tokens=32, accept_rate=1.0)
REASONING = ReasoningConfig(seed=0, max_step_tokens=64, token_budget=8192, answer_max_tokens=16)
LIMITS = ClientLimits(max_in_flight_per_endpoint=4096, request_timeout_s=60.0, stall_timeout_s=10.0, max_attempts=1)
TRACKS = 8
# Below this share of a core the engine waited for something else (other processes' CPU on a
# shared machine, the sim), so its steps/s are a floor of what a runner with a core does.
SATURATED = 0.9
# (problems in flight, problems run): each level runs a few seconds.
LEVELS = ((1, 8), (4, 16), (16, 32), (32, 48))
# Assumed, for the example only: the fleet's GPU pairs, the tokens/s one pair's small model
# drafts over all its tracks at once, and the mean length of a step (SpecReason's end at "\n\n").
ASSUMED_PAIRS = 8
ASSUMED_PAIR_TOKENS_PER_S = 20_000.0
ASSUMED_STEP_TOKENS = 100.0


@dataclass
class Level:
    """One concurrency level's run, and the sim's CPU time it took."""

    problems_in_flight: int
    measured: Measured
    requests: int
    sim_cpu_s: float

    @property
    def tracks_in_flight(self) -> int:
        return self.problems_in_flight * TRACKS

    @property
    def steps_per_s(self) -> float:
        return self.measured.steps / self.measured.wall_s

    @property
    def requests_per_s(self) -> float:
        return self.requests / self.measured.wall_s

    @property
    def cpu_ms_per_step(self) -> float:
        return 1000 * self.measured.cpu_s / self.measured.steps

    @property
    def engine_busy(self) -> float:
        """Share of one core the engine process used over the run (1.00: its CPU is the limit)."""
        return self.measured.cpu_s / self.measured.wall_s


def runner_processes(fleet_steps_per_s: float, sustained_steps_per_s: float) -> int:
    """Runner processes that keep GPUs serving `fleet_steps_per_s` (S) busy: ceil(S / sustained)."""
    if fleet_steps_per_s <= 0 or sustained_steps_per_s <= 0:
        raise ValueError("steps per second must be positive")
    return math.ceil(fleet_steps_per_s / sustained_steps_per_s)


async def measure(chat: ChatFormat) -> list[Level]:
    """Warm up, then run each level on one sim process; the sim's CPU per level from its /stats."""
    levels = []
    async with bench_session() as session, sim_process(SIM) as url:
        models = sim_models(session, url, chat, LIMITS)
        await run_engine(_config(1), models, bench_problems(1, start=1000))
        for problems_in_flight, count in LEVELS:
            before = await sim_stats(session, url)
            measured = await run_engine(_config(problems_in_flight), models, bench_problems(count))
            after = await sim_stats(session, url)
            requests = sum(u.requests for t in measured.tracks for u in t.usage.values())
            levels.append(Level(problems_in_flight, measured, requests, after["cpu_s"] - before["cpu_s"]))
    return levels


def _config(problems_in_flight: int):
    return bench_config(
        REASONING, tracks=TRACKS, problems_in_flight=problems_in_flight, tracks_in_flight=TRACKS * problems_in_flight
    )


def report(levels: list[Level], pairs: float, pair_tokens_per_s: float, step_tokens: float) -> None:
    rows = []
    for level in levels:
        steps, wall = level.measured.steps, level.measured.wall_s
        rates = f"{level.steps_per_s:.0f} steps/s, {level.requests_per_s:.0f} requests/s"
        rows += [
            (
                f"{level.problems_in_flight} problems x {TRACKS} tracks in flight ({level.tracks_in_flight} tracks)",
                f"{rates} ({steps} steps in {wall:.2f} s)",
                "-",
                "engine-bound" if level.engine_busy >= SATURATED else "engine not saturated: a floor",
            ),
            (
                "    engine CPU per step / engine core busy / sim CPU per step",
                f"{level.cpu_ms_per_step:.2f} ms / {level.engine_busy:.2f} / {1000 * level.sim_cpu_s / steps:.2f} ms",
                "",
                "",
            ),
        ]
    # The engine is CPU-bound here (its core ~0.97 busy on a quiet machine, its steps/s then
    # within 5% of 1 / CPU per step), and other processes' load moves its CPU per step far less
    # than its steps/s on a shared machine. So the rule rests on a core of its own at the
    # dearest level: more tracks in flight cost a little more CPU a step.
    dearest = max(levels, key=lambda level: level.cpu_ms_per_step)
    sustained = 1000 / dearest.cpu_ms_per_step
    fleet_steps = pairs * pair_tokens_per_s / step_tokens
    rows += [
        (
            "sustained by one runner process with a core of its own (1 / dearest CPU per step)",
            f"{sustained:.0f} steps/s ({dearest.tracks_in_flight} tracks in flight)",
            "",
            "",
        ),
        (
            "every track as scripted, each step a draft and a score",
            str(all(_as_scripted(level) for level in levels)),
            "",
            "",
        ),
        ("load average (1 min)", f"{os.getloadavg()[0]:.2f}", "", ""),
    ]
    print_table("steps one runner process sustains against an instant sim (spec: a draft and a score a step)", rows)
    needed = runner_processes(fleet_steps, sustained)
    print(
        "\nrule of thumb: GPU pairs serving S steps/s in all need ceil(S / sustained) runner processes"
        f"\nexample on ASSUMED GPU figures: {pairs:g} pairs x {pair_tokens_per_s:.0f} small-model tokens/s "
        f"/ {step_tokens:.0f} tokens a step = S = {fleet_steps:.0f} steps/s -> "
        f"ceil({fleet_steps:.0f} / {sustained:.0f}) = {needed} runner processes"
    )


def _as_scripted(level: Level) -> bool:
    """Every track thought the sim's `steps_per_track` steps, and made two requests a step."""
    tracks = level.measured.tracks
    return all(len(t.steps) == SIM.steps_per_track for t in tracks) and level.requests == 2 * level.measured.steps


def _positive(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be more than 0, not {text}")
    return value


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    add_models_dir_argument(parser)
    parser.add_argument("--pairs", type=_positive, default=ASSUMED_PAIRS, help="for the example: GPU pairs (assumed)")
    parser.add_argument(
        "--pair_tokens_per_s",
        type=_positive,
        default=ASSUMED_PAIR_TOKENS_PER_S,
        help="for the example: tokens/s the pair's small model generates over all tracks (assumed)",
    )
    parser.add_argument(
        "--step_tokens", type=_positive, default=ASSUMED_STEP_TOKENS, help="for the example: mean step tokens (assumed)"
    )
    args = parser.parse_args(argv)
    configure_logging(level="warning")
    levels = run(measure(bench_chat_format(args.models_dir)))
    report(levels, args.pairs, args.pair_tokens_per_s, args.step_tokens)
    return 0  # a measurement with no target


if __name__ == "__main__":
    sys.exit(main())
