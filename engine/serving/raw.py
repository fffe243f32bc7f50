"""SpecLRM's raw prompts: plain text, no chat template, sent with the tokenizer's special tokens.

SpecLRM's scripts (`base_test`, `scale_reason`, `spec_scale_reason`, `spec_scale_reason_2`) call
vLLM's `LLM.generate` on strings they build themselves, so the model reads no chat turns, and the
tokenizer adds what it adds by default (R1-Distill's tokenizer a BOS; QwQ's nothing). The layout,
from their f-strings:

- first step, and the whole reasoning of a one-request track: the user message alone;
- a later step: `f"{msg}\n<think>{steps}"`, the steps each followed by "\n\n";
- the score: `f"{msg}\n<think>{steps}\n{request}\n<think>I think the quality score is: "`;
- the selector: `f"{message}\n<think></think>I think the best N methods are: "`.

That is every turn's text joined by one newline, then a newline and the open turn's text: `RawFormat`
renders any conversation that way, so the spec policy, the judge and the selector send these strings
through the same calls as under a chat template (`engine.serving.chat.ChatFormat`). The separator is
the prompt set's `raw_separator`: RSD's prompt (`main_online.py`, the prompt set `rsd`) is one text
that ends with the assistant's header, and its steps follow it directly, `prompt + steps`.
"""

from __future__ import annotations

from collections.abc import Sequence

from engine.serving.chat import THINK_OPEN, ChatFormat, Message, is_thinking, load_chat_format, load_tokenizer

# `--prompt_format`: how every request's prompt is rendered.
PROMPT_FORMATS = ("chat", "raw")

# What separates one turn's text from the next in SpecLRM's f-strings (a prompt set's default).
TURN_SEPARATOR = "\n"


class RawFormat:
    """SpecLRM's rendering: the turns' texts joined by `separator` (SpecLRM's newline), no template,
    no role tokens."""

    # `LLM.generate` tokenizes with the tokenizer's defaults: the special tokens it adds are part of the input.
    add_special_tokens = True

    def __init__(self, tokenizer, *, thinking: bool, separator: str = TURN_SEPARATOR):
        self._tokenizer = tokenizer
        self.thinking = thinking
        self.separator = separator

    @property
    def tokenizer(self):
        return self._tokenizer

    @property
    def think_open(self) -> str:
        """SpecLRM writes `<think>` before the steps, with no newline."""
        return THINK_OPEN if self.thinking else ""

    def continuation(self, messages: tuple[Message, ...], reasoning: str) -> str:
        """The user message alone before the first step (SpecLRM's first step has no `<think>`),
        then the message, the separator, `<think>` and the steps."""
        if not reasoning:
            return self.generation_prompt(tuple(messages))
        return self.render(list(messages), self.think_open + reasoning)

    def generation_prompt(self, messages: tuple[Message, ...]) -> str:
        return self.separator.join(m.content for m in messages)

    def render(self, messages: Sequence[Message], assistant_text: str) -> str:
        """The turns' texts, then the separator and `assistant_text`, the open turn the model continues."""
        return self.generation_prompt(tuple(messages)) + self.separator + assistant_text


def load_prompt_format(
    model: str,
    *,
    tokenizer: str | None = None,
    thinking: str = "auto",
    prompt_format: str = "chat",
    separator: str = TURN_SEPARATOR,
) -> ChatFormat | RawFormat:
    """`model`'s renderer for `--prompt_format`: its chat template (`chat`) or SpecLRM's raw text
    (`raw`, which needs no chat template, only the tokenizer), its turns joined by `separator`."""
    if prompt_format == "chat":
        return load_chat_format(model, tokenizer=tokenizer, thinking=thinking)
    loaded = load_tokenizer(model, tokenizer=tokenizer)
    return RawFormat(loaded, thinking=is_thinking(loaded, thinking), separator=separator)
