"""What the API door costs: the same 64 problems through the in-process runner and through
`spectra api`, both against the sim at the costly toy pair's calibration (issue 35, point 9).

The runner is `engine.run.execute` on a data file of the 64 problems at `--max_problems_in_flight
64`; the API is `spectra api` in its own process at the same limits, asked by 64 client coroutines
at once from this process (plain aiohttp, one connection each). Both run `spec` (one track) with
the default prompt set (`spectra.prompt_set`), so the sim sees the same prompts and makes the same
accept and rewrite decisions on both sides, and both write their records. A problem's latency is,
for the runner, its record's (its solve, start to end), for the API the client's round trip (HTTP,
JSON, config, solve, record, answer). Printed: p50 and p95 latency and problems (requests) per
second of each, and the API's p50 over the runner's against the target of 1.05.

The sim's latency (`benchmarks.sim_behaviour.Latency`) is the costly toy pair's on vLLM-CPU
(benchmarks/README.md, "Speed on a cost-realistic pair"): 4.0 ms a decoded token for the small
model, 35.9 ms for the costly big one, and a request's own cost the costly big model's cached-prefix
score (134 ms), scaled by the decode ratio for the small model; a step is 10 tokens, as the toy
task's are. Run from the repository root: `python -m benchmarks.api_throughput` (about a minute).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from benchmarks.harness import REPO_ROOT, add_models_dir_argument, print_table, sim_process, sim_stats, verdict
from benchmarks.sim_behaviour import Latency, SimConfig
from engine.logging import configure_logging
from engine.loop import run
from engine.run.configure import config_of_command
from engine.run.execute import execute
from engine.toy.tiny import make_tiny_models

PROBLEMS = 64
SMALL_TOKEN_S, BIG_TOKEN_S, BIG_REQUEST_S = 0.0040, 0.0359, 0.134
SIM = SimConfig(
    models={
        "small": Latency(request_s=BIG_REQUEST_S * SMALL_TOKEN_S / BIG_TOKEN_S, token_s=SMALL_TOKEN_S, capacity=128),
        "big": Latency(request_s=BIG_REQUEST_S, token_s=BIG_TOKEN_S, capacity=128),
    },
    steps_per_track=6,
    step_tokens=10,
)
TARGET = 1.05
API_START_TIMEOUT_S = 120.0


@dataclass
class Side:
    """One way through: each problem's latency, and the wall time of them all."""

    name: str
    latencies: list[float]
    wall_s: float

    def quantile(self, q: float) -> float:
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[round(q * 100) - 1]

    @property
    def per_s(self) -> float:
        return len(self.latencies) / self.wall_s


def problem_text(problem: str) -> str:
    return f"Benchmark problem {problem}: what is {problem} squared?"


def problems_file(path: Path, ids: list[str]) -> Path:
    path.write_text("".join(json.dumps({"id": i, "problem": problem_text(i), "answer": None}) + "\n" for i in ids))
    return path


def model_flags(url: str, tokenizers: Path) -> list[str]:
    """Both models served by the sim; their chat template the tiny models' (thinking on)."""
    tiny = make_tiny_models(tokenizers)
    flags = ["--thinking", "on", "--max_problems_in_flight", str(PROBLEMS), "--max_tracks_in_flight", str(PROBLEMS)]
    for role, path in (("big", tiny.big), ("small", tiny.small)):
        flags += [f"--{role}_model", role, f"--{role}_url", url, f"--{role}_tokenizer", str(path)]
    return flags


async def through_the_runner(flags: list[str], folder: Path) -> Side:
    """A warm-up run of one problem, then the run of them all; its wall time from the first
    problem's start to the last one's end (the run's start-up, as the API's, left out)."""
    runs = {"warm-up": ["warm-up"], "runner": [str(i) for i in range(PROBLEMS)]}
    for name, ids in runs.items():
        data = problems_file(folder / f"{name}.jsonl", ids)
        config = config_of_command("spec", [*flags, "--dataset_name", str(data), "--output_dir", str(folder / name)])
        outcome = await execute(config, progress=False)
    records = outcome.records
    wall = max(r.finished_at for r in records) - min(r.started_at for r in records)
    return Side("runner (in process)", [r.latency_s for r in records], wall)


async def through_the_api(flags: list[str], folder: Path) -> Side:
    argv = ["-m", "runners.spectra", "api", *flags, "--port", "0", "--output_dir", str(folder / "api")]
    process = await asyncio.create_subprocess_exec(
        sys.executable, *argv, "--log_level", "warning", cwd=REPO_ROOT, stdout=asyncio.subprocess.PIPE
    )
    try:
        line = (await asyncio.wait_for(process.stdout.readline(), API_START_TIMEOUT_S)).decode()
        if not line.startswith("spectra api: serving "):
            raise RuntimeError(f"spectra api did not start (it said {line!r})")
        url = line.rsplit(" ", 1)[1].strip()
        async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
            await _ask(session, url, "warm-up")
            started = time.perf_counter()
            latencies = await asyncio.gather(*(_ask(session, url, str(i)) for i in range(PROBLEMS)))
            wall = time.perf_counter() - started
        return Side("spectra api (64 clients)", list(latencies), wall)
    finally:
        process.send_signal(signal.SIGTERM)
        await process.wait()


async def _ask(session: aiohttp.ClientSession, url: str, problem: str) -> float:
    """One client's request for one problem: its round trip in seconds."""
    body = {
        "model": "spec",
        "messages": [{"role": "user", "content": problem_text(problem)}],
        "spectra": {"prompt_set": "default"},  # the runner's prompts: the sim decides alike
    }
    started = time.perf_counter()
    async with session.post(f"{url}/v1/chat/completions", json=body) as response:
        answer = await response.json()
        if response.status != 200:
            raise RuntimeError(f"HTTP {response.status}: {answer}")
    return time.perf_counter() - started


async def measure(tokenizers: Path) -> tuple[Side, Side, dict]:
    with tempfile.TemporaryDirectory(prefix="spectra-api-bench-") as tmp:
        folder = Path(tmp)
        async with sim_process(SIM) as url, aiohttp.ClientSession() as session:
            flags = model_flags(url, tokenizers)
            runner = await through_the_runner(flags, folder)
            api = await through_the_api(flags, folder)
            stats = await sim_stats(session, url)
    return runner, api, stats


def report(runner: Side, api: Side, stats: dict) -> None:
    rows = [
        (
            f"{side.name}: p50 / p95 latency, problems/s",
            f"{side.quantile(0.5):.3f} s / {side.quantile(0.95):.3f} s, {side.per_s:.1f}/s",
            "",
            "",
        )
        for side in (runner, api)
    ]
    ratio = api.quantile(0.5) / runner.quantile(0.5)
    rows += [
        ("API p50 / runner p50", f"{ratio:.3f}", f"<= {TARGET}", verdict(ratio <= TARGET)),
        ("sim: requests that queued for a decoding slot", str(stats["queued"]), "0", verdict(stats["queued"] == 0)),
        ("load average (1 min)", f"{os.getloadavg()[0]:.2f}", "", ""),
    ]
    print_table(f"{PROBLEMS} problems, spec, all in flight, sim at the costly toy pair's calibration", rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    add_models_dir_argument(parser)
    args = parser.parse_args(argv)
    configure_logging(level="warning")
    runner, api, stats = run(measure(args.models_dir))
    report(runner, api, stats)
    return 0 if api.quantile(0.5) <= TARGET * runner.quantile(0.5) else 1


if __name__ == "__main__":
    sys.exit(main())
