"""A projection, not a measurement: spectra's methods on H100s, one problem at a time.

The real engine (scheduler, policies, client) runs against the sim server, whose models cost
what the seeds' shapes cost on an H100: QwQ-32B as the big model, R1-Distill-Qwen-1.5B as the
small one and Qwen2.5-Math-PRM-7B as the PRM, each on its own GPU, served by the sim's simulated
GPU (`benchmarks.sim_gpu`: continuous batching at the figures' decode-by-batch, KV and prefill
costs, a prefix cache the size of vLLM's KV cache, none for the PRM). The figures are
`benchmarks.gpu_decode`'s measurement (pass its JSON with `--figures`) or, by default until that
has run on an H100, derived from the H100's bounds (`benchmarks/gpu_figures/h100_derived.json`,
written by `python -m benchmarks.gpu_shapes`). What the sim cannot know comes from the papers:
the share of drafts the judge accepts (swept over `--rates`) and the shape of a trace (`--steps`
steps of `--step_tokens`).

Rows: the big model alone (step by step, so each step is a request as in the others), `spec`
(SpecReason: the small model drafts, the big model scores 0-9, rewrites below 7) at
`--pipeline_depth` 0 and 1, `lookahead` (Lookahead Reasoning, K = 3, the big model rating
equivalence: `--verifier big_rating`), and `spec --scorer prm` (Qwen2.5-Math-PRM-7B on a third GPU
judges each draft, RSD's judge; vLLM caches none of its prompts, so every score prefills the whole
trace), each at every acceptance rate. Latency per problem is in projected GPU seconds:
wall seconds times `--time_scale` (the sim runs that much faster than the GPU, so the engine's own
milliseconds count that many times over); "at the GPUs" counts only the time some request was at
the sim, on a clock that forgives the sim's late wake-ups.

Run from the repository root: `python -m benchmarks.gpu_projection` (about 10 minutes).
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchmarks.harness import (
    add_models_dir_argument,
    bench_chat_format,
    bench_problems,
    bench_session,
    print_table,
    run_engine,
    sim_models,
    sim_process,
    sim_stats,
)
from benchmarks.sim_behaviour import Latency, SimConfig
from benchmarks.sim_gpu import GpuCost
from engine.logging import configure_logging
from engine.loop import run
from engine.reasoning.policies import POLICIES
from engine.reasoning.policies.lookahead import LookaheadSettings
from engine.reasoning.policies.single import SingleModelSettings
from engine.reasoning.policies.spec import SpecSettings
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies.vote import VoteSettings
from engine.run.config import ModelConfig, RunConfig, SchedulerLimits
from engine.serving.client import ModelClient
from engine.serving.endpoints import ClientLimits
from engine.serving.models import Model

# Until `benchmarks.gpu_decode` has run on an H100, the figures derived from its bounds
# (`python -m benchmarks.gpu_shapes --out ...`); pass the measured JSON with --figures.
FIGURES = Path(__file__).parent / "gpu_figures" / "h100_derived.json"
ROLES = {"big": "QwQ-32B", "small": "R1-Distill-Qwen-1.5B", "prm": "Qwen2.5-Math-PRM-7B"}
RATES = (0.5, 0.7, 0.9)
LIMITS = ClientLimits(max_in_flight_per_endpoint=64, request_timeout_s=600.0, stall_timeout_s=120.0, max_attempts=1)


def gpu_cost(shape: dict[str, Any]) -> GpuCost:
    """A shape's measured figures as the sim's cost model: decode by batch at the 2,000-token
    context (the faster of eager and fused kernels), the KV term from the longer context, the
    prefill terms through the two longest prefills less one decode step's weight reading."""
    points = [p for p in shape["decode"] if p["fits"]]
    reference = min(p["context"] for p in points)
    best = {(p["batch"], p["context"]): min(p.get("eager_ms", 1e9), p.get("fused_ms", 1e9)) for p in points}
    decode_ms = tuple(sorted((b, ms) for (b, c), ms in best.items() if c == reference))
    longer = [(b, c, ms) for (b, c), ms in best.items() if c != reference and (b, reference) in best]
    kv_ms = statistics.mean((ms - best[(b, reference)]) / (b * (c - reference)) for b, c, ms in longer) if longer else 0
    per_token, squared = prefill_terms(shape["prefill"], decode_ms[0][1])
    return GpuCost(
        decode_ms,
        per_token,
        kv_ms_per_token=max(0.0, kv_ms),
        reference_context=reference,
        kv_tokens=shape["memory"]["kv_tokens_vllm"],
        prefill_ms_per_token_squared=squared,
    )


def reward_model_cost(shape: dict[str, Any]) -> GpuCost:
    """A PRM's measured figures as the sim's cost model: it only prefills (its iteration is its
    prefill), and vLLM caches no prefix for its step pooling, so every score prefills the trace."""
    per_token, squared = prefill_terms(shape["prefill"], 0.0)
    return GpuCost(
        ((1, 0.0),),
        per_token,
        prefill_ms_per_token_squared=squared,
        prefix_cache=False,
        kv_tokens=shape["memory"]["kv_tokens_vllm"],
    )


def prefill_terms(prefills: list[dict[str, Any]], base_ms: float) -> tuple[float, float]:
    """`a` and `b` of ms = base_ms + a * n + b * n^2 through the two longest prefills measured (the
    second term is attention's); `base_ms` is what the sim's iteration charges a prompt anyway."""
    (n1, t1), (n2, t2) = sorted((p["tokens"], p["ms"] - base_ms) for p in prefills)[-2:]
    squared = max(0.0, (t2 / n2 - t1 / n1) / (n2 - n1))
    return max(0.0, t1 / n1 - squared * n1), squared


@dataclass(frozen=True)
class Method:
    label: str
    policy: str
    settings: Any
    rated: bool = True  # whether the acceptance rate changes it


METHODS = (
    Method("big model alone", "big", SingleModelSettings(stepwise=True), rated=False),
    Method("spec (SpecReason)", "spec", SpecSettings()),
    Method("spec --pipeline_depth 1", "spec", SpecSettings(pipeline_depth=1)),
    Method("lookahead (K = 3, big_rating)", "lookahead", LookaheadSettings(lookahead_steps=3, verifier="big_rating")),
    Method("spec --scorer prm (RSD's judge)", "spec", SpecSettings(scorer="prm", prm_kind="pooling")),
)


def run_config(method: Method, reasoning: ReasoningConfig, tracks: int) -> RunConfig:
    roles = ("big", "small", *POLICIES[method.policy].roles_for(method.settings))
    return RunConfig(
        runner="projection",
        output_dir="unused",
        models={role: ModelConfig(role) for role in dict.fromkeys(roles)},
        policy=method.policy,
        policy_settings=method.settings,
        strategy_settings=VoteSettings(tracks=tracks),
        reasoning=reasoning,
        limits=SchedulerLimits(max_tracks_in_flight=tracks, max_problems_in_flight=1),
    )


async def project(args: argparse.Namespace, costs: dict[str, GpuCost]) -> list[dict[str, Any]]:
    budget = 8 * args.steps * args.step_tokens
    reasoning = ReasoningConfig(seed=0, max_step_tokens=2 * args.step_tokens, token_budget=budget)
    chat = bench_chat_format(args.models_dir)
    rows = []
    async with bench_session() as session:
        for rate in args.rates:
            sim = SimConfig(
                models={role: Latency() for role in ROLES},
                gpu={role: cost.scaled(args.time_scale) for role, cost in costs.items()},
                steps_per_track=args.steps,
                step_tokens=args.step_tokens,
                accept_rate=rate,
                lag_free=True,
            )
            async with sim_process(sim) as url:
                models = sim_models(session, url, chat, LIMITS)
                models["prm"] = Model("prm", ModelClient(session, "prm", [url], LIMITS), chat)
                for method in METHODS:
                    if not method.rated and rate != args.rates[0]:
                        continue
                    before = await sim_stats(session, url)
                    config = run_config(method, reasoning, args.tracks)
                    measured = await run_engine(config, models, bench_problems(args.problems))
                    rows.append(row(method, rate, measured, before, await sim_stats(session, url), args.time_scale))
    return rows


def row(method: Method, rate: float, measured, before: dict, after: dict, scale: float) -> dict[str, Any]:
    """A method's projected latency per problem, the share of steps the small model wrote, and per
    model its GPU busy seconds per problem and the share of its prompt tokens served from cache."""
    steps = [s for t in measured.tracks for s in t.steps]
    problems = len(measured.records)

    def grown(model: str, key: str) -> float:
        return after["gpu"][model][key] - before["gpu"].get(model, {}).get(key, 0)

    return {
        "method": method.label,
        "accept_rate": rate if method.rated else None,
        "latency_s": scale * statistics.mean(r.latency_s for r in measured.records),
        # the same less the time no request of the problem was at the sim: the engine's own work
        # between requests, which this CPU machine inflates by `scale`
        "at_gpu_s": scale * (after["occupied_s"] - before["occupied_s"]) / problems,
        "small_steps": sum(s.writer == "small" for s in steps) / max(1, len(steps)),
        "busy_s_per_problem": {m: scale * grown(m, "busy_s") / problems for m in after["gpu"]},
        "cached_share": {m: grown(m, "cached_tokens") / max(1, grown(m, "prompt_tokens")) for m in after["gpu"]},
        "answers": [r.answer for r in measured.records],
    }


def report(rows: list[dict[str, Any]], tracks: int, figures: str) -> None:
    alone = next(r for r in rows if r["accept_rate"] is None)
    table = []
    for r in rows:
        busy = ", ".join(f"{m} {s:.1f}" for m, s in r["busy_s_per_problem"].items())
        cached = ", ".join(f"{m} {share:.0%}" for m, share in r["cached_share"].items())
        rate = "-" if r["accept_rate"] is None else f"{r['accept_rate']:.1f}"
        table.append(
            (
                f"{r['method']}, acceptance {rate}",
                f"{r['latency_s']:.1f} s, {alone['latency_s'] / r['latency_s']:.2f}x; "
                f"at the GPUs {r['at_gpu_s']:.1f} s, {alone['at_gpu_s'] / r['at_gpu_s']:.2f}x",
                f"small wrote {r['small_steps']:.0%}; GPU s {busy}; cached {cached}",
                "",
            )
        )
    print_table(f"projected latency per problem ({tracks} track(s), one problem at a time; figures: {figures})", table)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    add_models_dir_argument(parser)
    parser.add_argument("--figures", type=Path, default=FIGURES, help="benchmarks.gpu_decode's JSON (or derived)")
    parser.add_argument("--rates", nargs="+", type=float, default=list(RATES), help="shares of drafts accepted")
    parser.add_argument("--steps", type=int, default=48, help="steps a trace thinks")
    parser.add_argument("--step_tokens", type=int, default=64, help="tokens a step")
    parser.add_argument("--problems", type=int, default=2, help="problems a row, one after another")
    parser.add_argument("--tracks", type=int, default=1, help="tracks a problem, all at once (they vote)")
    parser.add_argument("--time_scale", type=float, default=2.0, help="how much faster than the GPU the sim runs")
    parser.add_argument("--out", type=Path, default=None, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    configure_logging(level="warning")
    figures = json.loads(args.figures.read_text())
    shapes = figures["shapes"]
    costs = {role: (reward_model_cost if role == "prm" else gpu_cost)(shapes[name]) for role, name in ROLES.items()}
    rows = run(project(args, costs))
    report(rows, args.tracks, figures.get("gpu", figures["device"]))
    if args.out:
        args.out.write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
