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

    def __init__(self, tokenizer, *, thinking: bool):
        self._tokenizer = tokenizer
        self.thinking = thinking

    @property
    def tokenizer(self):
        """The model's tokenizer (RAST sends token ids and decodes them itself)."""
        return self._tokenizer

    @property
    def think_prefix(self) -> str:
        """What opens the assistant's reasoning: `<think>\\n` for thinking models, else nothing."""
        return THINK_OPEN + "\n" if self.thinking else ""

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
    from transformers import AutoTokenizer  # heavy import, needed only when a run starts

    source = tokenizer or model
    try:
        loaded = AutoTokenizer.from_pretrained(source)
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot load the tokenizer of {source!r} ({exc.__class__.__name__}); "
            "pass a local model folder, or a Hugging Face id this machine can reach, "
            "with --big_tokenizer/--small_tokenizer"
        ) from exc
    if not getattr(loaded, "chat_template", None):
        raise UsageError(f"the tokenizer of {source!r} has no chat template; use an instruct or reasoning model")
    if thinking == "auto":
        is_thinking = THINK_OPEN in loaded.get_vocab()
    else:
        is_thinking = thinking == "on"
    return ChatFormat(loaded, thinking=is_thinking)
