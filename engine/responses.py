"""What vLLM's OpenAI-compatible server answers, read: whole JSON bodies, server-sent event
streams, error bodies and in-band error events. Anything that is not what the parsing here can
read without further checks is a `RetryableServerError` (a malformed answer), never a crash.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
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
    `top_logprobs` holds, per generated token, the top-k alternatives as token -> logprob.
    `prompt_logprobs` (vLLM's extension, whole responses only) holds, per prompt token, token id
    -> logprob of the top-k and of the prompt token itself; None for the first prompt token.
    """

    text: str = ""
    finish_reason: str | None = None
    stop_reason: str | int | None = None
    tokens: list[str] = field(default_factory=list)
    top_logprobs: list[dict[str, float]] = field(default_factory=list)
    prompt_logprobs: list[dict[int, float] | None] = field(default_factory=list)


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


async def read_whole_completion(
    server: str, response: aiohttp.ClientResponse
) -> tuple[list[Choice], dict[str, Any], None]:
    payload = await read_json(server, response)
    choices = [_choice_from_payload(c) for c in _sorted_choices(server, payload)]
    return choices, payload.get("usage") or {}, None


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


def _sorted_choices(server: str, payload: dict[str, Any]) -> list[dict[str, Any]]:
    choices = payload.get("choices")
    if not _is_openai_object(payload) or not choices:
        raise RetryableServerError(server, None, f"no choices in response: {str(payload)[:200]}")
    return sorted(choices, key=lambda c: c.get("index", 0))


def _choice_from_payload(data: dict[str, Any]) -> Choice:
    choice = Choice(
        text=data.get("text") or "",
        finish_reason=data.get("finish_reason"),
        stop_reason=data.get("stop_reason"),
    )
    _add_logprobs(choice, data.get("logprobs"))
    for position in data.get("prompt_logprobs") or []:
        # vLLM sends {token id: {"logprob", "rank", "decoded_token"}}; JSON makes the ids strings.
        choice.prompt_logprobs.append(
            None if position is None else {int(t): float(v["logprob"]) for t, v in position.items()}
        )
    return choice


def _add_logprobs(choice: Choice, logprobs: dict[str, Any] | None) -> None:
    if not logprobs:
        return
    choice.tokens.extend(logprobs.get("tokens") or [])
    for top in logprobs.get("top_logprobs") or []:
        choice.top_logprobs.append(dict(top or {}))


async def read_stream_completion(
    server: str, response: aiohttp.ClientResponse
) -> tuple[list[Choice], dict[str, Any], float | None]:
    """Read server-sent events until `data: [DONE]`; a stream that ends before it was cut."""
    choices: dict[int, Choice] = {}
    usage: dict[str, Any] = {}
    first_token_at: float | None = None
    async for data in _event_data(response):
        if data == b"[DONE]":
            if not choices:
                raise RetryableServerError(server, response.status, "stream ended with no choices")
            return [choices[i] for i in sorted(choices)], usage, first_token_at
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
