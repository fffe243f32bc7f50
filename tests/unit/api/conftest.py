"""`spectra api` on scripted fake model servers: the whole server in process, its models the fake
servers' (the toy models' tokenizer, for its chat template), its flags parsed as the command's."""

from __future__ import annotations

import asyncio
import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any

from engine.api.app import ApiSettings
from engine.api.launch import API_FLAGS, api_settings, build_parser, running_api
from engine.api.service import ReasoningService
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.paths import REPO_ROOT

TOY_TOKENIZER = REPO_ROOT / "engine" / "toy" / "weights" / "tokenizer"
# A fake model's solution of every problem: a step, then the toy models' last chunk.
STEPS = ("2 + 2 = 4", "</think>\n\\boxed{4}")
SCORE = Reply(text="9", top_logprobs=[{"9": math.log(0.9), "0": math.log(0.05), "1": math.log(0.05)}])


def solver(steps: tuple[str, ...] = STEPS, hold: asyncio.Event | None = None) -> Callable[[dict], Reply]:
    """A fake model that solves every problem with `steps`: a step request (its `stop` holds the
    delimiter) gets the next step after those in its prompt; a request with no stop (one request for
    the whole reasoning) gets them all; a one-token logprob request a 9. With `hold`, steps wait for it."""

    def respond(body: dict[str, Any]) -> Reply:
        if body["max_tokens"] == 1 and body.get("logprobs"):
            return SCORE
        if "stop" not in body:
            return Reply(text="\n\n".join(steps), after=hold)
        done = body["prompt"].rpartition("<think>")[2].count("\n\n")
        last = done >= len(steps) - 1
        return Reply(text=steps[min(done, len(steps) - 1)], stop_reason=None if last else "\n\n", after=hold)

    return respond


def api_flags(*argv: str) -> tuple[ApiSettings, dict[str, Any]]:
    """The server's settings and run flags, as `spectra api ARGV` parses them."""
    flags = vars(build_parser().parse_args(list(argv)))
    return api_settings(flags), {name: value for name, value in flags.items() if name not in API_FLAGS}


@dataclass
class Api:
    url: str
    service: ReasoningService
    big: FakeOpenAIServer
    small: FakeOpenAIServer
    settings: ApiSettings


def model_flags(big: FakeOpenAIServer, small: FakeOpenAIServer) -> list[str]:
    """The big and small models served by the fake servers, their chat template the toy models'."""
    return [
        arg
        for role, server in (("big", big), ("small", small))
        for arg in (f"--{role}_model", server.served_model, f"--{role}_url", server.url)
        + (f"--{role}_tokenizer", str(TOY_TOKENIZER))
    ]


@asynccontextmanager
async def api(*argv: str, big: Any = None, small: Any = None) -> AsyncIterator[Api]:
    """`spectra api ARGV` on two fake model servers (scripted by `big`, `small`: default `solver()`)."""
    async with FakeOpenAIServer(big or solver()) as b, FakeOpenAIServer(small or solver()) as s:
        settings, flags = api_flags(*model_flags(b, s), *argv)
        async with running_api("127.0.0.1", 0, settings, flags) as (url, service):
            yield Api(url, service, b, s, settings)
