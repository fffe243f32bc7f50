"""One reasoning track on one problem: the step loop, the final answer, and the record.

The track fills the `TrackRecord` it is given as it goes, so a scheduler that cancels it
still holds everything it did. Thinking stops as the seeds stop it (SpecReason's and SpecLRM's
loops), checked after each kept step in this order: the step states an answer ("boxed",
"Answer:", "ANSWER:"), the step repeats the previous one (compared only once there are more than
two steps), or the kept steps' tokens reach the budget (the last step is not clipped). A model
that closes thinking or ends its sequence inside a step does not end it: the step is kept and
reasoning goes on. The answer is then taken from the steps.

`--answer_phase` is spectra's alternative: a step also stops at `</think>`, closing thinking or
ending the sequence ends it, and unless a step stated the answer the answer model writes one
after the closed thinking.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import structlog

from engine.answers import extract_answer
from engine.chat import THINK_CLOSE, Message
from engine.config import ReasoningConfig
from engine.datasets import Problem
from engine.errors import ServerError, SpectraError
from engine.models import NO_SPECIAL_TOKENS, Model, request_seed, usage_of
from engine.policies.base import StepContext, TrackPolicy, thinking_ending
from engine.prompts import PromptSet
from engine.results import TrackRecord, sum_usage

log = structlog.get_logger(__name__)

# The answer request's salt for `request_seed`: apart from a step's draft, rewrite and single model.
ANSWER_SALT = 3


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
    """The user turn: the role or method instruction (if any) before the problem prompt.

    The instruction goes into the user turn rather than a system turn because several reasoning
    models' templates reject or ignore system messages.
    """
    text = prompts.render_problem(problem.problem, list(problem.choices) if problem.choices else None)
    if instruction:
        text = f"{instruction.strip()}\n\n{text}"
    return (Message("user", text),)


def new_track_record(setup: TrackSetup) -> TrackRecord:
    return TrackRecord(track_id=setup.track_id, mode=setup.mode, role=setup.role, method=setup.method, seed=setup.seed)


class Track:
    """One track on one problem, steppable: `advance` writes one step and `finish` the answer, so a
    strategy can drive many partial tracks; `run` does both until the end. The `TrackRecord` is
    filled as the track goes, so whoever cancels it still holds everything it did."""

    def __init__(
        self,
        record: TrackRecord,
        setup: TrackSetup,
        problem: Problem,
        models: dict[str, Model],
        prompts: PromptSet,
        config: ReasoningConfig,
        policy: TrackPolicy,
    ):
        self.record, self.setup, self.problem = record, setup, problem
        self.models, self.prompts, self.config, self.policy = models, prompts, config, policy
        self.messages = track_messages(problem, prompts, setup.instruction)
        self.ending: str | None = None
        self.started = time.monotonic()

    async def advance(self) -> str | None:
        """Write one step; returns why thinking ended ("answer", "repeat", "budget", with
        --answer_phase also "think_end" or "eos"), or None while it goes on."""
        record, config = self.record, self.config
        ctx = StepContext(
            models=self.models,
            messages=self.messages,
            reasoning=reasoning_text(record, config.step_delimiter),
            steps=tuple(step.text for step in record.steps),
            index=len(record.steps),
            config=config,
            prompts=self.prompts,
            problem=self.problem.problem,
            seed=self.setup.seed,
            thinking_tokens=record.thinking_tokens,
        )
        outcome = await self.policy.step(ctx)
        step = outcome.step
        record.steps.append(step)
        record.thinking_tokens += step.tokens
        log.debug(
            "step_done",
            track=self.setup.track_id,
            index=step.index,
            writer=step.writer,
            score=step.score,
            tokens=step.tokens,
            ending=outcome.ending,
        )
        texts = [s.text for s in record.steps]
        self.ending = thinking_ending(texts, record.thinking_tokens, outcome.ending, config, final=outcome.final)
        return self.ending

    async def finish(self) -> None:
        """Write the track's answer once thinking has ended."""
        await _answer(
            self.record,
            self.ending,
            self.models,
            self.prompts,
            self.config,
            self.messages,
            multiple_choice=bool(self.problem.choices),
        )

    def fail(self, error: BaseException) -> None:
        """Mark the track failed by `error`; its problem is still decided from the other tracks."""
        self.record.finish_reason = "failed"
        self.record.error = str(error) if isinstance(error, SpectraError) else f"{type(error).__name__}: {error}"
        log.warning("track_failed", track=self.setup.track_id, error=str(error))

    def close(self) -> None:
        """Cancel the policy's work ahead, stamp the time taken, and total the usage (the steps' and
        the answer's) and the work thrown away (the steps' and what the policy had ahead)."""
        ahead = self.policy.close()
        self.record.latency_s = time.monotonic() - self.started
        self.record.finished_at = time.time()
        self.record.usage = sum_usage([s.usage for s in self.record.steps] + [self.record.usage])
        self.record.wasted = sum_usage([s.wasted for s in self.record.steps] + [ahead])

    async def run(self) -> TrackRecord:
        """Reason until an answer. Any error inside the track ends it as "failed" (kept in the
        record) and its problem is still decided from the other tracks; only errors meant for
        the user (bad input, a server spectra started died, SIGTERM) stop the run. Cancellation
        marks it "cancelled" and propagates."""
        try:
            while await self.advance() is None:
                pass
            await self.finish()
        except asyncio.CancelledError:
            self.record.finish_reason = "cancelled"
            raise
        except ServerError as exc:
            self.fail(exc)
        except SpectraError:
            raise
        except Exception as exc:  # a bug or an unexpected answer must not end the whole run
            self.fail(exc)
            log.exception("track_error", track=self.setup.track_id)
        finally:
            self.close()
        return self.record


def reasoning_text(record: TrackRecord, delimiter: str) -> str:
    """The steps so far joined by the delimiter, ending with one so the next step starts fresh."""
    return "".join(step.text + delimiter for step in record.steps)


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
    """The answer from the steps (the seeds); with --answer_phase, unless a step stated it, the
    answer model closes thinking and writes it."""
    reasoning = reasoning_text(record, config.step_delimiter)
    record.finish_reason = ending
    if ending == "answer" or not config.answer_phase:
        record.answer = extract_answer(reasoning, choices=multiple_choice)
        record.answer_model = record.steps[-1].writer if record.answer is not None else None
        return
    model = models[config.answer_model]
    record.answer_model = model.role
    if ending in ("think_end", "eos"):
        closing = THINK_CLOSE + "\n\n" if model.chat.thinking else ""
    else:
        # The budget is spent or thinking went in circles: ask for the answer now.
        closing = prompts.render_answer()
        closing = closing if model.chat.thinking else closing.replace(THINK_CLOSE, "")
    prompt = model.chat.render(list(messages), model.chat.think_open + reasoning + closing)
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
