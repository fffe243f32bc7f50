"""RAST's two decoding modes against the sim server: tokens per second and requests per token.

`python -m benchmarks.rast_speed` decodes `--sequences` continuations of `--tokens` tokens at once
in token mode (three one-token requests per token) and in speculative mode (a base draft of
`--gamma` tokens, one scoring request per small model), with the sim's three fixed next-token
distributions (`benchmarks.sim_behaviour.rast_logprobs`), and prints a table; exit code 1 when
speculative mode misses 4x token mode's tokens per second at an acceptance of 80% or more.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import time
from dataclasses import dataclass

from benchmarks.harness import bench_session, print_table, sim_process, sim_stats, verdict
from benchmarks.sim_behaviour import Latency, SimConfig
from engine.client import ModelClient
from engine.logging import configure_logging
from engine.loop import run
from engine.rast import ROLES, RastModels, RastOutput, RastSampling, TokenSpace, rast_decode

SPEEDUP_TARGET = 4.0
ACCEPTANCE_FLOOR = 0.8
# Latencies of engine_overhead.py: the big model 40 ms a request + 25 ms a token, the small ones
# 20 ms + 10 ms; capacity for every sequence at once.
BASE = Latency(request_s=0.04, token_s=0.025, capacity=256)
SMALL = Latency(request_s=0.02, token_s=0.01, capacity=256)


@dataclass
class ModeFigures:
    """What one mode did over all sequences."""

    mode: str
    tokens: int
    wall_s: float
    requests: int
    judged: int
    accepted: int
    chunks: int
    whole_chunks: int
    sim_late_s: float

    @property
    def tokens_per_s(self) -> float:
        return self.tokens / self.wall_s

    @property
    def requests_per_token(self) -> float:
        return self.requests / self.tokens


async def decode_all(url: str, sampling: RastSampling, sequences: int, vocab: int) -> ModeFigures:
    """`sequences` continuations at once (prompts [i], seeds i) through one client per model."""
    space = TokenSpace(vocab, frozenset(), lambda ids: " ".join(map(str, ids)))
    async with bench_session() as session:
        models = RastModels(*(ModelClient(session, role, [url]) for role in ROLES))
        started = time.perf_counter()
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(rast_decode(models, [i % vocab], sampling, space, seed=i)) for i in range(sequences)
            ]
        wall = time.perf_counter() - started
        late = (await sim_stats(session, url))["late_s_total"]
    outs: list[RastOutput] = [task.result() for task in tasks]
    chunks = [c for out in outs for c in out.chunks]
    return ModeFigures(
        mode=sampling.mode,
        tokens=sum(len(out.token_ids) for out in outs),
        wall_s=wall,
        requests=sum(out.requests for out in outs),
        judged=sum(c.judged for c in chunks),
        accepted=sum(c.accepted for c in chunks),
        chunks=len(chunks),
        whole_chunks=sum(c.accepted == c.drafted for c in chunks),
        sim_late_s=late,
    )


async def bench(args: argparse.Namespace) -> int:
    config = SimConfig(
        models={"base": BASE, "positive": SMALL, "negative": SMALL},
        rast_vocab=args.vocab,
        rast_spread=args.spread,
        rast_delta=args.delta,
    )
    figures = {}
    async with sim_process(config) as url:
        for mode in ("token", "speculative"):
            sampling = RastSampling(mode=mode, gamma=args.gamma, logprobs=args.logprobs, max_tokens=args.tokens)
            figures[mode] = await decode_all(url, sampling, args.sequences, args.vocab)
    token, spec = figures["token"], figures["speculative"]
    acceptance = spec.accepted / spec.judged
    speedup = spec.tokens_per_s / token.tokens_per_s
    rows = [
        ("token mode: tokens/s", f"{token.tokens_per_s:.1f}", "", ""),
        ("token mode: requests/token", f"{token.requests_per_token:.2f}", "", ""),
        ("speculative: tokens/s", f"{spec.tokens_per_s:.1f}", "", ""),
        ("speculative: requests/token", f"{spec.requests_per_token:.2f}", "", ""),
        ("speculative: judged drafted tokens kept", f"{acceptance:.1%}", f">= {ACCEPTANCE_FLOOR:.0%}", ""),
        ("speculative: chunks accepted whole", f"{spec.whole_chunks / spec.chunks:.1%}", "", ""),
        (
            "sim lateness, token / speculative (s)",
            f"{token.sim_late_s:.2f} / {spec.sim_late_s - token.sim_late_s:.2f}",
            "",
            "",
        ),
        ("speedup (tokens/s)", f"{speedup:.2f}x", f">= {SPEEDUP_TARGET:.0f}x", verdict(speedup >= SPEEDUP_TARGET)),
    ]
    print_table(
        f"RAST speed: {args.sequences} sequences x {args.tokens} tokens, gamma {args.gamma}, k {args.logprobs}", rows
    )
    return 0 if speedup >= SPEEDUP_TARGET or acceptance < ACCEPTANCE_FLOOR else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--sequences", type=int, default=1, help="continuations decoded at once")
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
