"""What vLLM's OpenAI-compatible server answers, read: whole JSON bodies, server-sent event
streams, error bodies and in-band error events. Anything that is not what the parsing here can
read without further checks is a `RetryableServerError` (a malformed answer), never a crash.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import aiohttp
import msgspec

from engine.errors import RetryableServerError, ServerError

# msgspec decodes and encodes in a fraction of the standard library's time (benchmarks/README.md).
decode_json = msgspec.json.decode
encode_json = msgspec.json.Encoder().encode


@dataclass
class Choice:
    """One generated continuation: its text and why it stopped.

    `stop_reason` is vLLM's extension: the stop string (or token id) that ended the text.
    `top_logprobs` holds, per generated token, the top-k alternatives as token -> logprob;
    `text_offsets` where each token starts in the text (prompt included with `echo`).
    `prompt_logprobs` (vLLM's extension, whole responses only) holds, per prompt token, token id
    -> logprob of the top-k and of the prompt token itself; None for the first prompt token
    (a `PromptLogprobs`, which decodes a position when it is read).
    """

    text: str = ""
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    tokens: list[str] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    # Per generated token, the logprob of the token sampled (with `logprobs` asked for).
    token_logprobs: list[float] = field(default_factory=list)
    text_offsets: list[int] = field(default_factory=list)
    prompt_logprobs: Sequence[dict[int, float] | None] = field(default_factory=list)


class _Logprob(msgspec.Struct):
    logprob: float


# One position of prompt_logprobs: vLLM sends {token id: {"logprob", "rank", "decoded_token"}} (JSON
# makes the ids strings; msgspec reads them back as ints), null for the first prompt token.
_decode_position = msgspec.json.Decoder(dict[int, _Logprob] | None).decode


class PromptLogprobs(Sequence[dict[int, float] | None]):
    """One choice's prompt_logprobs, each position decoded when it is read. vLLM answers k entries
    for every prompt token and RAST reads the last gamma + 1: building them all cost the engine about
    1 ms a scoring request at a 128-token prefix (benchmarks/README.md, `rast_speed.py`)."""

    def __init__(self, server: str, positions: list[msgspec.Raw]):
        self._server, self._positions = server, positions

    def __len__(self) -> int:
        return len(self._positions)

    def __getitem__(self, index: Any) -> Any:
        if isinstance(index, slice):
            return [self[i] for i in range(*index.indices(len(self)))]
        try:
            position = _decode_position(self._positions[index])
        except msgspec.DecodeError as exc:
            raise ServerError(self._server, None, f"malformed prompt_logprobs at position {index}: {exc}") from exc
        return None if position is None else {t: entry.logprob for t, entry in position.items()}


class _WholeChoice(msgspec.Struct):
    index: int = 0
    text: str | None = None
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    logprobs: dict[str, Any] | None = None
    prompt_logprobs: list[msgspec.Raw] | None = None


class _WholeCompletion(msgspec.Struct):
    """The fields of a whole completion read here (others are ignored): decoding into these types
    checks the shape, and leaves prompt_logprobs undecoded until read."""

    choices: list[_WholeChoice] | None = None
    usage: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None


@dataclass(frozen=True)
class ServerTimings:
    """What the server measured of one request: vLLM 0.32's `metrics` object, sent with
    `--enable-per-request-metrics` for one prompt and `n` 1 (vllm/entrypoints/generate/base/serving.py
    `build_per_request_timing_metrics`). `queue_s`: from arrival to being scheduled (queue_time_ms);
    `prefill_s`: from being scheduled to the first token (vLLM's time_to_first_token_ms starts at
    scheduling, so it is the prefill); `generation_s`: from the first token to the last. None where
    the server left a figure out."""

    queue_s: float | None
    prefill_s: float | None
    generation_s: float | None

    @property
    def seconds(self) -> float | None:
        """From arrival to the last token: the request's time on the server (None unless all three are known)."""
        parts = (self.queue_s, self.prefill_s, self.generation_s)
        return None if None in parts else sum(parts)


_TIMING_FIELDS = ("queue_time_ms", "time_to_first_token_ms", "generation_time_ms")


def server_timings(metrics: Any) -> ServerTimings | None:
    """The timings of a `metrics` object; None when there is none (a server without the flag)."""
    if not isinstance(metrics, dict):
        return None
    values = [metrics.get(name) for name in _TIMING_FIELDS]
    seconds = [value / 1000 if isinstance(value, int | float) and value >= 0 else None for value in values]
    return None if seconds == [None, None, None] else ServerTimings(*seconds)


@dataclass
class Answer:
    """A completion as read: its choices, its usage, the server's timings (None: not reported) and,
    for a stream, when its first token came (`time.monotonic()`)."""

    choices: list[Choice]
    usage: dict[str, Any]
    timings: ServerTimings | None = None
    first_token_at: float | None = None


_decode_whole_completion = msgspec.json.Decoder(_WholeCompletion).decode


async def status_error(server: str, response: aiohttp.ClientResponse) -> ServerError:
    text = await response.text(errors="replace")
    try:
        payload = decode_json(text)
        error = payload.get("error", payload)
        message = error.get("message", text) if isinstance(error, dict) else str(error)
    except (ValueError, AttributeError):
        message = text
    message = " ".join(str(message).split())[:500]
    status = response.status
    if status == 429 or status >= 500:
        return RetryableServerError(server, status, message, unavailable=status in _UNAVAILABLE_STATUSES)
    return ServerError(server, status, message)


# What a proxy answers while the server behind it restarts, and vLLM while it is not ready.
_UNAVAILABLE_STATUSES = (502, 503, 504)


async def read_whole_completion(server: str, response: aiohttp.ClientResponse) -> Answer:
    raw = await response.read()
    try:
        payload = _decode_whole_completion(raw)
    except msgspec.ValidationError as exc:  # JSON, but not a completion
        raise RetryableServerError(server, response.status, f"unexpected body ({exc}): {raw[:200]!r}") from exc
    except msgspec.DecodeError as exc:
        raise RetryableServerError(server, response.status, f"malformed JSON body: {raw[:200]!r}") from exc
    if not payload.choices:
        raise RetryableServerError(server, None, f"no choices in response: {raw[:200]!r}")
    choices = [_whole_choice(server, c) for c in sorted(payload.choices, key=lambda c: c.index)]
    return Answer(choices, payload.usage or {}, server_timings(payload.metrics))


async def read_pooling(server: str, response: aiohttp.ClientResponse) -> tuple[list, dict[str, Any]]:
    """The output of vLLM's `/pooling` for its one input, and the usage."""
    payload = await read_json(server, response)
    data = payload.get("data")
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
        raise RetryableServerError(server, None, f"no pooling data in response: {str(payload)[:200]}")
    usage = payload.get("usage")
    return data[0].get("data"), usage if isinstance(usage, dict) else {}


async def read_json(server: str, response: aiohttp.ClientResponse) -> dict[str, Any]:
    raw = await response.read()
    try:
        payload = decode_json(raw)
    except ValueError as exc:
        raise RetryableServerError(server, response.status, f"malformed JSON body: {raw[:200]!r}") from exc
    if not isinstance(payload, dict):
        raise RetryableServerError(server, response.status, f"unexpected body: {raw[:200]!r}")
    return payload


def _is_openai_object(data: Any) -> bool:
    """An object whose `choices` (if any) is a list of objects and `usage` (if any) an object:
    what the parsing here reads without further checks."""
    if not isinstance(data, dict):
        return False
    choices, usage = data.get("choices") or [], data.get("usage") or {}
    return isinstance(choices, list) and all(isinstance(c, dict) for c in choices) and isinstance(usage, dict)


def _whole_choice(server: str, data: _WholeChoice) -> Choice:
    choice = Choice(text=data.text or "", finish_reason=data.finish_reason, stop_reason=data.stop_reason)
    _add_logprobs(choice, data.logprobs)
    if data.prompt_logprobs is not None:
        choice.prompt_logprobs = PromptLogprobs(server, data.prompt_logprobs)
    return choice


def _add_logprobs(choice: Choice, logprobs: dict[str, Any] | None) -> None:
    if not logprobs:
        return
    choice.tokens.extend(logprobs.get("tokens") or [])
    choice.text_offsets.extend(logprobs.get("text_offset") or [])
    choice.token_logprobs.extend(lp if lp is not None else float("-inf") for lp in logprobs.get("token_logprobs") or [])
    for top in logprobs.get("top_logprobs") or []:
        choice.top_logprobs.append(dict(top or {}))


async def read_stream_completion(server: str, response: aiohttp.ClientResponse) -> Answer:
    """Read server-sent events until `data: [DONE]`; a stream that ends before it was cut. vLLM
    sends the usage, and the request's `metrics`, in the last event before it."""
    choices: dict[int, Choice] = {}
    usage: dict[str, Any] = {}
    timings: ServerTimings | None = None
    first_token_at: float | None = None
    async for data in _event_data(response):
        if data == b"[DONE]":
            if not choices:
                raise RetryableServerError(server, response.status, "stream ended with no choices")
            return Answer([choices[i] for i in sorted(choices)], usage, timings, first_token_at)
        try:
            chunk = decode_json(data)
        except ValueError as exc:
            raise RetryableServerError(server, response.status, f"malformed event: {data[:200]!r}") from exc
        if not _is_openai_object(chunk):
            raise RetryableServerError(server, response.status, f"malformed event: {data[:200]!r}")
        if "error" in chunk:
            raise _in_band_error(server, chunk["error"])
        if chunk.get("usage"):
            usage = chunk["usage"]
            timings = server_timings(chunk.get("metrics"))
        for part in chunk.get("choices") or []:
            choice = choices.setdefault(part.get("index", 0), Choice())
            if part.get("text"):
                first_token_at = first_token_at or time.monotonic()
                choice.text += part["text"]
            if part.get("finish_reason") is not None:
                choice.finish_reason = part["finish_reason"]
                choice.stop_reason = part.get("stop_reason")
            _add_logprobs(choice, part.get("logprobs"))
    raise RetryableServerError(server, response.status, "stream cut before [DONE]")


def _in_band_error(server: str, error: Any) -> ServerError:
    """vLLM reports a failure after a stream has started as a `data: {"error": ...}` event."""
    error = error if isinstance(error, dict) else {"message": str(error)}
    code = error.get("code")
    status = code if isinstance(code, int) else None
    message = " ".join(str(error.get("message", error)).split())[:500]
    retryable = status is None or status == 429 or status >= 500
    return (RetryableServerError if retryable else ServerError)(server, status, f"error in stream: {message}")


async def _event_data(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    """The payloads of a stream's `data:` lines. Reads blocks and splits them here: aiohttp's
    line reader costs about half of the engine's CPU per streamed token (benchmarks/README.md)."""
    pending = b""
    async for block in response.content.iter_any():
        *lines, pending = (pending + block).split(b"\n")
        for line in lines:
            if line.startswith(b"data:"):
                yield line[5:].strip()
