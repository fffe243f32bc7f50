"""Lookahead Reasoning's judge (Fu et al., 2025), as hao-ai-lab/LookaheadReasoning asks it
(`src/lr.py`, `text_accept`): a separate judge model (`--judge_model`; the reference's default is
Qwen/Qwen2.5-7B-Instruct) reads only the two steps, never the problem or the reasoning before them.

Before the judge is asked, the free check `same_text`: two steps equal once every space and newline
is removed and case is ignored are the same, at no cost (the policy applies it before any verifier).
The judge's request: the prompt set's `aligned_system` turn and its `aligned` question (the
reference's words; s1 is the big model's step, s2 the draft, both stripped) rendered with the judge
model's chat template, the answer opened with `aligned_prefix` ("["), one greedy token (temperature
0, top_p 0.95, as the reference sends them). The draft is kept when that token holds "ali" and no
"un" (`[aligned]`, not `[unaligned]`), case ignored. The reference writes Qwen's chat format into its
prompt by hand; rendered with Qwen2.5-Instruct's template, spectra's text is the same string
(tests/unit/reasoning/judges/test_pair_judges.py).
"""

from __future__ import annotations

from engine.data.prompts import PromptSet
from engine.reasoning.judges.base import PairVerdict, StepPair
from engine.records import RequestCost
from engine.serving.chat import Message
from engine.serving.models import Model, Purpose

# The reference's judge request: one token, greedy, with its top_p (`get_model_response`).
JUDGE_TOP_P = 0.95


def same_text(first: str, second: str) -> bool:
    """The reference's free check: equal once spaces and newlines are removed, case ignored (other
    white space, a tab, still counts, as there)."""
    return _squeezed(first) == _squeezed(second)


def _squeezed(text: str) -> str:
    return text.replace(" ", "").replace("\n", "").lower()


def is_aligned(said: str) -> bool:
    """The reference's reading of the judge's one token: it holds "ali" and no "un", case ignored."""
    token = said.lower()
    return "ali" in token and "un" not in token


class AlignedJudge:
    """The judge model shown only the two steps; its one greedy token says whether they are aligned."""

    name = "judge"

    def __init__(self, model: Model, prompts: PromptSet):
        self.model = model
        self.prompts = prompts

    def messages(self, pair: StepPair) -> list[Message]:
        """The judge's system turn (none when the set's `aligned_system` is empty) and its question."""
        system = self.prompts.render_aligned_system()
        question = self.prompts.render_aligned(pair.step.strip(), pair.draft.strip())
        return [*([Message("system", system)] if system else []), Message("user", question)]

    async def compare(self, pair: StepPair) -> PairVerdict:
        judged = await self.model.continue_text(
            self.messages(pair),
            self.prompts.render_aligned_prefix(),
            purpose=Purpose.VERIFY,
            max_tokens=1,
            temperature=0.0,
            top_p=JUDGE_TOP_P,
        )
        return PairVerdict(is_aligned(judged.text), said=judged.text, costs=[judged.cost])

    def cancelled(self) -> list[RequestCost]:
        return [self.model.cancelled(Purpose.VERIFY)]
