"""The contract of a step policy: how ONE reasoning step of a track is produced.

A `PolicySpec` declares a policy's name, the model roles it calls, its settings (a frozen
`Settings` dataclass whose fields are its flags), the prompt-set templates it renders, whether
its steps record token logprobs, and `start`, which makes the per-track object whose `step` is
called once per step, so a policy can keep state from step to step. A policy asks its models
through the track's handles (`engine.serving.models.Model`), naming each request's `Purpose`.
The helpers below are what most policies share.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Generic, Protocol, TypeVar

from engine.data.prompts import PromptSet
from engine.errors import ServerError
from engine.reasoning.confidence import DECIMALS, step_confidences
from engine.reasoning.settings import ReasoningConfig, Settings
from engine.records import FinishReason, RequestCost, StepEnding, StepOutcome, StepRecord
from engine.serving.chat import THINK_CLOSE, Message
from engine.serving.models import Model, Purpose, Reply


@dataclass(frozen=True)
class StepContext:
    """What a policy needs to write step `index` after `reasoning` (the kept steps so far, each
    followed by the delimiter) and `thinking_tokens` (their tokens). `models` are the track's
    handles (`Model.for_track`): they carry its seed and the token logprobs it asks for. As in the
    seeds, `config.max_step_tokens` is not clipped to the budget left: the budget is checked after
    the step."""

    models: dict[str, Model]
    messages: tuple[Message, ...]
    reasoning: str
    steps: tuple[str, ...]
    index: int
    config: ReasoningConfig
    prompts: PromptSet
    problem: str
    thinking_tokens: int = 0


@dataclass(frozen=True)
class StepResult:
    """A kept step, and how its generation ended (a `StepEnding`). `final`: the policy wrote the
    whole reasoning in this one step, so thinking ends with it. A continuous policy (see
    `PolicySpec`) returns `StepEnding.THINK_END` when it has ended thinking itself.
    """

    step: StepRecord
    ending: StepEnding
    final: bool = False


class TrackPolicy(Protocol):
    """One track's policy: writes the track's steps one at a time. `close` is called once when the
    track ends (finished, failed or cancelled): it cancels any work the policy started ahead of the
    steps asked for, and returns the cost entries of that work (all wasted)."""

    async def step(self, ctx: StepContext) -> StepResult: ...

    def close(self) -> list[RequestCost]: ...


class NothingAhead:
    """Base of the policies that start no work ahead of the step asked for: nothing to cancel."""

    def close(self) -> list[RequestCost]:
        return []


S = TypeVar("S", bound=Settings)


@dataclass(frozen=True)
class PolicySpec(Generic[S]):
    """A registered policy. `start(settings, models, prompts, reasoning)` returns one track's policy;
    `models` are the track's handles.

    A `continuous` policy writes one unbroken text in chunks (SplitReason): its steps are joined
    as they are, not by the step delimiter, each may spend all the budget left, and the track ends
    only at EOS, at the budget, or when the policy ends thinking, not by SpecReason's stop rules.
    `gives_token_logprobs`: its kept steps record their tokens' confidences when the track asks for
    token logprobs (what DeepConf weighs traces by). `one_request(settings)`: it writes the whole trace
    in one request, so nothing runs between its steps.
    """

    name: str
    description: str
    roles: tuple[str, ...]
    settings: type[S]
    templates: tuple[str, ...]
    gives_token_logprobs: bool
    start: Callable[[S, dict[str, Model], PromptSet, ReasoningConfig], TrackPolicy]
    continuous: bool = False
    # The roles these settings call, when not all of `roles` (a verifier's own model, say).
    needed_roles: Callable[[S], tuple[str, ...]] | None = None
    # Whether these settings write a whole trace in one request: no step boundary for a check
    # between steps (DeepConf online, probing) to run at.
    one_request: Callable[[S], bool] = lambda settings: False
    # What these settings cannot do with the track's reasoning config (one line), or None.
    check_track: Callable[[S, ReasoningConfig], str | None] = lambda settings, reasoning: None
    # The track flags (`ReasoningConfig`'s) this policy's paper sets otherwise than SpecReason, given
    # to those a user left unset (Lookahead Reasoning's 100-token steps); a runner's own defaults
    # (the demo's short steps) and the user's flags come over them.
    track_defaults: Mapping[str, Any] = field(default_factory=dict)

    def roles_for(self, settings: S) -> tuple[str, ...]:
        return self.roles if self.needed_roles is None else self.needed_roles(settings)


def thinking_ending(
    steps: Sequence[str], thinking_tokens: int, ending: StepEnding, config: ReasoningConfig, *, final: bool = False
) -> FinishReason | None:
    """Why thinking ends after the last of the kept `steps` (texts), which ended as `ending`, with
    `thinking_tokens` kept in all; None while it goes on. SpecLRM's order: a stated answer, a
    repeated step (SpecReason compares only when there are more than two steps), the budget (kept
    tokens, checked after the step). Under `--stop_rule rsd`, RSD's: a step that ended the sequence
    or hit its token limit, then the budget. Then `--max_steps`. A policy that wrote the whole
    reasoning in one request (`final`) ends it whatever the step says. The track's loop applies it
    after each step; a policy that works ahead applies it to foresee whether the loop will ask for
    another step."""
    text = steps[-1]
    if config.stop_rule == "rsd":
        # RSD (main_online.py) ends a trace whose step stopped otherwise than at the step word
        # (vLLM's stop_reason None: the end of the sequence, or max_tokens).
        if ending in (StepEnding.EOS, StepEnding.LENGTH):
            return FinishReason(ending)
    elif any(marker in text for marker in ANSWER_MARKERS):
        return FinishReason.ANSWER
    elif len(steps) > 2 and text == steps[-2]:
        return FinishReason.REPEAT
    if thinking_tokens >= config.token_budget or (final and ending == StepEnding.LENGTH):
        return FinishReason.BUDGET
    if config.max_steps is not None and len(steps) >= config.max_steps:
        return FinishReason.MAX_STEPS
    if final:
        return FinishReason.EOS  # the one request ended by itself without stating an answer
    if config.answer_phase and ending in (StepEnding.THINK_END, StepEnding.EOS):
        return FinishReason(ending)
    return None


def next_context(ctx: StepContext, text: str, tokens: int) -> StepContext:
    """The context of the step after the one of `ctx`, had that step kept `text` of `tokens`
    tokens: the reasoning grows by the step and the delimiter, as `engine.reasoning.track.reasoning_text`
    joins the kept steps."""
    return dataclasses.replace(
        ctx,
        reasoning=ctx.reasoning + text + ctx.config.step_delimiter,
        steps=(*ctx.steps, text),
        index=ctx.index + 1,
        thinking_tokens=ctx.thinking_tokens + tokens,
    )


async def generate_step(model: Model, ctx: StepContext, *, purpose: Purpose, n: int = 1) -> Reply:
    """`model` continues the reasoning by one step, stopping at the delimiter only (the seeds'
    `stop=["\n\n"]`); with --answer_phase also at the end of thinking. `n` > 1: that many
    candidates in one request (`Reply.candidates`), each with its sampled tokens' logprobs, which
    count its tokens."""
    closing = [THINK_CLOSE] if ctx.config.answer_phase and model.chat.thinking else []
    several = {"n": n, "logprobs": 0} if n > 1 else {}
    return await model.continue_reasoning(
        ctx.messages,
        ctx.reasoning,
        purpose=purpose,
        index=ctx.index,
        max_tokens=ctx.config.max_step_tokens,
        temperature=ctx.config.temperature,
        top_p=ctx.config.top_p,
        stop=[ctx.config.step_delimiter, *closing],
        **several,
    )


@dataclass(frozen=True)
class TokenScores:
    """Per generated token of a step, DeepConf's confidence and the sampled token's logprob (`None`
    when its requests asked for no logprobs)."""

    confidence: list[float] | None = None
    logprob: list[float] | None = None

    @classmethod
    def of(cls, reply: Reply, tokens: int | None = None) -> TokenScores:
        """The first `tokens` (default all) generated tokens' scores of `reply`; none unless the
        track asked for them (a policy's own logprobs, SplitReason's, are not the track's)."""
        if not reply.measured:
            return cls()
        choice = reply.choice
        tops, logprobs = choice.top_logprobs[:tokens], choice.token_logprobs[:tokens]
        return cls(
            step_confidences(tops) if tops else None,
            [round(lp, DECIMALS) for lp in logprobs] if logprobs else None,
        )

    def __add__(self, other: TokenScores) -> TokenScores:
        """The scores of a step written by several requests, in order."""

        def joined(a: list[float] | None, b: list[float] | None) -> list[float] | None:
            return None if a is None and b is None else (a or []) + (b or [])

        return TokenScores(joined(self.confidence, other.confidence), joined(self.logprob, other.logprob))


def kept_step(
    reply: Reply,
    writer: str,
    index: int,
    costs: Iterable[RequestCost],
    started: float,
    *,
    delimiter: str,
    outcome: StepOutcome,
    **scored: Any,
) -> StepRecord:
    """The step record of `reply` as kept in the track, written by `writer`, charged with the
    `costs` of every request made for it; `outcome` says what became of it. Tokens' scores are kept
    when the track asked for them (`TokenScores.of`)."""
    measured = TokenScores.of(reply)
    step = StepRecord(
        index=index,
        text=without_stray_think_close(reply.text),
        writer=writer,
        tokens=reply.tokens,
        latency_s=time.monotonic() - started,
        ending=reply.step_ending(delimiter),
        outcome=outcome,
        token_confidence=measured.confidence,
        token_logprob=measured.logprob,
        **scored,
    )
    step.charge(costs)
    return step


# SpecReason ends thinking at a step that states the answer.
ANSWER_MARKERS = ("boxed", "Answer:", "ANSWER:")


def without_stray_think_close(text: str) -> str:
    """SpecReason's edge case: a `</think>` in a step that states no answer is removed, and
    reasoning goes on; in a step with an answer it is kept."""
    if THINK_CLOSE in text and not any(marker in text for marker in ANSWER_MARKERS):
        return text.replace(THINK_CLOSE, "")
    return text


async def continue_raw(
    model: Model,
    messages: tuple[Message, ...],
    text: str,
    ctx: StepContext,
    *,
    purpose: Purpose,
    index: int,
    max_tokens: int,
    stop: list[str] | None = None,
    greedy: bool = False,
    logprobs: int | None = None,
    token_ids: bool = False,
    top_k: int | None = None,
) -> Reply:
    """`model` continues the raw reasoning `text` (tags and all) by up to `max_tokens` tokens:
    SplitReason's requests (and Speculative Thinking's), which stop only at EOS, the token limit, or
    `stop`. With `token_ids` the logprobs name tokens `token_id:N` (vLLM's
    `return_tokens_as_token_ids`), not by string; `top_k`: vLLM's top-k sampling."""
    # SplitReason's prompt opens thinking with "<think>\n" before the text it continues.
    opening = model.chat.think_open + "\n" if model.chat.thinking else ""
    return await model.continue_text(
        messages,
        opening + text,
        purpose=purpose,
        index=index,
        max_tokens=max_tokens,
        temperature=0.0 if greedy else ctx.config.temperature,
        top_p=1.0 if greedy else ctx.config.top_p,
        stop=stop,
        logprobs=logprobs,
        options={**({"return_tokens_as_token_ids": True} if token_ids else {}), **({"top_k": top_k} if top_k else {})},
    )


def chunk_ending(reply: Reply) -> StepEnding:
    """How a chunk without stop strings ended: `LENGTH` (more to write) or `EOS`."""
    return StepEnding.LENGTH if reply.finish_reason == "length" else StepEnding.EOS


def chunk_step(
    text: str,
    writer: str,
    tokens: int,
    ctx: StepContext,
    costs: Iterable[RequestCost],
    started: float,
    detail: dict[str, Any] | None = None,
    *,
    outcome: StepOutcome,
    measured: TokenScores = TokenScores(),
) -> StepRecord:
    """The record of a chunk of continuous text, kept as written (`</think>` included), charged
    with `costs`; `measured`: its tokens' scores."""
    step = StepRecord(
        index=ctx.index,
        text=text,
        writer=writer,
        tokens=tokens,
        latency_s=time.monotonic() - started,
        detail=detail,
        outcome=outcome,
        token_confidence=measured.confidence,
        token_logprob=measured.logprob,
    )
    step.charge(costs)
    return step


def reply_chunk(
    reply: Reply,
    writer: str,
    ctx: StepContext,
    started: float,
    detail: dict[str, Any] | None = None,
    *,
    outcome: StepOutcome,
    text: str | None = None,
) -> StepRecord:
    """The record of a chunk that one request wrote (`text`: its text as kept, default the reply's)."""
    text = reply.text if text is None else text
    measured = TokenScores.of(reply)
    return chunk_step(
        text, writer, reply.tokens, ctx, [reply.cost], started, detail, outcome=outcome, measured=measured
    )


async def all_of(requests: Iterable[Awaitable[Any]]) -> list[Any]:
    """Await `requests` concurrently, in one task group; the first failure cancels the others. A
    server error comes out as itself, not wrapped in an ExceptionGroup, so that the track's
    handling of server errors (the track fails, the problem goes on) still applies."""
    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(request) for request in requests]
    except ExceptionGroup as failures:
        server_errors = failures.subgroup(ServerError)
        if server_errors is None:
            raise
        while isinstance(server_errors, ExceptionGroup):
            server_errors = server_errors.exceptions[0]
        raise server_errors from failures
    return [task.result() for task in tasks]


def discard(task: asyncio.Task) -> None:
    """Cancel work started ahead that no step will use, and retrieve its outcome when it ends, so a
    request that failed before it was thrown away is not reported as an exception nobody retrieved."""
    task.cancel()
    task.add_done_callback(_retrieve)


def _retrieve(task: asyncio.Task) -> None:
    if not task.cancelled():
        task.exception()
