"""The step judges on the toy world (issue 32, point 6): `spec` judged by the big model (SpecReason),
by the toy PRM served as spectra starts one (`--scorer prm`, step pooling, no prefix cache) and by its
tag-token twin (`--prm_kind tag_token`: one generated token a step, prefix-cached), with one, two and
three drafts a step, against the costly big model alone; one problem in flight, every server warmed
first. `benchmarks.toy_world --rows judges` runs these on `--speed_problems`.

Target (issue 32): `spec --scorer prm` at most 0.5x the big model's latency at >= 95% of its
accuracy. Beside each one-draft row, the bound its measured costs set: a step of t tokens, the small
and the big model's decode ms a token (`toy_speed.calibrate`), the judge's score S at the run's own
prefix (timed as `prm_cost.costs_at` times it) and the share a of steps whose draft was kept give at
best (t d_small + S + (1 - a) t d_big) / (t d_big) of the big model's time.
"""

from __future__ import annotations

import statistics

import aiohttp

from benchmarks.prm_cost import costs_at
from benchmarks.toy_speed import AT_ONE, SPEC, SPEED_MODES, Cost, Mode
from engine.records import ProblemRecord, RequestCost, StepRecord
from engine.serving.chat import ChatFormat
from engine.serving.client import ModelClient
from engine.serving.servers import RunningServer
from engine.toy.trained import prm_tokenizer

TARGET_LATENCY = 0.5  # of the big model's, issue 32
TARGET_ACCURACY = 0.95  # of the big model's
SCORE_REPEATS = 5  # scores timed for the bound; the median is kept (as benchmarks.prm_cost)
DRAFTS = (1, 2, 3)

# Each judge: its flags, the served model playing the PRM role, and which of `prm_cost.costs_at`'s
# figures is its score.
JUDGED_BY = {
    "judge": (SPEC, "prm", "judge"),
    "prm": (("--scorer", "prm", "--prm_kind", "pooling"), "prm", "pooling"),
    "prm_token": (("--scorer", "prm", "--prm_kind", "tag_token"), "prm_token", "tag_token"),
}


def judged_mode(judge: str, drafts: int = 1, *, flags: tuple[str, ...] = AT_ONE) -> Mode:
    """`spec` judged by `judge` (a `JUDGED_BY` name) with `drafts` candidates a step, at the
    spec runner's temperature 0.6 (several drafts at 0 would be one text, and are refused)."""
    own, prm, _ = JUDGED_BY[judge]
    more = ("--drafts_per_step", str(drafts)) if drafts > 1 else ()
    name = "spec" if judge == "judge" else f"spec_{judge}"
    name += f"_drafts{drafts}" if drafts > 1 else ""
    return Mode(f"{name}@1" if flags == AT_ONE else name, "spec", (*own, *more, *flags), prm=prm)


BIG_ALONE = SPEED_MODES[0]
# The judge's one-draft mode is the speed rows' `spec@1`: run once when both groups run.
JUDGE_MODES = (BIG_ALONE, *(judged_mode(judge, k) for k in DRAFTS for judge in JUDGED_BY))


def steps_checked(records: list[ProblemRecord]) -> list[StepRecord]:
    """Every step whose draft a judge rated (kept or rewritten)."""
    return [s for r in records for t in r.tracks for s in t.steps if s.accepted is not None]


def kept_share(records: list[ProblemRecord]) -> float | None:
    """The share of checked steps whose draft was kept (None when no draft was checked)."""
    checked = steps_checked(records)
    return statistics.mean(bool(s.accepted) for s in checked) if checked else None


def judgings(records: list[ProblemRecord]) -> list[RequestCost]:
    """The cost entries of the judge's requests that ruled on a step."""
    return [c for s in steps_checked(records) for c in s.costs if c.judge is not None and not c.wasted]


def speed_bound(step_tokens: float, small_ms: float, big_ms: float, score_ms: float, kept: float) -> float:
    """The least share of the big model's time a spec step can take: the draft, the score and, for
    the share not kept, the big model's step, over the big model's step (decode cost only: the
    requests' own prefills only add to spec's side)."""
    big_step = step_tokens * big_ms
    return (step_tokens * small_ms + score_ms + (1 - kept) * big_step) / big_step


def scored_prefix(records: list[ProblemRecord]) -> int:
    """The PRM's input before the judged step, in its tokens, on average over the run's scores."""
    entries = judgings(records)
    step = statistics.mean(s.tokens for s in steps_checked(records))
    return max(1, round(statistics.mean(c.prompt_tokens for c in entries) - step))


async def score_costs(servers: dict[str, RunningServer], prefix: int) -> dict[str, float]:
    """Each judge's score at `prefix` tokens, ms (`prm_cost.costs_at`: the PRM pooled; its twin's
    token after the previous score cached the prefix; the big model's judgement the same way)."""
    async with aiohttp.ClientSession() as session:
        clients = {n: ModelClient(session, servers[n].model, [servers[n].url]) for n in ("prm", "prm_token", "big")}
        timed = await costs_at(clients, ChatFormat(prm_tokenizer(), thinking=True), prefix, SCORE_REPEATS)
    return {judge: timed[figure] for judge, (_, _, figure) in JUDGED_BY.items()}


def judge_rows(
    figures: dict,
    records: dict[str, list[ProblemRecord]],
    costs: dict[str, Cost],
    scores: dict[str, float],
    prefix: int,
    commands: dict[str, str],
) -> list[tuple[str, ...]]:
    """The big model alone, then a row a judged mode (accuracy, drafts kept, big tokens, seconds a
    problem, the ratio to the big model's latency), the target on the PRM's one-draft rows, and each
    one-draft row's bound (`figures`: name -> `toy_world.Figures`; `scores`: `score_costs` at `prefix`)."""
    alone = figures[BIG_ALONE.name]

    def row(mode: Mode, target: str = "", verdict: str = "") -> tuple[str, ...]:
        one, kept = figures[mode.name], kept_share(records[mode.name])
        return (
            mode.name,
            f"{one.accuracy:.1%} right, "
            + ("no drafts" if kept is None else f"{kept:.1%} of steps kept a draft")
            + f", big {one.tokens['big']:.1f} tokens/problem, {one.latency_s:.2f} s/problem, "
            f"{one.latency_s / alone.latency_s:.2f}x big's latency",
            target,
            verdict,
            commands[mode.name],
        )

    rows = [row(BIG_ALONE)]
    for drafts in DRAFTS:
        for judge in JUDGED_BY:
            mode = judged_mode(judge, drafts)
            if drafts > 1:
                rows.append(row(mode))
                continue
            one = figures[mode.name]
            target, verdict = "", ""
            if judge != "judge":
                target = f"<= {TARGET_LATENCY}x big at >= {TARGET_ACCURACY:.0%} of its accuracy"
                fast = one.latency_s <= TARGET_LATENCY * alone.latency_s
                verdict = "PASS" if fast and one.accuracy >= TARGET_ACCURACY * alone.accuracy else "MISS"
            rows += [row(mode, target, verdict), bound_row(mode, records[mode.name], costs, scores[judge], prefix)]
    return rows


def bound_row(
    mode: Mode, records: list[ProblemRecord], costs: dict[str, Cost], score: float, prefix: int
) -> tuple[str, ...]:
    """The bound of a one-draft mode from the calibrated decode costs, its judge's timed `score` (ms)
    and the share of drafts it kept; the median score seen in the run beside it."""
    checked = steps_checked(records)
    step, kept = statistics.mean(s.tokens for s in checked), statistics.mean(bool(s.accepted) for s in checked)
    small, big = costs["small"].decode_ms, costs["big"].decode_ms
    bound = speed_bound(step, small, big, score, kept)
    in_run = 1000 * statistics.median(c.client_s for c in judgings(records))
    return (
        f"  {mode.name}: bound from measured costs",
        f"{bound:.2f}x = ({step:.1f} x {small:.1f} + {score:.0f} + (1 - {kept:.2f}) x {step:.1f} x {big:.1f}) / "
        f"({step:.1f} x {big:.1f}) ms; its scores in the run: median {in_run:.0f} ms",
        "the fastest spec can be",
        "",
        f"benchmarks.toy_speed.calibrate; benchmarks.prm_cost.costs_at at a {prefix}-token prefix",
    )
