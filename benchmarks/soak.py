"""Soak: 200 problems x 4 tracks through the real scheduler and client against the sim server with
2% of requests failing (HTTP 500/503, resets mid-stream, stalls past the client's stall timeout,
cut bodies). Every problem must complete, every fault must be retried away, and the engine's
memory must stay flat: its resident memory is sampled when 25, 50, 75 and 100% of the problems
are done.

Run from the repository root: `python -m benchmarks.soak` (under a minute).
"""

from __future__ import annotations

import argparse
import resource
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

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
    verdict,
)
from benchmarks.sim_behaviour import Latency, SimConfig
from engine.logging import configure_logging
from engine.loop import run
from engine.reasoning.settings import ReasoningConfig
from engine.records import ProblemRecord
from engine.run.store import append_record
from engine.serving.chat import ChatFormat
from engine.serving.endpoints import ClientLimits

TRACKS, PROBLEMS_IN_FLIGHT = 4, 16
SIM = SimConfig(
    models={
        "small": Latency(request_s=0.005, token_s=0.002, capacity=256),
        "big": Latency(request_s=0.01, token_s=0.005, capacity=256),
    },
    steps_per_track=5,
    step_tokens=24,
    accept_rate=0.7,
    fault_rate=0.02,
    stall_s=1.5,
    seed=7,
)
# Short timeouts for the sim: the engine's requests are whole, so a stall (1.5 s) is noticed by the
# request timeout, 1 s (the slowest answer takes 0.33 s); up to 8 attempts ride out bad luck.
LIMITS = ClientLimits(
    max_in_flight_per_endpoint=256,
    connect_timeout_s=5.0,
    request_timeout_s=1.0,
    stall_timeout_s=0.5,
    max_attempts=8,
    retry_deadline_s=60.0,
    backoff_initial_s=0.05,
    backoff_max_s=1.0,
)
REASONING = ReasoningConfig(seed=0, max_step_tokens=64, token_budget=4096, answer_max_tokens=16)
# Flat: resident memory grows by at most this share between 25% and 100% of the problems done.
MEMORY_GROWTH_TARGET = 0.02


def rss_mib() -> float:
    """This process's resident memory now (Linux /proc), else its peak so far."""
    try:
        resident_pages = int(Path("/proc/self/statm").read_text().split()[1])
    except OSError:
        return peak_rss_mib()
    return resident_pages * resource.getpagesize() / 2**20


def peak_rss_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


@dataclass
class Tally:
    """Writes each record as a run does, counts what the table shows, and samples resident memory
    at 25/50/75/100% of the problems done; it keeps no record, so memory is the engine's."""

    records_path: Path
    total: int
    problems: int = 0
    agreed: int = 0
    tracks: int = 0
    failed_tracks: int = 0
    scripted_tracks: int = 0
    memory: dict[int, float] = field(default_factory=dict)

    def __call__(self, record: ProblemRecord) -> None:
        append_record(self.records_path, record)
        self.problems += 1
        self.agreed += record.answer is not None and set(record.votes) == {record.answer}
        for track in record.tracks:
            self.tracks += 1
            self.failed_tracks += track.finish_reason == "failed"
            # The sim states its answer in a track's last scripted step: the track ends there ("answer").
            self.scripted_tracks += track.finish_reason == "answer" and len(track.steps) == SIM.steps_per_track
        for percent in (25, 50, 75, 100):
            if self.problems == self.total * percent // 100:
                self.memory[percent] = rss_mib()


async def soak(chat: ChatFormat, tally: Tally) -> tuple[Measured, dict, dict]:
    """Run the soak; returns the run (without records), client and sim counters."""
    config = bench_config(
        REASONING, tracks=TRACKS, problems_in_flight=PROBLEMS_IN_FLIGHT, tracks_in_flight=TRACKS * PROBLEMS_IN_FLIGHT
    )
    async with bench_session() as session, sim_process(SIM) as url:
        models = sim_models(session, url, chat, LIMITS)
        measured = await run_engine(config, models, bench_problems(tally.total), on_record=tally, keep=False)
        clients = [model.client.stats for model in models.values()]
        client_totals = {
            "requests": sum(s.requests for s in clients),
            "retries": sum(s.retries for s in clients),
            "failures": sum(s.failures for s in clients),
        }
        return measured, client_totals, await sim_stats(session, url)


def report(tally: Tally, measured: Measured, client: dict, sim: dict, rss_before: float) -> bool:
    """Print the table; True when every target is met."""
    total, memory = tally.total, tally.memory
    growth = (memory[100] - memory[25]) / memory[25] if {25, 100} <= memory.keys() else float("inf")
    faults = sim["faults"]
    rows = [
        ("problems completed", f"{tally.problems} / {total}", f"{total}", verdict(tally.problems == total)),
        ("problems whose tracks agree on an answer", f"{tally.agreed}", f"{total}", verdict(tally.agreed == total)),
        ("track failures", f"{tally.failed_tracks}", "0", verdict(tally.failed_tracks == 0)),
        (
            "tracks ended as scripted",
            f"{tally.scripted_tracks} / {tally.tracks}",
            f"{total * TRACKS}",
            verdict(tally.scripted_tracks == total * TRACKS),
        ),
        (
            "faults injected (500/503/reset/stall/truncated)",
            f"{sum(faults.values())} ({'/'.join(str(faults[k]) for k in SIM.fault_kinds)})",
            "> 0",
            verdict(sum(faults.values()) > 0),
        ),
        ("client retries", f"{client['retries']}", "", ""),
        ("client requests failed after retries", f"{client['failures']}", "0", verdict(client["failures"] == 0)),
        ("requests (client attempts / sim served)", f"{client['requests']} / {sim['served']}", "", ""),
        ("RSS MiB before run", f"{rss_before:.0f}", "", ""),
        (
            "RSS MiB at 25/50/75/100% done",
            " / ".join(f"{memory.get(p, float('nan')):.0f}" for p in (25, 50, 75, 100)),
            "",
            "",
        ),
        (
            "RSS growth 25% -> 100%",
            f"{100 * growth:.1f}%",
            f"<= {100 * MEMORY_GROWTH_TARGET:.0f}%",
            verdict(growth <= MEMORY_GROWTH_TARGET),
        ),
        ("peak RSS MiB", f"{peak_rss_mib():.0f}", "", ""),
        ("wall s / engine CPU s", f"{measured.wall_s:.1f} / {measured.cpu_s:.1f}", "", ""),
    ]
    print_table(f"soak: {total} problems x {TRACKS} tracks, {100 * SIM.fault_rate:.0f}% faults", rows)
    return all(row[3] != "MISS" for row in rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    add_models_dir_argument(parser)
    parser.add_argument("--problems", type=int, default=200)
    args = parser.parse_args(argv)
    # Retries and cut streams are expected here: log only errors, on stderr.
    configure_logging(level="error")
    chat = bench_chat_format(args.models_dir)
    with tempfile.TemporaryDirectory(prefix="spectra-soak-") as folder:
        rss_before = rss_mib()
        tally = Tally(Path(folder) / "records.jsonl", args.problems)
        measured, client, sim = run(soak(chat, tally))
    return 0 if report(tally, measured, client, sim, rss_before) else 1


if __name__ == "__main__":
    sys.exit(main())
