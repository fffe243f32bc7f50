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

A continuous policy's track (SplitReason's) ends only at EOS, at the budget, or when the
policy ends thinking.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from engine.data.answers import extract_answer
from engine.data.problems import Problem
from engine.data.prompts import PromptSet
from engine.errors import ServerError, SpectraError
from engine.reasoning.policies.base import StepContext, TrackPolicy, thinking_ending
from engine.reasoning.probing import ProbeSettings, agreed, probe
from engine.reasoning.settings import ReasoningConfig
from engine.records import FinishReason, StepEnding, StepRecord, TrackRecord, sum_usage
from engine.serving.chat import THINK_CLOSE, Message
from engine.serving.models import Model, Purpose

log = structlog.get_logger(__name__)


@dataclass(frozen=True)
class TrackSetup:
    """What distinguishes one track of a problem from another: the step policy that writes it, its
    role or method instruction, its seed and the token logprobs it asks of every token written."""

    track_id: int
    policy: str
    role: str | None = None
    method: str | None = None
    instruction: str | None = None
    seed: int | None = None
    # Top-k logprobs a strategy asks of every token the track's writer generates (None: none).
    token_logprobs: int | None = None


def track_messages(problem: Problem, prompts: PromptSet, setup: TrackSetup | None = None) -> tuple[Message, ...]:
    """The prompt set's system turn (if any), then the user turn, laid out as SpecLRM lays it out: a
    method's text inside the problem message (`problem_method`, after "Tips: "), a role's before it
    (`with_role`).

    The instruction goes into the user turn rather than a system turn because several reasoning
    models' templates reject or ignore system messages.
    """
    choices = list(problem.choices) if problem.choices else None
    method = (setup.instruction or "") if setup is not None and setup.method else ""
    text = prompts.render_problem(problem.problem, choices, method=method)
    if setup is not None and setup.role and setup.instruction:
        text = prompts.render_with_role(setup.instruction, text)
    system = prompts.render_system()
    return ((Message("system", system),) if system else ()) + (Message("user", text),)


def new_track_record(setup: TrackSetup) -> TrackRecord:
    return TrackRecord(
        track_id=setup.track_id, policy=setup.policy, role=setup.role, method=setup.method, seed=setup.seed
    )


def track_models(models: dict[str, Model], setup: TrackSetup) -> dict[str, Model]:
    """The run's models as the track's handles: each carries the track's seed and logprob request."""
    return {role: m.for_track(seed=setup.seed, token_logprobs=setup.token_logprobs) for role, m in models.items()}


class Track:
    """One track on one problem: `run` writes its steps with its policy, then its answer. `models`
    are the track's handles (`track_models`), the ones its policy was started with. The
    `TrackRecord` is filled as the track goes, so whoever cancels it still holds everything it did."""

    def __init__(
        self,
        record: TrackRecord,
        setup: TrackSetup,
        problem: Problem,
        models: dict[str, Model],
        prompts: PromptSet,
        config: ReasoningConfig,
        policy: TrackPolicy,
        *,
        continuous: bool = False,
        probing: ProbeSettings = ProbeSettings(),
    ):
        if continuous:
            # A continuous policy's chunks join as written and each may spend the whole budget left.
            config = dataclasses.replace(config, step_delimiter="", max_step_tokens=config.token_budget)
        self.record, self.setup, self.problem = record, setup, problem
        self.models, self.prompts, self.config, self.policy = models, prompts, config, policy
        self.continuous = continuous
        self.messages = track_messages(problem, prompts, setup)
        self.ending: FinishReason | None = None
        self.started = time.monotonic()
        self.probing, self.probes, self.unprobed_tokens = probing, [], 0
        self.probed: str | None = None  # the answer the probes agreed on

    async def _advance(self) -> FinishReason | None:
        """Write one step; returns why thinking ended (answer, repeat, budget, with --answer_phase
        also think_end or eos), or None while it goes on."""
        record, config = self.record, self.config
        ctx = StepContext(
            models=self.models,
            messages=self.messages,
            reasoning=reasoning_text(record, config.step_delimiter),
            steps=tuple(step.text for step in record.steps),
            index=len(record.steps),
            # A continuous policy's chunk may spend what is left of the budget, no more.
            config=_left_in_budget(config, record.thinking_tokens) if self.continuous else config,
            prompts=self.prompts,
            problem=self.problem.problem,
            thinking_tokens=record.thinking_tokens,
        )
        result = await self.policy.step(ctx)
        step = result.step
        record.steps.append(step)
        record.thinking_tokens += step.tokens
        log.debug(
            "step_done",
            track=self.setup.track_id,
            index=step.index,
            writer=step.writer,
            score=step.score,
            tokens=step.tokens,
            ending=result.ending,
        )
        if self.continuous:
            self.ending = self._continuous_ending(result.ending)
        else:
            texts = [s.text for s in record.steps]
            self.ending = thinking_ending(texts, record.thinking_tokens, result.ending, config, final=result.final)
        if self.ending is None and self.probing.probe_every is not None:
            await self._probe(step)
        return self.ending

    async def _probe(self, step: StepRecord) -> None:
        """Dynasor-CoT: once `probe_every` tokens were generated since the last probe, ask the step's
        writer for its answer; thinking ends ("probe") once the last `probe_agree` probes agree."""
        self.unprobed_tokens += step.tokens
        if self.unprobed_tokens < self.probing.probe_every:
            return
        self.unprobed_tokens = 0
        record, config = self.record, self.config
        found = await probe(
            self.models[step.writer],
            self.messages,
            reasoning_text(record, config.step_delimiter),
            index=len(record.steps),
        )
        self.probes.append(found)
        step.charge([found.cost])
        step.detail = {**(step.detail or {}), "probe": found.answer, "probe_hedged": found.hedged}
        choices = bool(self.problem.choices)
        self.probed = await asyncio.to_thread(agreed, self.probes, self.probing.probe_agree, multiple_choice=choices)
        if self.probed is not None:
            self.ending = FinishReason.PROBE

    def _continuous_ending(self, ending: StepEnding) -> FinishReason | None:
        """SplitReason's flows end only at EOS (the answer is then read from the text, as its harness
        does), at the budget, or when the policy ends thinking (think_end)."""
        if ending == StepEnding.THINK_END:
            return FinishReason.THINK_END  # the policy ended thinking: the answer is asked for, budget or not
        if self.record.thinking_tokens >= self.config.token_budget:
            return FinishReason.BUDGET
        if ending == StepEnding.EOS:
            reasoning = reasoning_text(self.record, self.config.step_delimiter)
            answered = extract_answer(reasoning, choices=bool(self.problem.choices))
            return FinishReason.ANSWER if answered else FinishReason.EOS
        return None

    async def _finish(self) -> None:
        """Write the track's answer once thinking has ended. A continuous policy that ended thinking
        itself (think_end: SplitReason's logprob_subselect) is then answered by the answer model,
        as SplitReason's flow asks the big model for the boxed answer."""
        if self.ending == FinishReason.PROBE:
            self.record.finish_reason = FinishReason.PROBE
            self.record.answer = self.probed
            self.record.answer_model = self.record.steps[-1].writer
            return
        config = self.config
        if self.continuous and self.ending == FinishReason.THINK_END:
            config = dataclasses.replace(config, answer_phase=True)
        await write_answer(
            self.record,
            self.ending,
            self.models,
            self.prompts,
            config,
            self.messages,
            multiple_choice=bool(self.problem.choices),
        )

    def fail(self, error: BaseException) -> None:
        """Mark the track failed by `error`; its problem is still decided from the other tracks."""
        self.record.finish_reason = FinishReason.FAILED
        self.record.error = str(error) if isinstance(error, SpectraError) else f"{type(error).__name__}: {error}"
        log.warning("track_failed", track=self.setup.track_id, error=str(error))

    def close(self) -> None:
        """Cancel the policy's work ahead (entered on the track, wasted), stamp the time taken, and
        total the usage (the steps' and the answer's) and the work thrown away (the steps' and the
        track's own)."""
        record = self.record
        record.charge(self.policy.close())
        record.latency_s = time.monotonic() - self.started
        record.finished_at = time.time()
        record.usage = sum_usage([s.usage for s in record.steps] + [record.usage])
        record.wasted = sum_usage([s.wasted for s in record.steps] + [record.wasted])

    async def run(self, stop_after: Callable[[TrackRecord], bool] | None = None) -> TrackRecord:
        """Reason until an answer. Any error inside the track ends it as "failed" (kept in the
        record) and its problem is still decided from the other tracks; only errors meant for
        the user (bad input, a server spectra started died, SIGTERM) stop the run. Cancellation
        marks it "cancelled" and propagates. `stop_after(record)`, asked after each step that does
        not end thinking, ends the track there as "stopped" (no answer) when it says so."""
        try:
            while await self._advance() is None:
                if stop_after is not None and stop_after(self.record):
                    self.record.finish_reason = FinishReason.STOPPED
                    return self.record
            await self._finish()
        except asyncio.CancelledError:
            self.record.finish_reason = FinishReason.CANCELLED
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


def _left_in_budget(config: ReasoningConfig, spent: int) -> ReasoningConfig:
    return dataclasses.replace(config, max_step_tokens=max(1, config.token_budget - spent))


def reasoning_text(record: TrackRecord, delimiter: str) -> str:
    """The steps so far joined by the delimiter, ending with one so the next step starts fresh."""
    return "".join(step.text + delimiter for step in record.steps)


async def write_answer(
    record: TrackRecord,
    ending: FinishReason,
    models: dict[str, Model],
    prompts: PromptSet,
    config: ReasoningConfig,
    messages: tuple[Message, ...],
    *,
    multiple_choice: bool,
) -> None:
    """The answer from the steps (the seeds); with --answer_phase, unless a step stated it, the
    answer model (the track's handle) closes thinking and writes it."""
    reasoning = reasoning_text(record, config.step_delimiter)
    record.finish_reason = ending
    if ending == FinishReason.ANSWER or not config.answer_phase:
        record.answer = extract_answer(reasoning, choices=multiple_choice)
        record.answer_model = record.steps[-1].writer if record.answer is not None else None
        return
    model = models[config.answer_model]
    record.answer_model = model.role
    if ending in (FinishReason.THINK_END, FinishReason.EOS):
        closing = THINK_CLOSE + "\n\n" if model.chat.thinking else ""
    else:
        # The budget is spent or thinking went in circles: ask for the answer now.
        closing = prompts.render_answer()
        closing = closing if model.chat.thinking else closing.replace(THINK_CLOSE, "")
    if THINK_CLOSE in reasoning:
        # A continuous text may have closed thinking itself: never a second `</think>`.
        closing = closing.replace(THINK_CLOSE, "")
    reply = await model.continue_text(
        messages,
        model.chat.think_open + reasoning + closing,
        purpose=Purpose.ANSWER,
        max_tokens=config.answer_max_tokens,
        temperature=config.temperature,
        top_p=config.top_p,
    )
    record.charge([reply.cost])
    record.answer_text = reply.text
    record.answer_tokens = reply.tokens
    record.answer = extract_answer(reply.text, choices=multiple_choice) or extract_answer(
        reasoning, choices=multiple_choice
    )
