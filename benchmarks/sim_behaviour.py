"""What the sim server does, apart from serving HTTP: its config, and its deterministic replies.

Latency: each model the sim serves has a `request_s` (queueing, prefill), a `token_s` per
generated token, a `capacity` of requests decoding at once at full speed, and a `request_cpu_s`
that its requests take one at a time (the serial work of vLLM's one API-server process: HTTP,
JSON, tokenisation, scheduling), before their latency starts.

Replies, from the request alone (so any number of tracks can run against the sim):
- a step request (its `stop` holds the step delimiter) writes `step_tokens` tokens; the step
  index is the number of delimiters after the last `<think>` of the prompt (0 without one), and
  the step of index `steps_per_track - 1` ends with `\\boxed{N}` (N as for an answer), so a
  track thinks exactly `steps_per_track` steps and states its answer in the last;
- a score request (`max_tokens` 1 with `logprobs`) answers a digit with its top logprobs: a
  digit of at least `accept_threshold` for a share `accept_rate` of step prompts, chosen by a
  hash of the prompt (and of the request's seed, when it has one);
- any other request is an answer request (spectra's --answer_phase) and answers `\\boxed{N}`, N
  a hash of the conversation before the reasoning, so every track of one problem gives the same
  answer;
- a RAST request (`return_tokens_as_token_ids`, a prompt of token ids) is answered from a fixed
  next-token distribution per model ("base", "positive", "negative") that depends on the last
  token only (`rast_logprobs`): top-k logprobs, prompt_logprobs, and drafts sampled as vLLM does.
Step texts depend on the model and the step index only, so the tracks of one problem make the
same requests and take the same time: differences in wall time are the engine's, not the sim's.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import itertools
import json
import math
import random
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from engine.errors import UsageError
from engine.serving.chat import THINK_OPEN

FAULT_KINDS = ("http_500", "http_503", "reset", "stall", "truncated")
# The probability the sim gives its chosen token; the rest is spread over the alternatives.
CHOSEN_PROBABILITY = 0.9


@dataclass(frozen=True)
class Latency:
    """One model's latency: `request_s` + `token_s` per generated token, `capacity` at once, after
    `request_cpu_s` of serial work that the model's requests take one at a time (0: none)."""

    request_s: float = 0.02
    token_s: float = 0.01
    capacity: int = 64
    request_cpu_s: float = 0.0

    def seconds(self, tokens: int) -> float:
        """Time one request generating `tokens` tokens takes once it has a decoding slot."""
        return self.request_s + tokens * self.token_s


@dataclass(frozen=True)
class SimConfig:
    """Everything the sim does; `to_json`/`from_json` carry it to a server process."""

    models: dict[str, Latency] = field(
        default_factory=lambda: {
            "small": Latency(request_s=0.02, token_s=0.01),
            "big": Latency(request_s=0.04, token_s=0.025),
        }
    )
    steps_per_track: int = 6
    step_tokens: int = 32
    accept_rate: float = 0.7
    accept_threshold: int = 7
    fault_rate: float = 0.0
    fault_kinds: tuple[str, ...] = FAULT_KINDS
    stall_s: float = 2.0
    seed: int = 0
    delimiter: str = "\n\n"
    # Tokens per streamed event, as vLLM's `--stream-interval` (1, its default: every token).
    stream_interval: int = 1
    # RAST's three models: a vocabulary of `rast_vocab` ids, base logits of spread `rast_spread`,
    # positive - negative of spread `rast_delta` (small: RAST changes few tokens).
    rast_vocab: int = 32
    rast_spread: float = 3.0
    rast_delta: float = 0.3

    def __post_init__(self) -> None:
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown or not self.fault_kinds:
            raise UsageError(f"fault kinds must be some of {', '.join(FAULT_KINDS)}, not {sorted(unknown)}")
        if not (0 <= self.fault_rate <= 1 and 0 <= self.accept_rate <= 1 and 1 <= self.accept_threshold <= 9):
            raise UsageError("fault_rate and accept_rate must be in [0, 1], accept_threshold in [1, 9]")
        if self.stream_interval < 1 or self.steps_per_track < 1 or self.step_tokens < 1:
            raise UsageError("stream_interval, steps_per_track and step_tokens must be at least 1")
        if any(latency.request_cpu_s < 0 for latency in self.models.values()):
            raise UsageError("request_cpu_s must be at least 0")

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self))

    @classmethod
    def from_json(cls, text: str) -> SimConfig:
        data = json.loads(text)
        data["models"] = {name: Latency(**latency) for name, latency in data["models"].items()}
        data["fault_kinds"] = tuple(data["fault_kinds"])
        return cls(**data)


@dataclass
class Reply:
    """What the sim generates for one request, before latency and faults."""

    tokens: list[str]
    finish_reason: str
    stop_reason: str | None
    top_logprobs: list[dict[str, float]] | None = None
    # vLLM's prompt_logprobs, each position pre-encoded as JSON (`msgspec.json.decode` reads one).
    prompt_logprobs: list[msgspec.Raw | None] | None = None


def request_kind(body: dict[str, Any], delimiter: str = "\n\n") -> str:
    """ "rast", "score", "step" or "answer", as spectra's policies and tracks shape their requests."""
    if body.get("return_tokens_as_token_ids"):
        return "rast"
    if body.get("max_tokens") == 1 and body.get("logprobs"):
        return "score"
    if delimiter in (body.get("stop") or []):
        return "step"
    return "answer"


def unit_hash(*parts: object) -> float:
    """A deterministic number in [0, 1) from `parts`."""
    digest = hashlib.sha256("\x1f".join(map(str, parts)).encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2**64


def step_index(prompt: str, delimiter: str) -> int:
    """How many steps the prompt's reasoning (after its last `<think>`) already holds; a prompt
    without `<think>` is a first step (SpecReason sends it with the template's generation prompt)."""
    head, found, reasoning = prompt.rpartition(THINK_OPEN)
    return reasoning.count(delimiter) if found else 0


def answer_number(prompt: str) -> int:
    """The answer the sim gives for a conversation: a hash of its text before the reasoning."""
    return int(unit_hash("answer", prompt.partition(THINK_OPEN)[0]) * 1000)


def plan_reply(kind: str, body: dict[str, Any], config: SimConfig) -> Reply:
    """The sim's deterministic answer to a request of `kind`, cut to its `max_tokens`."""
    if kind == "rast":
        return plan_rast_reply(body, config)
    prompt = body["prompt"] if isinstance(body.get("prompt"), str) else ""
    top_k = min(int(body.get("logprobs") or 0), 10)
    if kind == "score":
        accepted = unit_hash("accept", prompt, body.get("seed")) < config.accept_rate
        pick, low = unit_hash("digit", prompt, body.get("seed")), config.accept_threshold
        digit = low + int(pick * (10 - low)) if accepted else int(pick * low)
        alternatives = [str(d) for d in range(10) if d != digit]
        reply = Reply([str(digit)], "length", None, [_top(str(digit), alternatives, top_k)])
    elif kind == "step":
        index = step_index(prompt, config.delimiter)
        tokens = [("" if i == 0 else " ") + f"{body.get('model')}{index}w{i}" for i in range(config.step_tokens)]
        if index + 1 >= config.steps_per_track:
            tokens[-1] = f" \\boxed{{{answer_number(prompt)}}}"
        reply = Reply(tokens, "stop", config.delimiter)
    else:
        tokens = ["So", " the", " answer", " is", " \\boxed{", str(answer_number(prompt)), "}."]
        reply = Reply(tokens, "stop", None)
    if top_k and reply.top_logprobs is None:
        reply.top_logprobs = [_top(t, [f"alt{j}" for j in range(9)], top_k) for t in reply.tokens]
    max_tokens = int(body.get("max_tokens") or 16)
    if len(reply.tokens) > max_tokens:
        top = reply.top_logprobs[:max_tokens] if reply.top_logprobs else None
        reply = Reply(reply.tokens[:max_tokens], "length", None, top)
    return reply


def _top(chosen: str, alternatives: list[str], k: int) -> dict[str, float]:
    if k <= 0:
        return {}
    others = alternatives[: k - 1]
    rest = math.log((1 - CHOSEN_PROBABILITY) / max(1, len(others)))
    return {chosen: math.log(CHOSEN_PROBABILITY), **{token: rest for token in others}}


RAST_ROLES = ("base", "positive", "negative")


def rast_logprobs(role: str, previous: int, config: SimConfig) -> tuple[float, ...]:
    """The fixed next-token logprobs of RAST model `role` after token `previous`.

    Base logits have spread `rast_spread`; positive and negative share logits of the same spread
    plus their own noise of spread `rast_delta`, so positive - negative is small, as between an
    RL-tuned model and its own base.
    """
    vocab = config.rast_vocab
    return _rast_logprobs(role, previous % vocab, vocab, config.rast_spread, config.rast_delta, config.seed)


@functools.lru_cache(maxsize=65536)
def _rast_logprobs(role: str, previous: int, vocab: int, spread: float, delta: float, seed: int) -> tuple[float, ...]:
    def normal(name: str) -> list[float]:
        rng = random.Random(f"{seed}:{name}:{previous}")
        return [rng.gauss(0.0, 1.0) for _ in range(vocab)]

    if role == "base":
        logits = [spread * x for x in normal("base")]
    else:
        logits = [spread * a + delta * b for a, b in zip(normal("small"), normal(role), strict=True)]
    top = max(logits)
    log_total = top + math.log(sum(math.exp(x - top) for x in logits))
    return tuple(x - log_total for x in logits)


def plan_rast_reply(body: dict[str, Any], config: SimConfig) -> Reply:
    """The sim's answer to a RAST request, from its three fixed distributions (`rast_logprobs`)."""
    if body.get("model") not in RAST_ROLES:
        raise UsageError(f"RAST requests go to models named {RAST_ROLES}, not {body.get('model')!r}")
    return markov_reply(body, lambda role, previous: rast_logprobs(role, previous, config))


def markov_reply(body: dict[str, Any], logprobs_after: Callable[[str, int], Sequence[float]]) -> Reply:
    """A vLLM-shaped answer to a request of token ids, for models whose next-token logprobs over the
    whole vocabulary depend on the last token only (`logprobs_after(model, token)`): tokens named
    `token_id:N`, top-k logprobs (plus the sampled token), prompt_logprobs when asked; tokens sampled
    as vLLM's sampler would (temperature, top_k, a per-request seed; greedy at temperature 0)."""
    model, ids = str(body.get("model")), [int(t) for t in body["prompt"]]
    k, temperature = int(body.get("logprobs") or 0), float(body.get("temperature", 1.0))
    rng = random.Random(f"{body.get('seed')}:{len(ids)}")
    tokens, tops = [], []
    for _ in range(int(body.get("max_tokens") or 16)):
        logprobs = tuple(logprobs_after(model, ids[-1]))
        token = _vllm_sample(logprobs, temperature, int(body.get("top_k") or 0), rng)
        tokens.append(f"token_id:{token}")
        tops.append({f"token_id:{t}": logprobs[t] for t in [token, *_ranked(logprobs)[:k]]})
        ids.append(token)
    reply = Reply(tokens, "length", None, tops if k else None)
    if body.get("prompt_logprobs") is not None:
        prompt = ids[: len(body["prompt"])]
        reply.prompt_logprobs = _prompt_logprobs(model, prompt, int(body["prompt_logprobs"]), logprobs_after)
    return reply


@functools.lru_cache(maxsize=65536)
def _ranked(logprobs: Sequence[float]) -> list[int]:
    return sorted(range(len(logprobs)), key=lambda t: (-logprobs[t], t))


def _vllm_sample(logprobs: Sequence[float], temperature: float, top_k: int, rng: random.Random) -> int:
    ranked = _ranked(logprobs)
    if temperature == 0:
        return ranked[0]
    allowed = ranked[:top_k] if top_k > 0 else ranked
    weights = [math.exp((logprobs[t] - logprobs[ranked[0]]) / temperature) for t in allowed]
    return rng.choices(allowed, weights)[0]


def _prompt_logprobs(
    model: str, ids: list[int], k: int, logprobs_after: Callable[[str, int], Sequence[float]]
) -> list[msgspec.Raw | None]:
    """vLLM's prompt_logprobs: None for the first token, then the top-k and the prompt token itself.
    Each position is JSON encoded once and cached: a scoring request sends the whole prefix again
    every chunk, and building and encoding it was most of the sim's CPU."""
    positions = (
        _prompt_position(tuple(logprobs_after(model, previous)), token, k)
        for previous, token in itertools.pairwise(ids)
    )
    return [None, *positions]


@functools.lru_cache(maxsize=65536)
def _prompt_position(logprobs: tuple[float, ...], token: int, k: int) -> msgspec.Raw:
    ranked = _ranked(logprobs)
    entry = {str(t): {"logprob": logprobs[t], "rank": r + 1} for r, t in enumerate(ranked[:k])}
    if str(token) not in entry:
        entry[str(token)] = {"logprob": logprobs[token], "rank": ranked.index(token) + 1}
    return msgspec.Raw(msgspec.json.encode(entry))
