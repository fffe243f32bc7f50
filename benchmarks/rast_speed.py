"""RAST's two decoding modes against the sim server: tokens per second and requests per token.

`python -m benchmarks.rast_speed` decodes continuations of `--tokens` tokens in token mode (three
one-token requests per token) and in speculative mode (a base draft of `--gamma` tokens, one
scoring request per small model), with the sim's three fixed next-token distributions
(`benchmarks.sim_behaviour.rast_logprobs`), in two scenarios, and prints a table for each:
- latency: `--sequences` (1) at once, no serial server cost: one sequence's latency, where the
  speedup is bounded by the base model's (request_s + token_s) / token_s;
- throughput: `--throughput_sequences` (64) at once against models whose requests each take
  `--request_cpu_ms` of serial server work (vLLM's one API-server process, measured by
  `benchmarks.vllm_request_rate`), where the mode that sends fewer requests per token wins.
Exit code 1 when a scenario run misses 4x token mode's tokens per second at an acceptance of 80%
or more.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass, replace

from benchmarks.harness import bench_session, print_table, sim_process, sim_stats, verdict
from benchmarks.sim_behaviour import Latency, SimConfig
from engine.logging import configure_logging
from engine.loop import run
from engine.reasoning.rast.decoding import ROLES, RastModels, RastOutput, RastSampling, TokenSpace, rast_decode
from engine.serving.client import ModelClient

SPEEDUP_TARGET = 4.0
ACCEPTANCE_FLOOR = 0.8
# Latencies of engine_overhead.py: the big model 40 ms a request + 25 ms a token, the small ones
# 20 ms + 10 ms; capacity for every sequence at once.
BASE = Latency(request_s=0.04, token_s=0.025, capacity=256)
SMALL = Latency(request_s=0.02, token_s=0.01, capacity=256)
# The serial work of one vLLM API server a one-token request, for the throughput scenario: measured
# with `python -m benchmarks.vllm_request_rate` on this project's 2-core machine. Drafts and scoring
# requests cost vLLM more (benchmarks/README.md), so this scenario's speculative figures are upper bounds.
REQUEST_CPU_MS = 8.6


@dataclass
class ModeFigures:
    """What one mode did over all sequences; tokens/s over the steady-state window (`decode_all`)."""

    mode: str
    tokens: int
    window_tokens: int
    window_s: float
    requests: int
    judged: int
    accepted: int
    chunks: int
    whole_chunks: int
    sim_late_s: float
    sim_cpu_s: float
    engine_cpu_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.window_tokens / self.window_s

    @property
    def requests_per_token(self) -> float:
        return self.requests / self.tokens


def steady_state(starts: list[float], finishes: list[tuple[float, int]], at_once: int) -> tuple[int, float] | None:
    """Tokens finished, and seconds, between the `at_once`-th finish and the last start (`decode_all`);
    None when every continuation started at once (there is no steady state to measure)."""
    if len(starts) <= at_once:
        return None
    opened, closed = sorted(t for t, _ in finishes)[at_once - 1], max(starts)
    return sum(n for t, n in finishes if opened < t <= closed), closed - opened


@dataclass(frozen=True)
class Scenario:
    """One run of both modes: what it models, how many sequences at once (and in all), the serial
    cost a request."""

    name: str
    models: str
    sequences: int
    request_cpu_s: float
    total: int


async def decode_all(url: str, sampling: RastSampling, scenario: Scenario, vocab: int) -> ModeFigures:
    """`scenario.total` continuations (prompts [i], seeds i), `scenario.sequences` at once, through one
    client per model. With more continuations than fit at once, tokens/s is the steady state's: the
    tokens of continuations that finished between the `sequences`-th finish (the first wave, which
    starts in step, is done) and the last start (from then on fewer run at once, as the batch drains),
    over that window."""
    space = TokenSpace(vocab, frozenset(), lambda ids: " ".join(map(str, ids)))
    gate = asyncio.Semaphore(scenario.sequences)
    starts: list[float] = []
    finishes: list[tuple[float, int]] = []

    async def one(models: RastModels, i: int) -> RastOutput:
        async with gate:
            starts.append(time.perf_counter())
            out = await rast_decode(models, [i % vocab], sampling, space, seed=i)
            finishes.append((time.perf_counter(), len(out.token_ids)))
            return out

    async with bench_session() as session:
        models = RastModels(*(ModelClient(session, role, [url]) for role in ROLES))
        # The sim's counters before and after: its start-up and the other mode are not this mode's.
        before = await sim_stats(session, url)
        started, cpu_started = time.perf_counter(), time.process_time()
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(models, i)) for i in range(scenario.total)]
        wall, engine_cpu = time.perf_counter() - started, time.process_time() - cpu_started
        stats = await sim_stats(session, url)
    outs: list[RastOutput] = [task.result() for task in tasks]
    chunks = [c for out in outs for c in out.chunks]
    tokens = sum(len(out.token_ids) for out in outs)
    window_tokens, window_s = steady_state(starts, finishes, scenario.sequences) or (tokens, wall)
    return ModeFigures(
        mode=sampling.mode,
        tokens=tokens,
        window_tokens=window_tokens,
        window_s=window_s,
        requests=sum(out.requests for out in outs),
        judged=sum(c.judged for c in chunks),
        accepted=sum(c.accepted for c in chunks),
        chunks=len(chunks),
        whole_chunks=sum(c.accepted == c.drafted for c in chunks),
        sim_late_s=stats["late_s_total"] - before["late_s_total"],
        sim_cpu_s=stats["cpu_s"] - before["cpu_s"],
        engine_cpu_s=engine_cpu,
    )


def chunk_tokens(acceptance: float, gamma: int) -> float:
    """Tokens a speculative chunk yields on average when each judged token is kept with `acceptance`:
    the kept prefix, plus the resampled token at the first rejection or the bonus token after all."""
    return sum(acceptance**i for i in range(gamma)) + acceptance**gamma


def speedup_bound(scenario: Scenario, acceptance: float, gamma: int) -> float:
    """The speedup the sim's model allows: each mode at the lower of its latency bound (the
    sequences' requests one after the other, serial work included) and its serial bound (each model's
    worker busy `request_cpu_s` a request; every mode sends each model one request per step)."""
    cpu, sequences = scenario.request_cpu_s, scenario.sequences
    per_chunk = chunk_tokens(acceptance, gamma)
    token_step = cpu + max(BASE.seconds(1), SMALL.seconds(1))
    chunk_step = 2 * cpu + BASE.seconds(gamma + 1) + SMALL.seconds(1)
    token_rate = min(sequences / token_step, 1 / cpu if cpu else float("inf"))
    spec_rate = min(sequences * per_chunk / chunk_step, per_chunk / cpu if cpu else float("inf"))
    return spec_rate / token_rate


async def run_scenario(scenario: Scenario, args: argparse.Namespace) -> bool:
    """Both modes under `scenario`; prints its table and says whether it met the target."""
    base, small = (replace(latency, request_cpu_s=scenario.request_cpu_s) for latency in (BASE, SMALL))
    config = SimConfig(
        models={"base": base, "positive": small, "negative": small},
        rast_vocab=args.vocab,
        rast_spread=args.spread,
        rast_delta=args.delta,
    )
    figures = {}
    async with sim_process(config) as url:
        for mode in ("token", "speculative"):
            sampling = RastSampling(mode=mode, gamma=args.gamma, logprobs=args.logprobs, max_tokens=args.tokens)
            figures[mode] = await decode_all(url, sampling, scenario, args.vocab)
    token, spec = figures["token"], figures["speculative"]
    acceptance = spec.accepted / spec.judged
    speedup = spec.tokens_per_s / token.tokens_per_s
    met = speedup >= SPEEDUP_TARGET or acceptance < ACCEPTANCE_FLOOR
    rows = [
        ("steady-state window, token / speculative (s)", f"{token.window_s:.1f} / {spec.window_s:.1f}", "", ""),
        ("token mode: tokens/s", f"{token.tokens_per_s:.1f}", "", ""),
        ("token mode: requests/token", f"{token.requests_per_token:.2f}", "", ""),
        ("speculative: tokens/s", f"{spec.tokens_per_s:.1f}", "", ""),
        ("speculative: requests/token", f"{spec.requests_per_token:.2f}", "", ""),
        ("speculative: judged drafted tokens kept", f"{acceptance:.1%}", f">= {ACCEPTANCE_FLOOR:.0%}", ""),
        ("speculative: chunks accepted whole", f"{spec.whole_chunks / spec.chunks:.1%}", "", ""),
        (
            "sim lateness, token / speculative (s)",
            f"{token.sim_late_s:.2f} / {spec.sim_late_s:.2f}",
            "",
            "",
        ),
        (
            "CPU ms a token, engine / sim: token mode",
            f"{1000 * token.engine_cpu_s / token.tokens:.2f} / {1000 * token.sim_cpu_s / token.tokens:.2f}",
            "",
            "",
        ),
        (
            "CPU ms a token, engine / sim: speculative",
            f"{1000 * spec.engine_cpu_s / spec.tokens:.2f} / {1000 * spec.sim_cpu_s / spec.tokens:.2f}",
            "",
            "",
        ),
        ("speedup the sim's model allows", f"{speedup_bound(scenario, acceptance, args.gamma):.2f}x", "", ""),
        ("speedup (tokens/s)", f"{speedup:.2f}x", f">= {SPEEDUP_TARGET:.0f}x", verdict(met)),
    ]
    print_table(
        f"RAST speed, {scenario.name} ({scenario.models}): {scenario.total} sequences of {args.tokens} tokens, "
        f"{scenario.sequences} at once, "
        f"gamma {args.gamma}, k {args.logprobs}, serial {1000 * scenario.request_cpu_s:.2f} ms a request",
        rows,
    )
    return met


async def bench(args: argparse.Namespace) -> int:
    scenarios = {
        "latency": Scenario(
            "latency", "one sequence's latency, no serial server cost", args.sequences, 0.0, args.sequences
        ),
        "throughput": Scenario(
            "throughput",
            "a steady state of many sequences against a server with a serial cost a request",
            args.throughput_sequences,
            args.request_cpu_ms / 1000,
            args.throughput_total,
        ),
    }
    chosen = list(scenarios) if args.scenario == "both" else [args.scenario]
    met = [await run_scenario(scenarios[name], args) for name in chosen]
    return 0 if all(met) else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--scenario", choices=("latency", "throughput", "both"), default="both")
    parser.add_argument("--sequences", type=int, default=1, help="continuations at once, latency scenario")
    parser.add_argument(
        "--throughput_sequences", type=int, default=64, help="continuations at once, throughput scenario"
    )
    parser.add_argument(
        "--throughput_total",
        type=int,
        default=192,
        help="continuations in all, throughput scenario (more than at once: tokens/s is the steady state's)",
    )
    parser.add_argument(
        "--request_cpu_ms",
        type=float,
        default=REQUEST_CPU_MS,
        help="serial server work a request, throughput scenario (default: measured, see benchmarks/README.md)",
    )
    parser.add_argument("--tokens", type=int, default=128, help="tokens per continuation")
    parser.add_argument("--gamma", type=int, default=8, help="tokens per speculative draft")
    parser.add_argument("--logprobs", type=int, default=20, help="top-k logprobs asked of each model")
    parser.add_argument("--vocab", type=int, default=64, help="the sim's vocabulary")
    parser.add_argument("--spread", type=float, default=3.0, help="spread of the sim's base logits")
    parser.add_argument("--delta", type=float, default=0.1, help="spread of positive - negative")
    args = parser.parse_args(argv)
    configure_logging()
    return run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
