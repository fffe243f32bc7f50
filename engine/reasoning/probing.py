"""Answer probing (Dynasor-CoT, Fu et al., 2025, "Certaindex"): ask a reasoning track for its current
answer as it goes, and end it once the answers agree.

Every `--probe_every` generated tokens (checked after each step), a side request asks the model that
wrote the last step to continue the reasoning so far followed by Dynasor's probe text, which ends in
`\\boxed{`, for up to `PROBE_TOKENS` tokens. A probe counts when it closes the box and its text holds
none of Dynasor's hedging words; once the last `--probe_agree` probes all count and agree, thinking
ends there ("probe") with that answer. Probe requests are costed on the step they follow
(`usage`; `detail["probe"]` holds the probed answer).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from engine.data.answers import extract_answer
from engine.errors import UsageError
from engine.reasoning.settings import Settings, setting
from engine.records import RequestCost
from engine.serving.chat import Message
from engine.serving.models import Model, Purpose

# Dynasor's probe suffix, hedging words and probe length (dynasor/core/cot.py).
PROBE_SUFFIX = "... Oh, I suddenly got the answer to the whole problem, **Final Answer**\n\n\\[ \\boxed{"
HEDGING_WORDS = ("wait", "hold", "but", "okay", "no", "hmm")
PROBE_TOKENS = 20


@dataclass(frozen=True)
class ProbeSettings(Settings):
    probe_every: int | None = setting(
        None, "Dynasor-CoT: probe the track's current answer every this many generated tokens (default off)"
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


async def probe(
    model: Model,
    messages: tuple[Message, ...],
    reasoning: str,
    *,
    index: int,
    temperature: float,
    top_p: float,
) -> Probe:
    """`model`'s (a track's handle) answer to the problem after `reasoning`, as Dynasor asks for it;
    `index` is the step after which it is sent (from 1)."""
    reply = await model.continue_reasoning(
        messages,
        reasoning,
        suffix=PROBE_SUFFIX,
        purpose=Purpose.PROBE,
        index=index,
        max_tokens=PROBE_TOKENS,
        temperature=temperature,
        top_p=top_p,
    )
    words = set(re.findall(r"[a-z]+", reply.text.lower()))
    return Probe(
        answer=extract_answer("\\boxed{" + reply.text),
        hedged=any(word in words for word in HEDGING_WORDS),
        cost=reply.cost,
    )


def agreed(probes: list[Probe], agree: int) -> str | None:
    """The answer the last `agree` probes all gave, when each of them counts; else None."""
    last = probes[-agree:]
    if len(last) < agree or not all(p.counts for p in last):
        return None
    answers = {p.answer for p in last}
    return last[0].answer if len(answers) == 1 else None
