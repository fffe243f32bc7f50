"""The sim server's answers in vLLM's JSON shapes: `/v1/completions` and `/pooling`."""

from __future__ import annotations

import time
from typing import Any

from benchmarks.sim_behaviour import Reply, prompt_words


def completion_payload(
    body: dict[str, Any], reply: Reply, *, with_usage: bool, cached_tokens: int | None = None
) -> dict[str, Any]:
    """A `/v1/completions` answer (or one streamed chunk of it) for `reply`; the usage with
    `cached_tokens` as vLLM reports it with --enable-prompt-tokens-details."""
    choice: dict[str, Any] = {
        "index": 0,
        "text": "".join(reply.tokens),
        "logprobs": None,
        "finish_reason": reply.finish_reason,
        "stop_reason": reply.stop_reason,
    }
    if reply.prompt_logprobs is not None:
        choice["prompt_logprobs"] = reply.prompt_logprobs
    if reply.top_logprobs is not None:
        choice["logprobs"] = {
            "tokens": reply.tokens,
            "token_logprobs": [top.get(t, -1.0) for t, top in zip(reply.tokens, reply.top_logprobs, strict=False)],
            "top_logprobs": reply.top_logprobs,
            "text_offset": list(range(len(reply.tokens))),
        }
    payload: dict[str, Any] = {
        "id": "cmpl-sim",
        "object": "text_completion",
        "created": int(time.time()),
        "model": body.get("model"),
        "choices": [choice],
    }
    if with_usage:
        prompt_tokens = len(prompt_words(body.get("prompt")))
        payload["usage"] = {
            "prompt_tokens": prompt_tokens,
            "completion_tokens": len(reply.tokens),
            "total_tokens": prompt_tokens + len(reply.tokens),
        }
        if cached_tokens is not None:
            payload["usage"]["prompt_tokens_details"] = {"cached_tokens": cached_tokens}
    return payload


def pooling_payload(model: str, rows: list[list[float]], prompt_tokens: int) -> dict[str, Any]:
    """A `/pooling` answer for one input: the pooler's rows (a PRM's [P(bad), P(good)] per step tag)."""
    return {
        "id": "pool-sim",
        "object": "list",
        "created": int(time.time()),
        "model": model,
        "data": [{"index": 0, "object": "pooling", "data": rows}],
        "usage": {"prompt_tokens": prompt_tokens, "total_tokens": prompt_tokens},
    }
