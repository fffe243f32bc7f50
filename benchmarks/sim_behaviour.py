"""What the sim server does, apart from serving HTTP: its config, and its deterministic replies.

Latency: each model the sim serves has a `request_s` (queueing, prefill), a `token_s` per
generated token, and a `capacity` of requests decoding at once at full speed.

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
  answer.
Step texts depend on the model and the step index only, so the tracks of one problem make the
same requests and take the same time: differences in wall time are the engine's, not the sim's.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any

from engine.chat import THINK_OPEN
from engine.errors import UsageError

FAULT_KINDS = ("http_500", "http_503", "reset", "stall", "truncated")
# The probability the sim gives its chosen token; the rest is spread over the alternatives.
CHOSEN_PROBABILITY = 0.9


@dataclass(frozen=True)
class Latency:
    """One model's latency: `request_s` + `token_s` per generated token, `capacity` at once."""

    request_s: float = 0.02
    token_s: float = 0.01
    capacity: int = 64

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

    def __post_init__(self) -> None:
        unknown = set(self.fault_kinds) - set(FAULT_KINDS)
        if unknown or not self.fault_kinds:
            raise UsageError(f"fault kinds must be some of {', '.join(FAULT_KINDS)}, not {sorted(unknown)}")
        if not (0 <= self.fault_rate <= 1 and 0 <= self.accept_rate <= 1 and 1 <= self.accept_threshold <= 9):
            raise UsageError("fault_rate and accept_rate must be in [0, 1], accept_threshold in [1, 9]")
        if self.stream_interval < 1 or self.steps_per_track < 1 or self.step_tokens < 1:
            raise UsageError("stream_interval, steps_per_track and step_tokens must be at least 1")

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


def request_kind(body: dict[str, Any], delimiter: str = "\n\n") -> str:
    """ "score", "step" or "answer", as spectra's policies and tracks shape their requests."""
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
