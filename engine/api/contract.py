"""The request contract: an OpenAI chat-completions body read into what spectra runs.

Every field an OpenAI client sends is either mapped to a run setting or refused with HTTP 400 and
one line naming it (README, "The request contract"): a field that would change nothing is refused,
not ignored; one sent at its neutral value (`n: 1`, `presence_penalty: 0`, `logprobs: false`)
asks nothing and is taken. The last message is the user's problem; the turns before it are its
context, which the chat template renders before it. Pure: no server is asked anything here.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from engine.serving.chat import Message

# Fields mapped onto a run flag of the same meaning: the body's name -> the flag's.
SAMPLING_FLAGS = {"temperature": "temperature", "top_p": "top_p", "seed": "seed"}
# Fields taken only at the value that asks nothing (None: left out), refused at any other: spectra's
# answer is composed from the steps of several requests, which these would not reach as asked.
NEUTRAL = {
    "stop": (None, [], ""),
    "logprobs": (None, False),
    "top_logprobs": (None, 0),
    "presence_penalty": (None, 0),
    "frequency_penalty": (None, 0),
    "logit_bias": (None, {}),
    "tools": (None, []),
    "tool_choice": (None, "none"),
    "functions": (None, []),
    "function_call": (None, "none"),
    "parallel_tool_calls": (None,),
    "response_format": (None, {"type": "text"}),
    "reasoning_effort": (None,),
    "store": (None, False),
    "metadata": (None, {}),
    "service_tier": (None, "auto"),
    "modalities": (None, ["text"]),
    "audio": (None,),
    "prediction": (None,),
    "web_search_options": (None,),
}
# Why each refused field is refused, as the 400's line says it.
WHY_REFUSED = {
    "stop": "spectra's methods end steps and thinking themselves (--step_delimiter, the method's stop rules)",
    "logprobs": "the answer is composed from steps of several requests and models: no token logprobs are returned",
    "top_logprobs": "the answer is composed from steps of several requests and models: no token logprobs are returned",
    "presence_penalty": "the methods' requests take no penalties",
    "frequency_penalty": "the methods' requests take no penalties",
    "logit_bias": "the methods' requests take no logit bias",
    "tools": "spectra serves reasoning methods, not tool calls",
    "tool_choice": "spectra serves reasoning methods, not tool calls",
    "functions": "spectra serves reasoning methods, not tool calls",
    "function_call": "spectra serves reasoning methods, not tool calls",
    "parallel_tool_calls": "spectra serves reasoning methods, not tool calls",
    "response_format": "the answer is the method's text; no format is enforced",
    "reasoning_effort": "the method's flags set the effort (e.g. spectra.token_budget, spectra.tracks)",
    "store": "spectra stores every request as a record with --output_dir",
    "metadata": "spectra stores no metadata with a request",
    "service_tier": "spectra has one tier",
    "modalities": "spectra answers text only",
    "audio": "spectra answers text only",
    "prediction": "spectra takes no predicted output",
    "web_search_options": "spectra does not search the web",
}
OTHER_FIELDS = (
    "model",
    "messages",
    "max_tokens",
    "max_completion_tokens",
    "n",
    "stream",
    "stream_options",
    "user",
    "spectra",
)
# Every field the contract knows, in the README table's order; any other is refused by name.
KNOWN_FIELDS = (*OTHER_FIELDS[:2], *SAMPLING_FLAGS, *OTHER_FIELDS[2:], *NEUTRAL)
MESSAGE_ROLES = {"system": "system", "developer": "system", "user": "user", "assistant": "assistant"}


class RequestError(Exception):
    """A request refused: its HTTP status and one line saying what to change; `param` names the field."""

    def __init__(self, status: int, message: str, param: str | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.param = param


def bad(message: str, param: str | None = None) -> RequestError:
    return RequestError(400, message, param)


@dataclass(frozen=True)
class ChatRequest:
    """A request as spectra runs it: the method (`model`), the problem (the last user message) and
    its `context` (the turns before it), the run flags its fields set (`flags`, by flag name), the
    tokens it allows (`max_tokens`, set onto the method's budget flag later), its `spectra` flag
    overrides, `n` choices (repeats of the problem), whether it streams, and the caller's `user`."""

    model: str
    problem: str
    context: tuple[Message, ...] = ()
    flags: Mapping[str, Any] = field(default_factory=dict)
    max_tokens: int | None = None
    overrides: Mapping[str, Any] = field(default_factory=dict)
    n: int = 1
    stream: bool = False
    include_usage: bool = False
    user: str | None = None


def read_request(body: Any, *, max_tokens_limit: int) -> ChatRequest:
    """`body` (a parsed JSON document) as a ChatRequest; RequestError (400) for anything refused."""
    if not isinstance(body, dict):
        raise bad("the body must be a JSON object")
    unknown = next((name for name in body if name not in KNOWN_FIELDS), None)
    if unknown is not None:
        raise bad(f"unknown field {unknown!r}: spectra refuses what it would not use", unknown)
    for name, neutral in NEUTRAL.items():
        if name in body and body[name] not in neutral:
            raise bad(f"{name} is not supported: {WHY_REFUSED[name]}; leave it out", name)
    model = _text(body, "model", required=True)
    problem, context = read_messages(body.get("messages"))
    stream = _flag(body, "stream")
    return ChatRequest(
        model=model,
        problem=problem,
        context=context,
        flags={flag: _sampling(body, name) for name, flag in SAMPLING_FLAGS.items() if body.get(name) is not None},
        max_tokens=_max_tokens(body, max_tokens_limit),
        overrides=_overrides(body.get("spectra")),
        n=_count(body, "n", 1),
        stream=stream,
        include_usage=_include_usage(body.get("stream_options"), stream),
        user=_text(body, "user"),
    )


def read_messages(messages: Any) -> tuple[str, tuple[Message, ...]]:
    """The problem (the last message, the user's) and the turns before it."""
    if not isinstance(messages, list) or not messages:
        raise bad("messages must be a non-empty list of {role, content} objects", "messages")
    turns = tuple(_message(m, i) for i, m in enumerate(messages))
    if not any(turn.role == "user" for turn in turns):
        raise bad("no user message: the last message must be the user's problem", "messages")
    if turns[-1].role != "user":
        raise bad(f"the last message is the {turns[-1].role}'s: it must be the user's problem", "messages")
    if not turns[-1].content.strip():
        raise bad("the last user message is empty: it is the problem", "messages")
    return turns[-1].content, turns[:-1]


def _message(message: Any, index: int) -> Message:
    where = f"messages[{index}]"
    if not isinstance(message, dict):
        raise bad(f"{where} must be an object with role and content", "messages")
    extra = next((k for k in message if k not in ("role", "content")), None)
    if extra is not None:
        raise bad(f"{where}.{extra} is not supported: a message is its role and its text content", "messages")
    role = message.get("role")
    if role not in MESSAGE_ROLES:
        raise bad(f"{where}.role {role!r} is not supported: use system, developer, user or assistant", "messages")
    return Message(MESSAGE_ROLES[role], _content(message.get("content"), where))


def _content(content: Any, where: str) -> str:
    """Text content: a string, or a list of text parts (joined by newlines, as vLLM joins them)."""
    if isinstance(content, str):
        return content
    if isinstance(content, list) and content:
        parts = []
        for part in content:
            if not isinstance(part, dict) or part.get("type") != "text" or not isinstance(part.get("text"), str):
                raise bad(f"{where}.content: only text parts are supported ({{type: text, text: ...}})", "messages")
            parts.append(part["text"])
        return "\n".join(parts)
    raise bad(f"{where}.content must be a string or a list of text parts", "messages")


def _text(body: dict, name: str, *, required: bool = False) -> str | None:
    value = body.get(name)
    if value is None and not required:
        return None
    if not isinstance(value, str) or not value:
        raise bad(f"{name} must be a non-empty string", name)
    return value


def _flag(body: dict, name: str) -> bool:
    value = body.get(name, False)
    if not isinstance(value, bool):
        raise bad(f"{name} must be true or false", name)
    return value


def _number(body: dict, name: str, kind: type) -> Any:
    value = body.get(name)
    if (
        isinstance(value, bool)
        or not isinstance(value, kind)
        or (isinstance(value, float) and not math.isfinite(value))
    ):
        raise bad(f"{name} must be {'an integer' if kind is int else 'a number'}, not {value!r}", name)
    return value


def _count(body: dict, name: str, default: int) -> int:
    if body.get(name) is None:
        return default
    value = _number(body, name, int)
    if value < 1:
        raise bad(f"{name} must be at least 1, not {value}", name)
    return value


# Range checks of the sampling fields, as vLLM's sampling parameters would refuse them.
_SAMPLING_RANGES: dict[str, tuple[type, Callable[[Any], bool], str]] = {
    "temperature": ((int, float), lambda v: v >= 0, "0 or more"),
    "top_p": ((int, float), lambda v: 0 < v <= 1, "in (0, 1]"),
    "seed": (int, lambda v: v >= 0, "0 or more"),
}


def _sampling(body: dict, name: str) -> Any:
    kind, fits, text = _SAMPLING_RANGES[name]
    value = _number(body, name, kind)
    if not fits(value):
        raise bad(f"{name} must be {text}, not {value}", name)
    return value if kind is int else float(value)


def _max_tokens(body: dict, limit: int) -> int | None:
    """max_tokens or max_completion_tokens (the same, or only one, given), at most `limit`."""
    given = {name: _count(body, name, 0) for name in ("max_completion_tokens", "max_tokens") if name in body}
    given = {name: value for name, value in given.items() if value}
    if len(set(given.values())) > 1:
        raise bad("max_tokens and max_completion_tokens differ: give one of them", "max_tokens")
    if not given:
        return None
    name, value = next(iter(given.items()))
    if value > limit:
        raise bad(f"{name} {value} is over this server's limit of {limit} (--max_request_tokens)", name)
    return value


def _include_usage(options: Any, stream: bool) -> bool:
    if options is None:
        return False
    if not stream:
        raise bad("stream_options applies to streamed answers only: drop it, or set stream", "stream_options")
    if not isinstance(options, dict) or set(options) - {"include_usage"}:
        raise bad("stream_options takes include_usage only", "stream_options")
    value = options.get("include_usage", False)
    if not isinstance(value, bool):
        raise bad("stream_options.include_usage must be true or false", "stream_options")
    return value


def _overrides(spectra: Any) -> dict[str, Any]:
    """The `spectra` object: method flags by name, each one JSON value (checked later as the command
    line checks them)."""
    if spectra is None:
        return {}
    if not isinstance(spectra, dict):
        raise bad('spectra must be an object of method flags, e.g. {"tracks": 4}', "spectra")
    for name, value in spectra.items():
        if isinstance(value, list | dict):
            raise bad(f"spectra.{name} takes one value, as its flag --{name} does", "spectra")
    return dict(spectra)
