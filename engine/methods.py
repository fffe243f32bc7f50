"""Method selection (SpecLRM's `spec_scale_reason_2`): a selector model names the solution
methods a problem's tracks will follow, chosen from the prompt set's method library."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field

import structlog

from engine.chat import THINK_CLOSE, Message
from engine.errors import ServerError
from engine.models import NO_SPECIAL_TOKENS, Model, usage_of
from engine.prompts import PromptSet
from engine.results import ModelUsage

log = structlog.get_logger(__name__)

SELECTOR_MAX_TOKENS = 256


@dataclass
class MethodChoice:
    """The methods picked for a problem; `fallback` when the selector's answer gave too few or
    the selector failed (its error kept in `error`)."""

    methods: list[str]
    raw: str
    fallback: bool
    usage: dict[str, ModelUsage] = field(default_factory=dict)
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "methods": self.methods,
            "raw": self.raw,
            "fallback": self.fallback,
            "usage": {k: vars(v) for k, v in self.usage.items()},
            "error": self.error,
        }


def _canonical(name: str) -> str:
    return re.sub(r"[^a-z0-9]+", " ", name.lower()).strip()


def parse_methods(text: str, library: list[str], count: int) -> list[str]:
    """Method names of `library` found in `text`, in the order the text names them, at most `count`.

    A JSON list is read first; otherwise names are found anywhere in the text, matched case-
    and separator-insensitively ("working backwards", "Working_Backwards").
    """
    wanted = {_canonical(name): name for name in library}
    found: list[str] = []
    match = re.search(r"\[[^\[\]]*\]", text)
    if match:
        try:
            items = json.loads(match.group(0))
        except ValueError:
            items = []
        found = [wanted[_canonical(str(i))] for i in items if _canonical(str(i)) in wanted]
    if not found:
        canonical_text = f" {_canonical(text)} "
        positions = [(canonical_text.find(f" {key} "), name) for key, name in wanted.items()]
        found = [name for pos, name in sorted(positions) if pos >= 0]
    return list(dict.fromkeys(found))[:count]


async def select_methods(problem: str, prompts: PromptSet, selector: Model, count: int) -> MethodChoice:
    """Ask `selector` for `count` methods; fill from the library's order when it names too few."""
    library = list(prompts.require_methods())
    request = prompts.render_select_methods(problem, count)
    # Thinking models are asked to answer at once: selection is a quick judgement, not a proof.
    opening = f"{selector.chat.think_prefix}{THINK_CLOSE}\n\n" if selector.chat.thinking else ""
    try:
        completion = await selector.client.complete(
            selector.chat.render([Message("user", request)], opening),
            max_tokens=SELECTOR_MAX_TOKENS,
            temperature=0.0,
            extra=NO_SPECIAL_TOKENS,
        )
    except ServerError as exc:
        # The problem is still worth solving with the library's first methods.
        log.warning("method_selection_failed", error=str(exc))
        return MethodChoice(methods=_fill(library, [], count), raw="", fallback=True, error=str(exc))
    chosen = parse_methods(completion.text, library, count)
    fallback = len(chosen) < min(count, len(library))
    if fallback:
        chosen = _fill(library, chosen, count)
        log.info("method_selection_fallback", raw=completion.text[:200], methods=chosen)
    return MethodChoice(
        methods=chosen, raw=completion.text, fallback=fallback, usage={selector.role: usage_of(completion)}
    )


def _fill(library: list[str], chosen: list[str], count: int) -> list[str]:
    return chosen + [name for name in library if name not in chosen][: count - len(chosen)]
