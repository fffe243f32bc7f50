"""A served model as the engine uses it: its role in the run, its client and its chat template."""

from __future__ import annotations

from dataclasses import dataclass

from engine.records import ModelUsage
from engine.serving.chat import ChatFormat
from engine.serving.client import Completion, ModelClient

# The chat template already holds BOS and role tokens; letting vLLM add them again would
# double the BOS of Llama-style tokenizers.
NO_SPECIAL_TOKENS = {"add_special_tokens": False}


@dataclass(frozen=True)
class Model:
    """One model of a run, e.g. role "big": how to reach it and how to render its prompts."""

    role: str
    client: ModelClient
    chat: ChatFormat


def usage_of(completion: Completion) -> ModelUsage:
    """The tokens and the one request a completion cost."""
    return ModelUsage(completion.prompt_tokens, completion.completion_tokens, 1)


SEED_STRIDE = 7919


def request_seed(track_seed: int | None, index: int, salt: int) -> int | None:
    """A reproducible vLLM seed that depends only on the track, the step and the request's purpose.

    `salt` tells apart the requests of one step (0 single model, 1 draft, 2 rewrite, 3 answer), so a
    request's seed never depends on the order in which requests happen to be sent.
    """
    return None if track_seed is None else track_seed * SEED_STRIDE + index * 4 + salt
