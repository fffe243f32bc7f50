"""Answer probing (Dynasor-CoT, Fu et al., 2025, "Certaindex"): ask a reasoning track for its current
answer as it goes, and end it once the answers agree.

Every `--probe_every` generated tokens (checked after each step), a side request asks the model that
wrote the last step to continue the reasoning so far followed by Dynasor's probe text, which ends in
`\\boxed{`, for up to `PROBE_TOKENS` tokens at Dynasor's fixed temperature 0.6 and top_p 0.95. Its
answer is its text up to the first unpaired `}` (Dynasor's `obtain_answer`). A probe counts when it
closes the box and its text holds none of Dynasor's hedging words, matched as Dynasor matches them
(anywhere in the lower-cased text: "no" in "know" too); once the last `--probe_agree` probes all
count and their answers are equivalent (`engine.data.answers.answers_equivalent`, as Dynasor groups
them with `math_equal`), thinking ends there ("probe") with that answer. Probe requests are costed on
the step they follow (`usage`; `detail["probe"]` holds the probed answer). Dynasor's "mid" effort is
`--probe_every 64 --probe_agree 3`.
"""

from __future__ import annotations

from dataclasses import dataclass

from engine.data.answers import answers_equivalent
from engine.errors import UsageError
from engine.reasoning.settings import Settings, setting
from engine.records import RequestCost
from engine.serving.chat import Message
from engine.serving.models import Model, Purpose

# Dynasor's probe suffix, hedging words and probe length (dynasor/core/cot.py).
PROBE_SUFFIX = "... Oh, I suddenly got the answer to the whole problem, **Final Answer**\n\n\\[ \\boxed{"
HEDGING_WORDS = ("wait", "hold", "but", "okay", "no", "hmm")
PROBE_TOKENS = 20
# Dynasor samples every probe at these, whatever the reasoning's own sampling.
PROBE_TEMPERATURE, PROBE_TOP_P = 0.6, 0.95


@dataclass(frozen=True)
class ProbeSettings(Settings):
    probe_every: int | None = setting(
        None,
        "Dynasor-CoT: probe the track's current answer once this many tokens were generated since the last probe, "
        "checked after each step (default off; Dynasor's mid effort: 64, with --probe_agree 3)",
    )
    probe_agree: int = setting(3, "Dynasor-CoT: end the track once this many probes in a row agree")

    def validate(self) -> None:
        if self.probe_every is not None and self.probe_every < 1:
            raise UsageError(f"--probe_every must be at least 1, not {self.probe_every}")
        if self.probe_agree < 1:
            raise UsageError(f"--probe_agree must be at least 1, not {self.probe_agree}")


@dataclass(frozen=True)
class Probe:
    """One probe: the answer in its box (None when it did not close it), whether it hedged, its cost."""

    answer: str | None
    hedged: bool
    cost: RequestCost

    @property
    def counts(self) -> bool:
        return self.answer is not None and not self.hedged


async def probe(model: Model, messages: tuple[Message, ...], reasoning: str, *, index: int) -> Probe:
    """`model`'s (a track's handle) answer to the problem after `reasoning`, as Dynasor asks for it;
    `index` is the step after which it is sent (from 1)."""
    reply = await model.continue_reasoning(
        messages,
        reasoning,
        suffix=PROBE_SUFFIX,
        purpose=Purpose.PROBE,
        index=index,
        max_tokens=PROBE_TOKENS,
        temperature=PROBE_TEMPERATURE,
        top_p=PROBE_TOP_P,
    )
    text = reply.text.lower()
    return Probe(
        answer=boxed_answer(reply.text),
        hedged=any(word in text for word in HEDGING_WORDS),
        cost=reply.cost,
    )


def boxed_answer(text: str) -> str | None:
    """The probe's text up to its first unpaired `}` (the box the probe text opened), stripped; None
    when the box is not closed or holds nothing (Dynasor's `obtain_answer` gives "" then)."""
    depth = 0
    for position, char in enumerate(text):
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return text[:position].strip() or None
            depth -= 1
    return None


def agreed(probes: list[Probe], agree: int, *, multiple_choice: bool = False) -> str | None:
    """The answer of the last `agree` probes when each of them counts and all are equivalent to the
    first of them (Dynasor's one equivalence class); else None. Blocks (math-verify): call it
    through `asyncio.to_thread` from asyncio code."""
    last = probes[-agree:]
    if len(last) < agree or not all(p.counts for p in last):
        return None
    first = last[0].answer
    same = all(answers_equivalent(first, p.answer, multiple_choice=multiple_choice) for p in last[1:])
    return first if same else None
