"""What the benchmarks share: the sim server in its own process, the real engine wired to it, and
the time the sim's latency model says a run needs at the least (its critical path).

Critical path of a run (no faults, no early stop, and the server never queueing a request, which
the sim's `queued` counter confirms):
- a track's model time is the sum, over the requests it made, of the sim's latency of each:
  `sum over models m of requests_m * request_s_m + completion_tokens_m * token_s_m`, read from
  the track's record (a track's requests run one after another);
- a problem's model time is that of its slowest track (its tracks run at once, as long as
  `max_tracks_in_flight >= max_problems_in_flight * tracks`);
- problems start in order, each as soon as one of `max_problems_in_flight` slots frees, so the
  run's critical path is the makespan of that list schedule of problem model times.
"""

from __future__ import annotations

import argparse
import asyncio
import heapq
import sys
import tempfile
import time
from collections.abc import AsyncIterator, Callable, Iterable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path

import aiohttp

from benchmarks.sim_behaviour import Latency, SimConfig
from benchmarks.sim_server import READY_PREFIX
from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.errors import ServerStartError
from engine.reasoning.policies.spec import SpecSettings
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies.vote import VoteSettings
from engine.records import ProblemRecord, TrackRecord
from engine.run.config import ModelConfig, RunConfig, SchedulerLimits
from engine.run.scheduler import Scheduler, WorkItem
from engine.serving.chat import ChatFormat, load_chat_format
from engine.serving.client import ModelClient
from engine.serving.endpoints import ClientLimits
from engine.serving.models import Model
from engine.toy.tiny import make_tiny_models

REPO_ROOT = Path(__file__).resolve().parents[1]
SIM_START_TIMEOUT_S = 60.0


@asynccontextmanager
async def sim_process(config: SimConfig) -> AsyncIterator[str]:
    """Run `benchmarks.sim_server` in its own process for the block; yields its base URL."""
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "benchmarks.sim_server",
        "--config",
        config.to_json(),
        cwd=REPO_ROOT,
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        try:
            line = (await asyncio.wait_for(process.stdout.readline(), SIM_START_TIMEOUT_S)).decode()
        except TimeoutError:
            line = ""
        if not line.startswith(READY_PREFIX):
            raise ServerStartError(
                f"the sim server did not start (it said {line!r}); run "
                "`python -m benchmarks.sim_server` from the repository root to see why"
            )
        yield line[len(READY_PREFIX) :].strip()
    finally:
        if process.returncode is None:
            process.terminate()
        await process.wait()


async def sim_stats(session: aiohttp.ClientSession, url: str) -> dict:
    """The sim server's counters (`GET /stats`)."""
    async with session.get(url + "/stats") as response:
        response.raise_for_status()
        return await response.json()


def bench_session() -> aiohttp.ClientSession:
    """One session as `engine.run.execute` makes it: concurrency is bounded by the clients, not the connector."""
    return aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))


def add_models_dir_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--models_dir",
        type=Path,
        default=Path(tempfile.gettempdir()) / "spectra-bench-tiny-models",
        help="where the tiny models (for their chat template) are built once",
    )


def bench_chat_format(models_dir: Path) -> ChatFormat:
    """The chat template of the tiny models (built offline, reused when already there), thinking on."""
    tiny = make_tiny_models(models_dir)
    return load_chat_format(str(tiny.big), thinking="on")


def sim_models(session: aiohttp.ClientSession, url: str, chat: ChatFormat, limits: ClientLimits) -> dict[str, Model]:
    """The engine's small and big models, both served by the sim at `url`."""
    return {role: Model(role, ModelClient(session, role, [url], limits), chat) for role in ("small", "big")}


def bench_config(
    reasoning: ReasoningConfig,
    *,
    tracks: int,
    problems_in_flight: int,
    tracks_in_flight: int,
    policy_settings: SpecSettings | None = None,
) -> RunConfig:
    return RunConfig(
        runner="benchmark",
        output_dir="unused",
        models={"big": ModelConfig("big"), "small": ModelConfig("small")},
        policy="spec",
        policy_settings=policy_settings,
        strategy_settings=VoteSettings(tracks=tracks),
        reasoning=reasoning,
        limits=SchedulerLimits(max_tracks_in_flight=tracks_in_flight, max_problems_in_flight=problems_in_flight),
    )


def bench_problems(count: int, start: int = 0) -> list[Problem]:
    return [
        Problem(id=str(i), problem=f"Benchmark problem {i}: what is {i} squared?", answer=None)
        for i in range(start, start + count)
    ]


@dataclass
class Measured:
    """One run of the scheduler: its records in problem order, wall time, this process's CPU time."""

    records: list[ProblemRecord]
    wall_s: float
    cpu_s: float
    tracks: list[TrackRecord] = field(init=False)

    def __post_init__(self) -> None:
        self.tracks = [t for r in self.records for t in r.tracks]

    @property
    def steps(self) -> int:
        return sum(len(t.steps) for t in self.tracks)


async def run_engine(
    config: RunConfig,
    models: dict[str, Model],
    problems: list[Problem],
    on_record: Callable[[ProblemRecord], None] | None = None,
    *,
    keep: bool = True,
) -> Measured:
    """Run the real scheduler over `problems`; wall and CPU time cover `Scheduler.run` only.

    With `keep` off the records are only handed to `on_record`, so memory measures the engine alone.
    """
    done: dict[str, ProblemRecord] = {}

    def handle(record: ProblemRecord) -> None:
        if keep:
            done[record.problem_id] = record
        if on_record is not None:
            on_record(record)

    scheduler = Scheduler(
        config, models, load_prompt_set(config.prompt_set), run_id="benchmark", dataset="sim", on_record=handle
    )
    wall, cpu = time.perf_counter(), time.process_time()
    await scheduler.run([WorkItem(p, 0) for p in problems])
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return Measured([done[p.id] for p in problems if p.id in done], wall, cpu)


def track_model_time(track: TrackRecord, latencies: dict[str, Latency]) -> float:
    """Seconds the sim's latency model gives the requests `track` made, one after another."""
    return sum(
        latencies[m].request_s * u.requests + latencies[m].token_s * u.completion_tokens for m, u in track.usage.items()
    )


def critical_path_s(records: Iterable[ProblemRecord], latencies: dict[str, Latency], problems_in_flight: int) -> float:
    """Makespan of problems (in order, each as long as its slowest track) on `problems_in_flight` slots."""
    free_at = [0.0] * problems_in_flight
    end = 0.0
    for record in records:
        start = heapq.heappop(free_at)
        finish = start + max(track_model_time(t, latencies) for t in record.tracks)
        heapq.heappush(free_at, finish)
        end = max(end, finish)
    return end


def print_table(title: str, rows: list[tuple[str, str, str, str]]) -> None:
    """Print `rows` of (figure, value, target, result) under `title`, columns aligned."""
    header = ("figure", "value", "target", "result")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(4)]
    print(title)
    for row in [header, *rows]:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip())


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"
