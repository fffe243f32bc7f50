"""Method selection (SpecLRM's `spec_scale_reason_2`): a selector model picks, by letter code, the
solution methods a problem's tracks will follow, from the prompt set's letter-coded method list.

As in SpecLRM, the selector continues a fixed assistant prefix ("I think the best N methods
are: ") at temperature 0 with room for N codes and the commas between them (2N-1 tokens); every
code in the range of the list counts, in order; a short answer is filled with the last code (the
"unknown" choice) and a long one is cut to N. The same method may be chosen twice.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

import structlog

from engine.data.problems import Problem
from engine.data.prompts import PromptSet
from engine.errors import ServerError
from engine.records import ModelUsage, RequestCost, usage_of_costs
from engine.serving.chat import Message
from engine.serving.models import Model, Purpose

log = structlog.get_logger(__name__)


@dataclass
class MethodChoice:
    """The methods picked for a problem (names, one per track) and their codes; `fallback` when the
    selector's answer gave too few codes or the selector failed (its error kept in `error`); `costs`:
    the selector's request (the problem record enters it)."""

    methods: list[str]
    codes: list[str]
    raw: str
    fallback: bool
    costs: list[RequestCost] = field(default_factory=list)
    error: str | None = None

    @property
    def usage(self) -> dict[str, ModelUsage]:
        return usage_of_costs(self.costs)

    def to_dict(self) -> dict:
        return {
            "methods": self.methods,
            "codes": self.codes,
            "raw": self.raw,
            "fallback": self.fallback,
            "usage": {k: vars(v) for k, v in self.usage.items()},
            "error": self.error,
        }


def selector_max_tokens(count: int) -> int:
    """SpecLRM's room for `count` codes: one token per code and one per comma between them."""
    return 2 * count - 1


def parse_codes(text: str, codes: list[str], count: int) -> list[str]:
    """The codes of `codes` found in `text`, in order (repeats kept), cut to `count`."""
    if not codes:
        return []
    found = re.findall(f"[{re.escape(codes[0])}-{re.escape(codes[-1])}]", text.strip())
    return found[:count]


async def select_methods(problem: Problem, prompts: PromptSet, selector: Model, count: int) -> MethodChoice:
    """Ask `selector` for `count` method codes; fill a short answer with the last code ("unknown")."""
    library = list(prompts.require_methods().values())
    codes = [m.code for m in library]
    request = [Message("user", prompts.render_select_methods(problem.problem, count, problem.choices))]
    try:
        reply = await selector.continue_text(
            request,
            prompts.render_select_methods_prefix(count),
            purpose=Purpose.SELECT,
            max_tokens=selector_max_tokens(count),
            temperature=0.0,
        )
    except ServerError as exc:
        # The problem is still worth solving: every track takes the "unknown" choice.
        log.warning("method_selection_failed", error=str(exc))
        return _choice(library, [], raw="", error=str(exc), count=count)
    chosen = parse_codes(reply.text, codes, count)
    if len(chosen) < count:
        log.info("method_selection_fallback", raw=reply.text[:200], codes=chosen)
    return _choice(library, chosen, raw=reply.text, count=count, costs=[reply.cost])


def _choice(library: list, chosen: list[str], *, raw: str, count: int, **extra) -> MethodChoice:
    filled = chosen + [library[-1].code] * (count - len(chosen))
    by_code = {m.code: m.name for m in library}
    return MethodChoice(
        methods=[by_code[c] for c in filled], codes=filled, raw=raw, fallback=len(chosen) < count, **extra
    )
