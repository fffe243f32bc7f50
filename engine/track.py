"""One reasoning track on one problem: the step loop, the final answer, and the record.

The track fills the `TrackRecord` it is given as it goes, so a scheduler that cancels it
still holds everything it did. Thinking stops (SpecReason's rules) when a step gives an
answer ("boxed", "Answer:"), when the model closes thinking or ends the sequence, when a
step repeats the previous one or is empty, or when the thinking budget is spent; then the
answer model writes the answer after the closed thinking.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from dataclasses import dataclass

import structlog

from engine.answers import extract_answer
from engine.chat import THINK_CLOSE, Message
from engine.config import ReasoningConfig
from engine.datasets import Problem
from engine.errors import ServerError
from engine.policies import ANSWER_SALT, NO_SPECIAL_TOKENS, POLICIES, Model, StepContext, request_seed, usage_of
from engine.prompts import PromptSet
from engine.results import TrackRecord, sum_usage

log = structlog.get_logger(__name__)

# SpecReason ends thinking at a step that already states the answer.
ANSWER_MARKERS = ("boxed", "Answer:", "ANSWER:")


@dataclass(frozen=True)
class TrackSetup:
    """What distinguishes one track of a problem from another."""

    track_id: int
    mode: str
    role: str | None = None
    method: str | None = None
    instruction: str | None = None
    seed: int | None = None


def track_messages(problem: Problem, prompts: PromptSet, instruction: str | None) -> tuple[Message, ...]:
    """The prompt set's system turn (if any), then the user turn: the role or method instruction
    (if any) before the problem prompt.

    The instruction goes into the user turn rather than a system turn because several reasoning
    models' templates reject or ignore system messages.
    """
    text = prompts.render_problem(problem.problem, list(problem.choices) if problem.choices else None)
    if instruction:
        text = f"{instruction.strip()}\n\n{text}"
    system = prompts.render_system()
    return ((Message("system", system),) if system else ()) + (Message("user", text),)


def new_track_record(setup: TrackSetup) -> TrackRecord:
    return TrackRecord(track_id=setup.track_id, mode=setup.mode, role=setup.role, method=setup.method, seed=setup.seed)


async def run_track(
    record: TrackRecord,
    setup: TrackSetup,
    problem: Problem,
    models: dict[str, Model],
    prompts: PromptSet,
    config: ReasoningConfig,
) -> TrackRecord:
    """Reason on `problem` until an answer, filling `record`. Server errors end the track as
    "failed" (kept in the record); cancellation marks it "cancelled" and propagates."""
    started = time.monotonic()
    messages = track_messages(problem, prompts, setup.instruction)
    try:
        ending = await _think(record, setup, problem, models, prompts, config, messages)
        await _answer(record, ending, models, prompts, config, messages, multiple_choice=bool(problem.choices))
    except asyncio.CancelledError:
        record.finish_reason = "cancelled"
        raise
    except ServerError as exc:
        record.finish_reason = "failed"
        record.error = str(exc)
        log.warning("track_failed", track=setup.track_id, error=str(exc))
    finally:
        record.latency_s = time.monotonic() - started
        record.finished_at = time.time()
        # Until now record.usage holds only the answer request's usage; add the steps'.
        record.usage = sum_usage([s.usage for s in record.steps] + [record.usage])
    return record


def reasoning_text(record: TrackRecord, delimiter: str) -> str:
    """The steps so far joined by the delimiter, ending with one so the next step starts fresh."""
    return "".join(step.text + delimiter for step in record.steps)


async def _think(
    record: TrackRecord,
    setup: TrackSetup,
    problem: Problem,
    models: dict[str, Model],
    prompts: PromptSet,
    config: ReasoningConfig,
    messages: tuple[Message, ...],
) -> str:
    """Steps until thinking stops; returns why: "budget", "repeat", "answer", "think_end" or "eos"."""
    policy = POLICIES[setup.mode]
    while True:
        if record.thinking_tokens >= config.token_budget:
            return "budget"
        ctx = StepContext(
            models=models,
            messages=messages,
            reasoning=reasoning_text(record, config.step_delimiter),
            index=len(record.steps),
            config=_within_budget(config, record.thinking_tokens),
            prompts=prompts,
            problem=problem.problem,
            seed=setup.seed,
        )
        outcome = await policy(ctx)
        step = outcome.step
        previous = record.steps[-1].text if record.steps else None
        record.steps.append(step)
        record.thinking_tokens += step.tokens
        log.debug(
            "step_done",
            track=setup.track_id,
            index=step.index,
            writer=step.writer,
            score=step.score,
            tokens=step.tokens,
            ending=outcome.ending,
        )
        if not step.text.strip() or step.text == previous:
            return "repeat"
        if any(marker in step.text for marker in ANSWER_MARKERS):
            return "answer"
        if outcome.ending in ("think_end", "eos"):
            return outcome.ending


def _within_budget(config: ReasoningConfig, spent: int) -> ReasoningConfig:
    allowed = min(config.max_step_tokens, config.token_budget - spent)
    return config if allowed == config.max_step_tokens else dataclasses.replace(config, max_step_tokens=allowed)


async def _answer(
    record: TrackRecord,
    ending: str,
    models: dict[str, Model],
    prompts: PromptSet,
    config: ReasoningConfig,
    messages: tuple[Message, ...],
    *,
    multiple_choice: bool,
) -> None:
    """Close thinking and let the answer model write the answer, unless a step already gave it."""
    reasoning = reasoning_text(record, config.step_delimiter)
    record.finish_reason = ending
    if ending == "answer":
        record.answer = extract_answer(reasoning, choices=multiple_choice)
        record.answer_model = record.steps[-1].writer
        return
    model = models[config.answer_model]
    record.answer_model = model.role
    if ending in ("think_end", "eos"):
        closing = THINK_CLOSE + "\n\n" if model.chat.thinking else ""
    else:
        # The budget is spent or thinking went in circles: ask for the answer now.
        closing = prompts.render_answer()
        closing = closing if model.chat.thinking else closing.replace(THINK_CLOSE, "")
    prompt = model.chat.render(list(messages), model.chat.think_prefix + reasoning + closing)
    completion = await model.client.complete(
        prompt,
        max_tokens=config.answer_max_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
        seed=request_seed(record.seed, 0, ANSWER_SALT),
        extra=NO_SPECIAL_TOKENS,
    )
    record.usage = sum_usage([record.usage, {model.role: usage_of(completion)}])
    record.answer_text = completion.text
    record.answer_tokens = completion.completion_tokens
    record.answer = extract_answer(completion.text, choices=multiple_choice) or extract_answer(
        reasoning, choices=multiple_choice
    )
