"""RAST (Ouyang et al. 2025, "Reasoning Activation in LLMs via Small Model Transfer"): one sample
per (problem, repeat) from base + alpha * (positive - negative), decoded by `engine.reasoning.rast.decoding`.

The prompt is RAST's plain text (prompt set `rast`, no chat template), tokenised by the base
tokenizer as vLLM tokenises a text prompt (special tokens added, as RAST's runner got them). Stop
strings are RAST's (vllm/tests/RAST_decode/run.py) minus "assistant" and "user", which cut real
text ("the user asked...") and are left out on purpose; its stop ids come from the token space.
"""

from __future__ import annotations

import asyncio
import functools
import time
from dataclasses import dataclass
from typing import Any

import structlog

from engine.data.answers import extract_answer
from engine.errors import UsageError
from engine.reasoning.rast.decoding import (
    MODES,
    ROLES,
    RastModels,
    RastOutput,
    RastSampling,
    TokenSpace,
    check_raw_logprobs,
    rast_decode,
)
from engine.reasoning.rast.vocab import rast_server_args, shared_token_space
from engine.reasoning.seeds import problem_seed
from engine.reasoning.settings import Settings, setting
from engine.reasoning.strategies.base import SolveContext, StrategySpec
from engine.records import FinishReason, ProblemRecord, Role, StepRecord, TrackRecord
from engine.serving.chat import ChatFormat

log = structlog.get_logger(__name__)

# RAST's stop strings without "assistant" and "user" (see the module docstring).
RAST_STOP = ("</s>", "<|im_end|>", "<|endoftext|>", "_end", "_start")


@dataclass(frozen=True)
class RastSettings(Settings):
    cd_decoding_alpha: float = setting(1.0, "RAST: weight of positive - negative added to the base logits")
    decoding_temperature: float = setting(1.0, "RAST: temperature after the combination (0: greedy)")
    max_tokens: int = setting(16384, "tokens one sample may generate (RAST; runners.split: its --token_budget)")
    rast_mode: str = setting("token", "RAST decoding: token (3 requests a token; faster on vLLM) or speculative", MODES)
    gamma: int = setting(8, "RAST speculative mode: tokens the base model drafts per chunk")
    rast_logprobs: int = setting(20, "RAST: top-k logprobs of each model that make the candidate tokens")
    rast_aux_logprobs: int = setting(
        200, "RAST: logprobs asked of the positive and negative models (their values fill the candidates)"
    )

    def validate(self) -> None:
        if self.decoding_temperature < 0:
            raise UsageError(f"--decoding_temperature must be 0 or more, not {self.decoding_temperature}")
        for name in ("max_tokens", "gamma", "rast_logprobs"):
            if getattr(self, name) < 1:
                raise UsageError(f"--{name} must be at least 1, not {getattr(self, name)}")
        if self.rast_aux_logprobs < self.rast_logprobs:
            raise UsageError(
                f"--rast_aux_logprobs ({self.rast_aux_logprobs}) must be at least "
                f"--rast_logprobs ({self.rast_logprobs})"
            )

    def sampling(self, top_p: float) -> RastSampling:
        return RastSampling(
            alpha=self.cd_decoding_alpha,
            temperature=self.decoding_temperature,
            top_p=top_p,
            max_tokens=self.max_tokens,
            mode=self.rast_mode,
            gamma=self.gamma,
            logprobs=self.rast_logprobs,
            aux_logprobs=self.rast_aux_logprobs,
        )


@functools.lru_cache(maxsize=4)
def _token_space(base: ChatFormat, positive: ChatFormat, negative: ChatFormat) -> TokenSpace:
    """Once per run: checking that the tokenizers agree reads every id of the vocabulary."""
    tokenizers = {Role.BASE: base.tokenizer, Role.POSITIVE: positive.tokenizer, Role.NEGATIVE: negative.tokenizer}
    return shared_token_space(tokenizers)


async def solve(ctx: SolveContext[RastSettings]) -> ProblemRecord:
    """One RAST sample of the problem, recorded as one track of one step."""
    settings, problem, models = ctx.settings, ctx.problem, ctx.models
    space = await asyncio.to_thread(_token_space, *(models[role].chat for role in ROLES))
    prompt = ctx.prompts.render_problem(problem.problem, problem.choices)
    prompt_ids = models[Role.BASE].chat.tokenizer(prompt)["input_ids"]
    # Seeded per (problem, repeat) even without --seed, so a resumed run redoes a sample identically.
    seed = problem_seed(ctx.reasoning.seed, problem.id, ctx.repeat_id)
    rast_models = RastModels(*(models[role].client for role in ROLES))
    await check_raw_logprobs(rast_models, prompt_ids)
    started = time.monotonic()
    async with ctx.track_slots:
        out = await rast_decode(
            rast_models,
            prompt_ids,
            settings.sampling(ctx.reasoning.top_p),
            space,
            stop=RAST_STOP,
            seed=seed,
        )
    track = _track(out, seed, time.monotonic() - started, multiple_choice=bool(problem.choices))
    log.info(
        "rast_sample_done",
        tokens=len(out.token_ids),
        acceptance=out.acceptance,
        requests_per_token=out.requests_per_token,
        fills_per_position=out.fills_per_position,
    )
    return ctx.record(tracks=[track], answer=track.answer, aggregation="single", details=_details(out))


def _details(out: RastOutput) -> dict[str, Any]:
    """RAST's decoding figures: per chunk [drafted, accepted], requests per token, top-k fills."""
    return {
        "tokens": len(out.token_ids),
        "finish_reason": out.finish_reason,
        "stop_reason": out.stop_reason,
        "acceptance": out.acceptance,
        "chunks": [[c.drafted, c.accepted] for c in out.chunks],
        "requests_per_token": out.requests_per_token,
        "top_k_fills": out.top_k_fills,
        "fills_per_position": out.fills_per_position,
        "positions": out.positions,
    }


def _track(out: RastOutput, seed: int, latency_s: float, *, multiple_choice: bool) -> TrackRecord:
    """The sample as a track of one step holding the whole text, which enters every request; RAST
    runs no step policy (the track's `policy` is None)."""
    step = StepRecord(index=0, text=out.text, writer=Role.BASE, tokens=len(out.token_ids), latency_s=latency_s)
    step.charge(out.costs.values())
    return TrackRecord(
        track_id=0,
        seed=seed,
        steps=[step],
        answer_text=out.text,
        answer=extract_answer(out.text, choices=multiple_choice),
        answer_model=Role.BASE,
        finish_reason=FinishReason.EOS if out.finish_reason == "stop" else FinishReason.BUDGET,
        usage=dict(step.usage),
        thinking_tokens=len(out.token_ids),
        latency_s=latency_s,
        finished_at=time.time(),
    )


RAST = StrategySpec(
    name="rast",
    description="RAST: sample the base model from base + alpha * (positive - negative) over three vLLM servers",
    settings=RastSettings,
    templates=("problem",),
    roles=ROLES,
    needed_roles=lambda settings: ROLES,
    solve=solve,
    runs_policy=False,
    track_settings=("seed", "top_p"),
    server_args=lambda settings: rast_server_args(max(settings.rast_logprobs, settings.rast_aux_logprobs)),
)
