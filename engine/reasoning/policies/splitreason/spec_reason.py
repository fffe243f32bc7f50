"""SplitReason's learned offload (mode `spec_reason`, modes/speculative_reasoning.py and
speculative_reasoning_perf.py): the small model writes until it opens a `<bigmodel>` span; the big
model then writes the span in chunks, from the text with every tag and the offload hint removed,
and the span closes where the small model would write `</bigmodel>` itself, or at a cap.

A step is one small-model stretch (ending at the opening tag, at EOS or at the budget) or one
whole big-model span. Whose turn it is follows from the text alone: an open span is the big
model's. The tags are plain text, as SplitReason trains them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from engine.data.prompts import PromptSet
from engine.reasoning.policies.base import (
    NothingAhead,
    PolicySpec,
    StepContext,
    StepResult,
    TokenScores,
    all_of,
    chunk_ending,
    chunk_step,
    continue_raw,
    reply_chunk,
)
from engine.reasoning.settings import ReasoningConfig, Settings
from engine.records import RequestCost, Role, StepEnding, StepOutcome
from engine.serving.chat import Message
from engine.serving.models import Model, Purpose, Reply

OPEN_TAG, CLOSE_TAG = "<bigmodel>", "</bigmodel>"
# SplitReason's constants (modes/speculative_reasoning.py): the big model writes a span in chunks
# of 64 tokens and the small model is probed for 8 tokens. Its span constant is 512 tokens, but its
# loop counts chunks from 1 and closes once the count exceeds 512 // 64: chunks 1-8 are probed, and
# the 9th is kept whole and closed unprobed, so a span holds up to 576 tokens.
SPAN_CHUNK_TOKENS = 64
PROBED_CHUNKS = 512 // SPAN_CHUNK_TOKENS
PROBE_TOKENS = 8
# A probe closes the span when its continuation starts with this, after whitespace (the perf
# version's test; a continuation that closes later would put small-model text in the span).
CLOSE_PROBE = "</big"
# The small model's stretches are drafts, the big model's chunks rewrites (`Purpose`); a span's
# chunks are numbered inside its step's index space, so every chunk draws its own seed.
CHUNK_STRIDE = 1024


def span_is_open(text: str) -> bool:
    return text.rfind(OPEN_TAG) > text.rfind(CLOSE_TAG)


@dataclass
class _Span:
    """A big-model span as it grows: its text, tokens and their scores, chunks, requests, and why it ended."""

    text: str = ""
    tokens: int = 0
    measured: TokenScores = TokenScores()
    chunks: int = 0
    ended: str = ""
    costs: list[RequestCost] = field(default_factory=list)

    def add(self, chunk: Reply, text: str, tokens: int, ended: str = "") -> None:
        """The first `tokens` tokens of `chunk`, `text`, join the span."""
        self.text, self.tokens, self.ended = self.text + text, self.tokens + tokens, ended
        self.measured += TokenScores.of(chunk, tokens)


@dataclass(frozen=True)
class SpecReasonPolicy(NothingAhead):
    hint: str

    async def step(self, ctx: StepContext) -> StepResult:
        if span_is_open(ctx.reasoning):
            return await self._big_span(ctx)
        return await self._small_stretch(ctx)

    def _small_messages(self, messages: tuple[Message, ...], problem: str) -> tuple[Message, ...]:
        """The problem's user turn (the last) with the offload hint right after the problem text, where
        SplitReason puts it: the question, the hint, then what follows the question (its terminating
        string: prompt set `splitreason`). A turn without the problem text as given gets it at its end."""
        users = [i for i, m in enumerate(messages) if m.role == "user"]
        if not users:
            return (*messages, Message("user", self.hint))
        at, content = users[-1], messages[users[-1]].content
        if problem and problem in content:
            hinted = content.replace(problem, f"{problem}\n{self.hint}", 1)
        else:
            hinted = f"{content}\n{self.hint}"
        return (*messages[:at], Message("user", hinted), *messages[at + 1 :])

    def _big_view(self, text: str) -> str:
        """What the big model is shown: no tags, no hint (SplitReason strips both)."""
        return text.replace(OPEN_TAG, "").replace(CLOSE_TAG, "").replace(self.hint, "")

    async def _small_stretch(self, ctx: StepContext) -> StepResult:
        """The small model writes until it opens a span (the tag is kept), EOS or the budget."""
        started = time.monotonic()
        reply = await continue_raw(
            ctx.models[Role.SMALL],
            self._small_messages(ctx.messages, ctx.problem),
            ctx.reasoning,
            ctx,
            purpose=Purpose.DRAFT,
            index=ctx.index,
            max_tokens=ctx.config.max_step_tokens,
            stop=[OPEN_TAG],
        )
        # vLLM leaves the stop string out of the text; the tag is added back here, as the seed
        # keeps it in the output. (The seed also appends its final text twice at EOS: not here.)
        opened = reply.stop_reason == OPEN_TAG
        text = reply.text + OPEN_TAG if opened else reply.text
        ending = StepEnding.DELIMITER if opened else chunk_ending(reply)
        detail = {"ended": "open_tag" if opened else ending}
        step = reply_chunk(reply, Role.SMALL, ctx, started, detail, outcome=StepOutcome.WRITTEN, text=text)
        return StepResult(step, ending)

    async def _big_span(self, ctx: StepContext) -> StepResult:
        """The big model writes the open span; it is closed with `</bigmodel>` unless it ended the
        sequence or the budget."""
        started = time.monotonic()
        span = _Span()
        await self._write_span(ctx, span)
        text = span.text + CLOSE_TAG if span.ended in ("probe", "cap") else span.text
        ending = {"eos": StepEnding.EOS, "budget": StepEnding.LENGTH}.get(span.ended, StepEnding.DELIMITER)
        detail = {"ended": span.ended, "chunks": span.chunks}
        outcome = StepOutcome.TAKEN_OVER
        step = chunk_step(
            text, Role.BIG, span.tokens, ctx, span.costs, started, detail, outcome=outcome, measured=span.measured
        )
        return StepResult(step, ending)

    async def _write_span(self, ctx: StepContext, span: _Span) -> None:
        """Chunk by chunk until EOS, the cap, the budget, or the longest prefix of the last chunk
        after which the small model would close the span (SplitReason's offload loop, 3a-d)."""
        while True:
            left = ctx.config.max_step_tokens - span.tokens
            if left <= 0:
                span.ended = "budget"
                return
            chunk = await continue_raw(
                ctx.models[Role.BIG],
                ctx.messages,
                self._big_view(ctx.reasoning + span.text),
                ctx,
                purpose=Purpose.REWRITE,
                index=ctx.index * CHUNK_STRIDE + span.chunks,
                max_tokens=min(SPAN_CHUNK_TOKENS, left),
                logprobs=1,  # for the chunk's token strings, where the probes cut it
            )
            span.chunks += 1
            span.costs.append(chunk.cost)
            if chunk.finish_reason != "length":
                span.add(chunk, chunk.text, chunk.tokens, ended="eos")
                return
            if span.chunks > PROBED_CHUNKS:
                span.add(chunk, chunk.text, chunk.tokens, ended="cap")
                return
            prefixes = _token_prefixes(chunk)
            cut = await self._probe(ctx, span, prefixes)
            if cut is not None:
                span.add(chunk, prefixes[cut], cut, ended="probe")
                return
            span.add(chunk, chunk.text, chunk.tokens)

    async def _probe(self, ctx: StepContext, span: _Span, prefixes: dict[int, str]) -> int | None:
        """The longest prefix (in tokens) after which the small model writes `</bigmodel>`, from one
        batch of concurrent 8-token probes; None when no probe closes the span."""
        messages = self._small_messages(ctx.messages, ctx.problem)
        probes = await all_of(
            continue_raw(
                ctx.models[Role.SMALL],
                messages,
                ctx.reasoning + span.text + prefix,
                ctx,
                # Greedy and unseeded (`Purpose.SPAN_PROBE`): a probe asks what the small model would
                # write next, the same answer every time; and vLLM-CPU's engine dies ("CPU Generator
                # does not use offset") on a batch of many concurrent seeded requests.
                purpose=Purpose.SPAN_PROBE,
                index=0,
                max_tokens=PROBE_TOKENS,
                greedy=True,
            )
            for prefix in prefixes.values()
        )
        span.costs += [probe.cost for probe in probes]
        closing = [n for n, probe in zip(prefixes, probes, strict=True) if probe.text.lstrip().startswith(CLOSE_PROBE)]
        # The longest closing prefix, as the perf version does (the other version scans the probes
        # in reverse but indexes the prefixes forward, and cuts at the wrong point).
        return max(closing) if closing else None


def _token_prefixes(chunk: Reply) -> dict[int, str]:
    """Token count -> the chunk's text up to there, from the token strings of its logprobs.

    vLLM holds back a token that ends inside a character (its string is "") and writes bytes that
    never form a character as U+FFFD in the text: such a token gives no cut point, and the U+FFFD
    are stepped over. A token string found nowhere else (e.g. the EOS token's) ends the list, so
    a cut is never put at a wrong place."""
    text, prefixes, at = chunk.text, {}, 0
    for n, token in enumerate(chunk.choice.tokens, start=1):
        if not text.startswith(token, at):
            after = at
            while after < len(text) and text[after] == "\ufffd":
                after += 1
            if after == at or not text.startswith(token, after):
                break
            at = after
        at += len(token)
        if token:
            prefixes[n] = text[:at]
    return prefixes


def start(settings: Settings, models: dict[str, Model], prompts: PromptSet, reasoning: ReasoningConfig):
    return SpecReasonPolicy(prompts.render_offload_hint())


SPEC_REASON = PolicySpec(
    name="spec_reason",
    description="SplitReason: the small model writes and tags <bigmodel> spans, which the big model writes",
    roles=(Role.SMALL, Role.BIG),
    settings=Settings,
    templates=("offload_hint",),
    gives_token_logprobs=True,
    start=start,
    continuous=True,
)
