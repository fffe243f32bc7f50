"""Render prompts with a model's own chat template, for raw-prompt continuation.

Step-wise reasoning continues an open assistant turn through `/v1/completions`, so the
prompt is rendered here, once per conversation shape, with transformers' tokenizer of
the served model (loaded once per model). The assistant turn is rendered around a
placeholder and split there: templates that trim or re-format message content cannot
then eat the whitespace of the reasoning we append (SpecReason used vLLM's chat endpoint
with `continue_final_message`; this renders the same text).
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from engine.errors import UsageError

THINK_OPEN = "<think>"
THINK_CLOSE = "</think>"
_PLACEHOLDER = "\u2063SPECTRA_ASSISTANT\u2063"


@dataclass(frozen=True)
class Message:
    role: str
    content: str


class ChatFormat:
    """A model's chat template and thinking convention."""

    # The template already holds BOS and role tokens; letting vLLM add them again would double the
    # BOS of Llama-style tokenizers.
    add_special_tokens = False

    def __init__(self, tokenizer, *, thinking: bool):
        self._tokenizer = tokenizer
        self.thinking = thinking

    @property
    def tokenizer(self):
        """The model's tokenizer (RAST sends token ids and decodes them itself)."""
        return self._tokenizer

    @property
    def think_open(self) -> str:
        """What the seeds put before the steps in the assistant turn: `<think>` with no newline."""
        return THINK_OPEN if self.thinking else ""

    def continuation(self, messages: tuple[Message, ...], reasoning: str) -> str:
        """The prompt a model writes the next step from, as SpecReason sends it: with no steps yet,
        the conversation with the template's own generation prompt (`add_generation_prompt`);
        after steps, an open assistant turn `<think>` + the steps, each followed by the delimiter
        (`continue_final_message`)."""
        if not reasoning:
            return self.generation_prompt(tuple(messages))
        return self.render(list(messages), self.think_open + reasoning)

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one ChatFormat per model lives for the whole run
    def generation_prompt(self, messages: tuple[Message, ...]) -> str:
        conversation = [{"role": m.role, "content": m.content} for m in messages]
        return self._tokenizer.apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)

    def render(self, messages: list[Message], assistant_text: str) -> str:
        """The conversation, then an open assistant turn that starts with `assistant_text`."""
        return self.assistant_head(tuple(messages)) + assistant_text

    @functools.lru_cache(maxsize=64)  # noqa: B019 - one ChatFormat per model lives for the whole run
    def assistant_head(self, messages: tuple[Message, ...]) -> str:
        conversation = [{"role": m.role, "content": m.content} for m in messages]
        conversation.append({"role": "assistant", "content": _PLACEHOLDER})
        rendered = self._tokenizer.apply_chat_template(conversation, tokenize=False, continue_final_message=True)
        head, found, _ = rendered.rpartition(_PLACEHOLDER)
        if not found:
            raise UsageError("the model's chat template drops the assistant message; pass a --chat_template")
        return head


def load_chat_format(model: str, *, tokenizer: str | None = None, thinking: str = "auto") -> ChatFormat:
    """Load the tokenizer of `model` (a Hugging Face id or local path) and wrap its chat template.

    `thinking` is "on", "off" or "auto" (on when the vocabulary has a `<think>` token).
    """
    loaded = load_tokenizer(model, tokenizer=tokenizer)
    if not getattr(loaded, "chat_template", None):
        source = tokenizer or model
        raise UsageError(
            f"the tokenizer of {source!r} has no chat template; use an instruct or reasoning model, "
            "or --prompt_format raw"
        )
    return ChatFormat(loaded, thinking=is_thinking(loaded, thinking))


def load_tokenizer(model: str, *, tokenizer: str | None = None):
    """The tokenizer of `model` (or of `tokenizer`, a Hugging Face id or local path)."""
    from transformers import AutoTokenizer  # heavy import, needed only when a run starts

    source = tokenizer or model
    try:
        return AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot load the tokenizer of {source!r} ({exc.__class__.__name__}); "
            "pass a local model folder, or a Hugging Face id this machine can reach, "
            "with --big_tokenizer/--small_tokenizer"
        ) from exc


def is_thinking(tokenizer, thinking: str) -> bool:
    """Whether the model thinks between `<think>` tags: `thinking` "on", "off", or "auto" (on when
    the vocabulary has a `<think>` token)."""
    if thinking == "auto":
        return THINK_OPEN in tokenizer.get_vocab()
    return thinking == "on"
