"""SpecReason: the small model drafts a step, the big model scores it (0-9) and rewrites it when
the score is under the threshold. The judge is a seam (`--scorer`, `engine.reasoning.judges`): with
`--scorer prm` a process reward model rates the draft and the big model rewrites it when the reward
is under `--prm_threshold`, as RSD does."""

from __future__ import annotations

import dataclasses
import time
from dataclasses import dataclass

from engine.data.prompts import PromptSet
from engine.errors import UsageError
from engine.reasoning.judges import JUDGES, JudgeInputs, StepJudge, prm_kind_setting, scorer_setting
from engine.reasoning.judges.specreason import SCORE_METHODS
from engine.reasoning.policies.base import PolicySpec, StepContext, StepResult, generate_step, kept_step
from engine.reasoning.policies.spec_pipeline import DraftPipeline
from engine.reasoning.settings import ReasoningConfig, Settings, setting
from engine.records import RequestCost, Role, StepOutcome
from engine.serving.chat import Message
from engine.serving.models import Model, Purpose, Reply

# Each step drafted ahead costs small-model work that a rejection throws away; more than a few
# steps ahead are almost never all kept.
MAX_PIPELINE_DEPTH = 8
# Each candidate costs a judging; past a few, the best of them barely improves.
MAX_DRAFTS_PER_STEP = 8


def check_track(settings: SpecSettings, reasoning: ReasoningConfig) -> str | None:
    """Candidates drawn at temperature 0 are one text K times: refused."""
    if settings.drafts_per_step > 1 and reasoning.temperature == 0:
        return (
            f"--drafts_per_step {settings.drafts_per_step} at --temperature 0 drafts the same step "
            f"{settings.drafts_per_step} times: raise --temperature, or drop --drafts_per_step"
        )
    return None


@dataclass(frozen=True)
class SpecSettings(Settings):
    scorer: str = scorer_setting("judge")
    score_threshold: float = setting(7.0, "keep a drafted step scoring at least this (0-9)")
    score_method: str = setting("greedy", "read the score from the sampled digit or the digits' mean", SCORE_METHODS)
    prm_threshold: float = setting(0.7, "with --scorer prm: keep a drafted step whose reward is at least this (RSD)")
    prm_kind: str = prm_kind_setting()
    first_n_steps_base_model: int = setting(0, "the first N steps are written by the big model alone")
    pipeline_depth: int = setting(
        0,
        "spectra: draft up to this many steps ahead while the big model scores (0: SpecReason's "
        "sequential loop); same steps and answers with a fixed --seed",
    )
    drafts_per_step: int = setting(
        1,
        "spectra: the small model writes this many candidates of each step in one request; the judge rates "
        "each, the best that passes is kept, else the big model writes the step (SCoT's idea, at step level)",
    )

    def idle_flags(self) -> dict[str, str]:
        if self.scorer == "prm":
            why = "a PRM judges (--scorer prm), whose bar is --prm_threshold; drop it, or use --scorer judge"
            return {"score_threshold": why, "score_method": why}
        why = "the big model judges (--scorer judge); add --scorer prm"
        return {"prm_threshold": why, "prm_kind": why}

    def validate(self) -> None:
        if not 0 <= self.prm_threshold <= 1:
            raise UsageError(f"--prm_threshold must be between 0 and 1, not {self.prm_threshold}")
        if not 0 <= self.score_threshold <= 9:
            raise UsageError(f"--score_threshold must be between 0 and 9, not {self.score_threshold}")
        if self.first_n_steps_base_model < 0:
            raise UsageError(f"--first_n_steps_base_model must be 0 or more, not {self.first_n_steps_base_model}")
        if not 0 <= self.pipeline_depth <= MAX_PIPELINE_DEPTH:
            raise UsageError(f"--pipeline_depth must be between 0 and {MAX_PIPELINE_DEPTH}, not {self.pipeline_depth}")
        if not 1 <= self.drafts_per_step <= MAX_DRAFTS_PER_STEP:
            raise UsageError(
                f"--drafts_per_step must be between 1 and {MAX_DRAFTS_PER_STEP}, not {self.drafts_per_step}"
            )
        if self.drafts_per_step > 1 and self.pipeline_depth:
            raise UsageError(
                "--drafts_per_step and --pipeline_depth cannot be combined (which candidate would the drafts "
                "ahead build on?): choose one"
            )


class SpecPolicy:
    """One track's SpecReason steps; its drafts and scores go through a `DraftPipeline`, which
    with `--pipeline_depth` 0 drafts, then scores, one step at a time as SpecReason does."""

    def __init__(self, settings: SpecSettings, pipeline: DraftPipeline):
        self.settings, self.pipeline = settings, pipeline

    async def step(self, ctx: StepContext) -> StepResult:
        big = ctx.models[Role.BIG]
        started, delimiter = time.monotonic(), ctx.config.step_delimiter
        if ctx.index < self.settings.first_n_steps_base_model:
            reply = await generate_step(big, ctx, purpose=Purpose.STEP)
            outcome = StepOutcome.TAKEN_OVER
            step = kept_step(reply, Role.BIG, ctx.index, [reply.cost], started, delimiter=delimiter, outcome=outcome)
            return StepResult(step, step.ending)
        speculation, wasted = self.pipeline.head(ctx)
        draft, verdict = await speculation.task
        costs = [draft.cost, *verdict.costs, *wasted]
        judge = self.pipeline.judge
        scored = {"score": judge.value(verdict), "score_distribution": verdict.distribution, "judge": judge.spec.name}
        if speculation.draft_values is not None:
            scored["detail"] = {"draft_values": [round(value, 4) for value in speculation.draft_values]}
        if judge.passes(verdict):
            self.pipeline.keep()
            outcome = StepOutcome.ACCEPTED
            step = kept_step(
                draft, Role.SMALL, ctx.index, costs, started, delimiter=delimiter, outcome=outcome, **scored
            )
            return StepResult(step, step.ending)
        costs += self.pipeline.reject()
        rewrite = await rewrite_step(big, ctx, draft.text)
        step = kept_step(
            rewrite,
            Role.BIG,
            ctx.index,
            [*costs, rewrite.cost],
            started,
            delimiter=delimiter,
            outcome=StepOutcome.REWRITTEN,
            draft=draft.text,
            **scored,
        )
        return StepResult(step, step.ending)

    def close(self) -> list[RequestCost]:
        return self.pipeline.discard()


async def rewrite_step(big: Model, ctx: StepContext, draft_text: str) -> Reply:
    """The big model writes the step itself: from the same prefix (SpecReason), or, when the
    prompt set has a rewrite template, after being shown the rejected draft."""
    if not ctx.prompts.templates.rewrite:
        return await generate_step(big, ctx, purpose=Purpose.REWRITE)
    reasoning = big.chat.think_open + ctx.reasoning + draft_text
    request = ctx.prompts.render_rewrite(draft_text)
    messages = (*ctx.messages, Message("assistant", reasoning), Message("user", request))
    shown = dataclasses.replace(ctx, messages=messages, reasoning="")
    return await generate_step(big, shown, purpose=Purpose.REWRITE)


def start(settings: SpecSettings, models: dict[str, Model], prompts: PromptSet, reasoning: ReasoningConfig):
    role = JUDGES[settings.scorer].role
    inputs = JudgeInputs(models[role], prompts, reasoning.step_delimiter, settings.score_method, settings.prm_kind)
    bar = getattr(settings, JUDGES[settings.scorer].threshold_flag)
    judge = StepJudge.of(settings.scorer, inputs, bar)
    pipeline = DraftPipeline(models[Role.SMALL], judge, settings.pipeline_depth, settings.drafts_per_step)
    return SpecPolicy(settings, pipeline)


SPEC = PolicySpec(
    name="spec",
    description="SpecReason: the small model drafts, the big model (or a PRM: --scorer prm, RSD) judges, "
    "the big model rewrites below the bar",
    roles=(Role.SMALL, Role.BIG, Role.PRM),
    needed_roles=lambda settings: (Role.SMALL, Role.BIG, *([Role.PRM] if settings.scorer == "prm" else [])),
    settings=SpecSettings,
    templates=("score", "score_prefix", "rewrite"),
    gives_token_logprobs=True,
    start=start,
    check_track=check_track,
)
