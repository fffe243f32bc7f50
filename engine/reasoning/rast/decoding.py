"""RAST decoding against three stock vLLM servers: token mode (the reference) and speculative mode.

Token mode asks the base, positive and negative models for their top-k logprobs at the same
prefix (three concurrent one-token requests per token) and samples RAST's distribution
(`engine.reasoning.rast.transfer`). Speculative mode lets the base model draft `gamma` tokens, has the
positive and negative models score the chunk's positions in one request each (`prompt_logprobs`
on prefix + chunk), and keeps each drafted token with probability min(1, p_rast / p_base), so
the tokens it emits are distributed exactly as token mode's (see `verify_chunk`).

What the servers must be: vLLM OpenAI servers in `--logprobs-mode raw_logprobs` (vLLM's default:
logprobs are log-softmax of the raw logits, before penalties, temperature and top-p; the
`processed_*` modes would fold the request's own sampling settings in), with `--max-logprobs` at
least the k asked for, serving models of one tokenizer family (`engine.reasoning.rast.vocab` checks it).
Every request sends token ids, never text, so no model re-tokenises the prefix differently, and
asks for `return_tokens_as_token_ids` so answers name tokens by id, not by lossy decoded strings.
That, `prompt_logprobs` and the per-sample seeds are why this module calls `ModelClient.complete`
itself rather than the model handle (`engine.serving.models`); its cost entries still come from the
handle's `cost_of`, one entry per model a sample, summing its thousands of one-token requests.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog

from engine.errors import ServerError, UsageError
from engine.reasoning.rast.transfer import (
    ROLES,
    Distribution,
    TopK,
    combine,
    draft_distribution,
    sample,
    sampling_distribution,
    top_k,
    verify_chunk,
)
from engine.records import ModelUsage, RequestCost, Role, usage_of_costs
from engine.serving.client import Completion, ModelClient
from engine.serving.models import Purpose, cost_of

log = structlog.get_logger(__name__)

MODES = ("token", "speculative")
TOKEN_ID_PREFIX = "token_id:"  # how vLLM names tokens under return_tokens_as_token_ids
# Stop strings can span tokens; decoding this many trailing tokens finds any stop string shorter
# than them without decoding the whole text after every token.
STOP_WINDOW_TOKENS = 64


@dataclass(frozen=True)
class RastSampling:
    """RAST's decoding settings (its runner's flags) and spectra's own (`mode`, `gamma`, `logprobs`)."""

    alpha: float = 1.0
    temperature: float = 1.0
    top_p: float = 0.95
    max_tokens: int = 16384
    mode: str = "speculative"
    gamma: int = 8
    logprobs: int = 20
    aux_logprobs: int = 200

    def __post_init__(self) -> None:
        if self.mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {self.mode!r}")
        if self.temperature < 0 or not 0 < self.top_p <= 1 or self.gamma < 1 or self.logprobs < 1:
            raise ValueError("need temperature >= 0, 0 < top_p <= 1, gamma >= 1 and logprobs >= 1")
        if self.aux_logprobs < self.logprobs:
            raise ValueError("the positive and negative models need at least as many logprobs as the base")

    def k_of(self, role: str) -> int:
        """Logprobs asked of `role`: k of the base, many more of the two cheap small models
        (`transfer.Combined` says why)."""
        return self.logprobs if role == Role.BASE else self.aux_logprobs


@dataclass(frozen=True)
class RastModels:
    """The three clients: the big base model, the small RL-tuned positive and its pre-RL negative."""

    base: ModelClient
    positive: ModelClient
    negative: ModelClient


@dataclass(frozen=True)
class TokenSpace:
    """The ids the three models share: ids below `vocab_limit`, ended by `stop_token_ids`,
    turned into text by `decode` (the base tokenizer, special tokens skipped)."""

    vocab_limit: int
    stop_token_ids: frozenset[int]
    decode: Callable[[list[int]], str]


@dataclass(frozen=True)
class ChunkStat:
    """One speculative chunk: tokens drafted, drafted tokens accepted."""

    drafted: int
    accepted: int

    @property
    def judged(self) -> int:
        """Drafted tokens the acceptance rule decided on: all kept ones, and the first rejected."""
        return self.accepted + (self.accepted < self.drafted)


@dataclass
class RastOutput:
    """One decoded continuation and what it cost.

    `top_k_fills` counts, per model, the candidate tokens filled with the model's lowest returned
    logprob because they were outside what it returned; `positions` counts the combined
    distributions computed; `costs` holds one entry per model, its requests summed.
    """

    token_ids: list[int] = field(default_factory=list)
    text: str = ""
    finish_reason: str = "length"
    stop_reason: str | int | None = None
    chunks: list[ChunkStat] = field(default_factory=list)
    top_k_fills: dict[str, int] = field(default_factory=lambda: dict.fromkeys(ROLES, 0))
    positions: int = 0
    costs: dict[str, RequestCost] = field(default_factory=dict)

    @property
    def usage(self) -> dict[str, ModelUsage]:
        return usage_of_costs(self.costs.values())

    @property
    def requests(self) -> int:
        return sum(u.requests for u in self.usage.values())

    @property
    def requests_per_token(self) -> float | None:
        return self.requests / len(self.token_ids) if self.token_ids else None

    @property
    def fills_per_position(self) -> float | None:
        """Fills of all three models per combined position (the summary's figure)."""
        return sum(self.top_k_fills.values()) / self.positions if self.positions else None

    @property
    def acceptance(self) -> float | None:
        """Drafted tokens kept over drafted tokens judged, over all chunks (None in token mode):
        the tokens after a chunk's first rejection are never judged."""
        judged = sum(c.judged for c in self.chunks)
        return sum(c.accepted for c in self.chunks) / judged if judged else None


async def rast_decode(
    models: RastModels,
    prompt_ids: Sequence[int],
    sampling: RastSampling,
    space: TokenSpace,
    *,
    stop: Sequence[str] = (),
    seed: int = 0,
) -> RastOutput:
    """Decode from `prompt_ids` (base-tokenizer ids) with RAST until a stop token, a stop string
    or `max_tokens`. The same `seed` against the same servers gives the same tokens."""
    decoding = _Decoding(models, sampling, space, seed)
    out = decoding.out
    step = decoding.token_step if sampling.mode == "token" else decoding.chunk_step
    while True:
        remaining = sampling.max_tokens - len(out.token_ids)
        new = await step([*prompt_ids, *out.token_ids], remaining)
        if _extend(out, new[:remaining], space, stop) or len(out.token_ids) >= sampling.max_tokens:
            break
    if out.finish_reason == "length" or isinstance(out.stop_reason, int):
        out.text = space.decode(out.token_ids)
    log.debug("rast_decoded", tokens=len(out.token_ids), finish=out.finish_reason, requests=out.requests)
    return out


# Servers whose logprobs were checked to be raw, by URL: once per server and process.
_RAW_CHECKED: set[str] = set()
RAW_CHECK_TEMPERATURE = 2.0
RAW_CHECK_TOLERANCE = 1e-3


async def check_raw_logprobs(models: RastModels, prompt_ids: Sequence[int]) -> None:
    """UsageError unless every server returns raw logprobs: asked at temperature 0 and at 2, a
    raw server gives the same top logprobs, while one in a `processed_*` logprobs mode gives the
    tempered ones, which would silently change RAST's combination."""
    ids = list(prompt_ids)
    for role, client in _by_role(models):
        url = client.urls[0]
        if url in _RAW_CHECKED:
            continue
        a = await _next_top_k(client, ids, 5, role, RastOutput())
        b = await _next_top_k(client, ids, 5, role, RastOutput(), temperature=RAW_CHECK_TEMPERATURE)
        shared = a.keys() & b.keys()
        if any(abs(a[t] - b[t]) > RAW_CHECK_TOLERANCE for t in shared):
            raise UsageError(
                f"the {role} server at {url} returns processed logprobs (the request's temperature applied): "
                "RAST needs raw ones; start it with --logprobs-mode raw_logprobs"
            )
        _RAW_CHECKED.add(url)


def _extend(out: RastOutput, new: list[int], space: TokenSpace, stop: Sequence[str]) -> bool:
    """Append `new`; True when a stop token or stop string ended the text (vLLM's conventions:
    the stop token and the stop string are not part of the text)."""
    for token in new:
        out.token_ids.append(token)
        if token in space.stop_token_ids:
            out.finish_reason, out.stop_reason = "stop", token
            out.token_ids.pop()  # kept out of the text, as vLLM does with an EOS token
            return True
    if not stop:
        return False
    tail = space.decode(out.token_ids[-(STOP_WINDOW_TOKENS + len(new)) :])
    if not any(s in tail for s in stop):
        return False
    text = space.decode(out.token_ids)
    at, string = min((text.find(s), s) for s in stop if s in text)
    out.text, out.finish_reason, out.stop_reason = text[:at], "stop", string
    # A chunk may run past the stop string: the tokens after the one that completed it are not
    # part of the sample (vLLM counts up to that token, too).
    while len(out.token_ids) > 1 and string in space.decode(out.token_ids[:-1]):
        out.token_ids.pop()
    return True


@dataclass
class _Decoding:
    """One continuation being decoded: its models and settings, what it did so far, and its RNG
    (acceptance draws, token-mode samples; the drafts use vLLM's seeded sampling)."""

    models: RastModels
    sampling: RastSampling
    space: TokenSpace
    seed: int
    out: RastOutput = field(default_factory=RastOutput)
    rng: random.Random = field(init=False)

    def __post_init__(self) -> None:
        self.rng = random.Random(self.seed)

    async def token_step(self, ids: list[int], remaining: int) -> list[int]:
        """One token: the three models' top-k at `ids`, combined, tempered, top-p'd, sampled."""
        sampling, out = self.sampling, self.out
        async with asyncio.TaskGroup() as group:
            tasks = [
                group.create_task(_next_top_k(client, ids, sampling.k_of(role), role, out))
                for role, client in _by_role(self.models)
            ]
        base, positive, negative = (task.result() for task in tasks)
        return [sample(self.target(base, positive, negative), self.rng)]

    async def chunk_step(self, ids: list[int], remaining: int) -> list[int]:
        """One speculative chunk: the base drafts, positive and negative score, the rule decides."""
        sampling, space, out = self.sampling, self.space, self.out
        length = min(sampling.gamma, remaining)
        drafted, base_tops = await _draft(self.models.base, ids, length, sampling, self.seed, out)
        chunk = _until_stop(drafted[:length], space)
        async with asyncio.TaskGroup() as group:
            scored = [
                group.create_task(_score_chunk(client, ids, chunk, sampling.k_of(role), role, out))
                for role, client in _by_role(self.models)
                if role != Role.BASE
            ]
        (positive, positive_bonus), (negative, negative_bonus) = (task.result() for task in scored)
        targets = [self.target(base_tops[j], positive[j], negative[j]) for j in range(len(chunk))]
        drafts = [draft_distribution(base_tops[j], sampling.temperature, chunk[j]) for j in range(len(chunk))]
        # The bonus position needs the base's distribution after the whole chunk: the draft asks for
        # one token more than the chunk, whose logprobs give it (the token itself is not used).
        has_bonus = len(base_tops) > len(chunk) and not (chunk and chunk[-1] in space.stop_token_ids)
        bonus = self.target(base_tops[len(chunk)], positive_bonus, negative_bonus) if has_bonus else None
        verdict = verify_chunk(chunk, drafts, targets, bonus, self.rng)
        out.chunks.append(ChunkStat(len(chunk), verdict.accepted))
        return verdict.tokens

    def target(self, base: TopK, positive: TopK, negative: TopK) -> Distribution:
        """RAST's sampling distribution at one position, counting its top-k fills."""
        sampling = self.sampling
        combined = combine(base, positive, negative, sampling.alpha, self.space.vocab_limit, sampling.logprobs)
        for role, fills in combined.fills.items():
            self.out.top_k_fills[role] += fills
        self.out.positions += 1
        return sampling_distribution(combined.scores, sampling.temperature, sampling.top_p)


def _until_stop(tokens: list[int], space: TokenSpace) -> list[int]:
    """The chunk up to and including its first stop token (the draft ignores EOS; what follows a
    stop token is never emitted)."""
    for j, token in enumerate(tokens):
        if token in space.stop_token_ids:
            return tokens[: j + 1]
    return tokens


def _by_role(models: RastModels) -> list[tuple[str, ModelClient]]:
    return [(role, getattr(models, role)) for role in ROLES]


async def _next_top_k(
    client: ModelClient, ids: list[int], k: int, role: str, out: RastOutput, *, temperature: float = 0.0
) -> TopK:
    """The model's top-k logprobs for the token after `ids` (raw logprobs: the request's own
    greedy sampling does not change them)."""
    completion = await _ask(
        client,
        role,
        out,
        ids,
        max_tokens=1,
        temperature=temperature,
        logprobs=k,
        seed=0 if temperature else None,  # the start-up check's tempered request: reproducible
        extra=_ID_TOKENS,
    )
    tops = completion.top_logprobs
    if not tops:
        raise ServerError(client.urls[0], None, f"the {role} model returned no logprobs; is it a vLLM server?")
    return top_k(_by_id(tops[0]), k)


async def _draft(
    base: ModelClient, ids: list[int], length: int, sampling: RastSampling, seed: int, out: RastOutput
) -> tuple[list[int], list[TopK]]:
    """`length` + 1 tokens drafted by the base model and its top-k at each of their positions.

    The sampler is pinned so that `draft_distribution` is what vLLM really sampled from:
    temperature T, top_k k, and no top-p, min-p or penalties (explicit, because vLLM otherwise
    takes defaults from the model's generation_config.json).
    """
    k = sampling.logprobs
    extra = {**_ID_TOKENS, "min_p": 0.0, "repetition_penalty": 1.0, "presence_penalty": 0.0, "frequency_penalty": 0.0}
    # ignore_eos: the draft always has length + 1 tokens; stop tokens are this module's to handle.
    extra["ignore_eos"] = True
    if sampling.temperature > 0:
        extra["top_k"] = k
    completion = await _ask(
        base,
        Role.BASE,
        out,
        ids,
        max_tokens=length + 1,
        temperature=sampling.temperature,
        # A seed per chunk: vLLM's seeded sampling makes the draft, and so the run, reproducible.
        seed=random.Random(f"{seed}:{len(ids)}").getrandbits(31),
        logprobs=k,
        extra=extra,
    )
    choice = completion.choices[0]
    drafted = [_TOKEN_IDS[token] for token in choice.tokens]
    if not drafted or len(choice.top_logprobs) != len(drafted):
        raise ServerError(base.urls[0], None, "the base model's draft came without one top-k per token")
    tops = [top_k(_by_id(top), k) for top in choice.top_logprobs]
    if sampling.temperature > 0 and any(token not in top for token, top in zip(drafted, tops, strict=True)):
        # Then the draft distribution is unknown and the acceptance rule would be wrong.
        raise ServerError(base.urls[0], None, f"the base model drafted a token outside its top {k}: it ignores top_k")
    return drafted, tops


async def _score_chunk(
    client: ModelClient, ids: list[int], chunk: list[int], k: int, role: str, out: RastOutput
) -> tuple[list[TopK], TopK]:
    """The model's top-k at each chunk position (prompt_logprobs of prefix + chunk: entry i is the
    distribution that predicted prompt token i) and after the chunk (the one generated token's)."""
    # Not streamed (`_ask`): vLLM refuses prompt_logprobs on streamed requests.
    completion = await _ask(
        client,
        role,
        out,
        [*ids, *chunk],
        max_tokens=1,
        temperature=0.0,
        logprobs=k,
        extra={**_ID_TOKENS, "prompt_logprobs": k},
    )
    choice = completion.choices[0]
    prompt = choice.prompt_logprobs
    if len(prompt) != len(ids) + len(chunk) or not choice.top_logprobs:
        raise ServerError(client.urls[0], None, f"the {role} model's prompt_logprobs do not cover the prompt")
    positions = [top_k(prompt[len(ids) + j] or {}, k) for j in range(len(chunk))]
    return positions, top_k(_by_id(choice.top_logprobs[0]), k)


_ID_TOKENS = {"return_tokens_as_token_ids": True}


class _TokenIds(dict[str, int]):
    """Token names (`token_id:N`) to ids, each name parsed once: a draft names 9 x 21 tokens, and
    parsing them again every time took about a tenth of the engine's profiled time a speculative
    token. Bounded by the vocabulary."""

    def __missing__(self, name: str) -> int:
        self[name] = token = _token_id(name)
        return token


_TOKEN_IDS = _TokenIds()


def _token_id(name: str) -> int:
    if not name.startswith(TOKEN_ID_PREFIX):
        raise UsageError(
            f"a server named a token {name!r}, not {TOKEN_ID_PREFIX}N: it ignores return_tokens_as_token_ids; "
            "RAST needs vLLM OpenAI servers that support it"
        )
    return int(name[len(TOKEN_ID_PREFIX) :])


def _by_id(top: dict[str, float]) -> TopK:
    return {_TOKEN_IDS[name]: logprob for name, logprob in top.items()}


async def _ask(client: ModelClient, role: str, out: RastOutput, ids: list[int], **request: Any) -> Completion:
    """One whole (not streamed) request of RAST's, top_p 1, entered in `out`."""
    started_at = time.time()
    completion = await client.complete(ids, top_p=1.0, stream=False, purpose=Purpose.RAST, **request)
    _account(out, role, completion, started_at)
    return completion


def _account(out: RastOutput, role: str, completion: Completion, started_at: float) -> None:
    """Enter a request in its model's one entry of the sample: a sample sends thousands of one-token
    requests, and an entry each would make its record megabytes long. The entry spans the first
    request's start to the last one's end (a sample's requests to one model run one after another)."""
    cost = cost_of(role, Purpose.RAST, completion, started_at)
    entry = out.costs.get(role)
    if entry is None:
        out.costs[role] = cost
        return
    entry.prompt_tokens += cost.prompt_tokens
    entry.completion_tokens += cost.completion_tokens
    if cost.cached_prompt_tokens is not None:
        entry.cached_prompt_tokens = (entry.cached_prompt_tokens or 0) + cost.cached_prompt_tokens
    entry.attempts += cost.attempts
    entry.requests += 1
    entry.client_s = round(entry.client_s + cost.client_s, 4)
    entry.ended_at = cost.ended_at
    for timing in ("queue_s", "prefill_s", "generation_s"):  # the server's seconds, where it reports them
        if (seconds := getattr(cost, timing)) is not None:
            setattr(entry, timing, round((getattr(entry, timing) or 0.0) + seconds, 5))
