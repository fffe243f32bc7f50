"""The toy demo: `spectra run` with no models runs the trained toy pair on a handful of toy problems,
prints a graded table, and (for spec) compares speculation with the big model alone.

Its models, budgets and limits are data that `engine.run.configure.build_config` applies when no
model is given; the table and the comparison grade the records the run wrote.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from engine.data.answers import is_correct
from engine.errors import UsageError
from engine.reasoning.policies import POLICIES
from engine.reasoning.policies.lookahead import EMBEDDER_SERVER_ARGS
from engine.records import ProblemRecord
from engine.run.config import ModelConfig
from engine.run.flags import MODEL_ROLES, ROLE_FLAGS, TOY_MODELS_DIR

# The trained toy pair on a handful of toy problems, whose solutions are ~10 steps of ~10 tokens,
# so short budgets keep a runaway sample short.
DEMO_REASONING = {"token_budget": 400, "max_step_tokens": 48, "answer_max_tokens": 24}
DEMO_DATA = {"dataset_name": "toy", "problem_id": "0-5"}
DEMO_SEARCH = {"num_iterations": 4}
# One problem at a time, so that the demo's latencies compare speculation with the big model alone.
DEMO_LIMITS = {"max_problems_in_flight": 1}


# The toy models were taught chat-rendered conversations, so every runner sends them those, SpecLRM's too.
DEMO_PROMPTS = {"prompt_format": "chat"}


def demo_defaults(defaults: Mapping[str, Any]) -> dict[str, Any]:
    """The demo's limits beat a runner's defaults (SplitReason's 16384 tokens); flags beat both."""
    return {**defaults, **DEMO_REASONING, **DEMO_SEARCH, **DEMO_PROMPTS}


def demo_models(flags: Mapping[str, Any], roles: Collection[str]) -> dict[str, ModelConfig]:
    """The demo's models: the trained toy pair, and a tiny random PRM when the run scores with one."""
    from engine.toy.tiny_prm import make_tiny_prm, prm_server_args
    from engine.toy.trained import make_toy_models

    given = next((f"{r}_{x}" for r in MODEL_ROLES for x in ROLE_FLAGS[1:] if flags.get(f"{r}_{x}")), None)
    if given is not None:
        role = given.split("_")[0]
        raise UsageError(f"--{given} needs --{role}_model (the id that server serves; without models, the toy demo)")
    folder = Path(flags.get("toy_models_dir") or TOY_MODELS_DIR)
    toy = make_toy_models(folder)
    # The costly big model: the trained big model's function at a big model's cost per token.
    models = {"big": ModelConfig(model=str(toy.costly_big)), "small": ModelConfig(model=str(toy.small))}
    if "prm" in roles:
        prm = make_tiny_prm(folder)
        models["prm"] = ModelConfig(model=str(prm), server_args=prm_server_args(prm))
    if "embedder" in roles:  # lookahead's embedding verifier: the small toy model's pooled states
        models["embedder"] = ModelConfig(model=str(toy.small), server_args=EMBEDDER_SERVER_ARGS)
    return models


def big_alone_flags(flags: Mapping[str, Any]) -> dict[str, Any]:
    """The demo's flags for the big model alone on the same problems (runner base): the step
    policy's own flags (which the base runner would refuse) left out."""
    alone = {**flags, "model": "big", "policy": None}
    for spec in POLICIES.values():
        if spec.settings is not POLICIES["big"].settings:
            alone.update(dict.fromkeys(field.name for field in dataclasses.fields(spec.settings)))
    return alone


def format_summary(records: list[ProblemRecord]) -> str:
    """Per problem: answer, reference, right or wrong, steps kept and rewritten, tokens per model,
    seconds; then the accuracy and the big model's share of the generated tokens."""
    header = (
        f"{'problem':<14}{'rep':>4}  {'answer':<14}{'ref':<10}{'ok':<4}{'kept':>5}{'rewr':>5}"
        f"{'small tok':>10}{'big tok':>9}{'sec':>8}"
    )
    lines = [header]
    right, generated = 0, {"small": 0, "big": 0}
    for r in records:
        steps = [s for t in r.tracks for s in t.steps]
        kept = sum(1 for s in steps if s.accepted)
        rewritten = sum(1 for s in steps if s.accepted is False)
        tokens = {m: r.usage[m].completion_tokens if m in r.usage else 0 for m in ("small", "big")}
        correct = _right(r)
        right += correct
        generated = {m: generated[m] + tokens[m] for m in generated}
        ok = "yes" if correct else "no"
        lines.append(
            f"{r.problem_id[:13]:<14}{r.repeat_id:>4}  {str(r.answer)[:13]:<14}{str(r.reference_answer)[:9]:<10}"
            f"{ok:<4}{kept:>5}{rewritten:>5}{tokens['small']:>10}{tokens['big']:>9}{r.latency_s:>8.1f}"
        )
    if records:
        total = sum(generated.values())
        share = f"{generated['big'] / total:.0%}" if total else "-"
        lines.append(
            f"accuracy {right}/{len(records)} ({right / len(records):.0%}); big model's share of tokens {share}"
        )
    return "\n".join(lines)


def _right(record: ProblemRecord) -> bool:
    return bool(is_correct(record.answer, record.reference_answer, multiple_choice=record.is_multiple_choice))


def compare_with_big_alone(spec: list[ProblemRecord], alone: list[ProblemRecord]) -> str:
    """One line: spec against the big model alone on the same problems (accuracy, big-model tokens
    and seconds per problem)."""

    def figures(records: list[ProblemRecord]) -> tuple[int, float, float]:
        right = sum(_right(r) for r in records)
        big = sum(r.usage["big"].completion_tokens for r in records if "big" in r.usage) / len(records)
        return right, big, sum(r.latency_s for r in records) / len(records)

    (right, big, seconds), (right_alone, big_alone, seconds_alone) = figures(spec), figures(alone)
    ratio = f"{seconds / seconds_alone:.2f}x" if seconds_alone else "-"
    return (
        f"spec: {right}/{len(spec)} right, {ratio} the big model's latency ({seconds:.2f} s vs {seconds_alone:.2f} s a "
        f"problem), {big:.0f} vs {big_alone:.0f} big-model tokens a problem; big alone {right_alone}/{len(alone)} right"
    )
