"""spectra's big-model verifier for Lookahead Reasoning (`--verifier big_rating`): the big model reads
the track's conversation and reasoning up to the position, then the prompt set's `equivalence`
question showing both steps, and rates 0-9 whether they are equivalent; the rating is the expected
digit under the logprobs of the one greedy token it writes after `equivalence_prefix` (SpecReason's
`average` reading), and the draft is kept when it reaches the bar (`--equivalence_threshold`).

Unlike the reference's judge (`judges/aligned.py`) it sees the context, and it runs on the big
model's server, where every verification prefills the track's context beside its generation.
"""

from __future__ import annotations

from engine.data.prompts import PromptSet
from engine.reasoning.judges.base import PairVerdict, StepPair
from engine.reasoning.judges.specreason import SCORE_TOP_LOGPROBS, score_from_logprobs
from engine.records import RequestCost
from engine.serving.chat import Message
from engine.serving.models import Model, Purpose


class EquivalenceRating:
    """The big model's 0-9 rating of "the two steps say the same thing", kept at `threshold`."""

    name = "big_rating"

    def __init__(self, model: Model, prompts: PromptSet, threshold: float):
        self.model = model
        self.prompts = prompts
        self.threshold = threshold

    async def compare(self, pair: StepPair) -> PairVerdict:
        reasoning = self.model.chat.think_open + pair.reasoning
        question = self.prompts.render_equivalence(pair.problem, pair.draft.strip(), pair.step.strip())
        messages = [*pair.messages, Message("assistant", reasoning), Message("user", question)]
        judged = await self.model.continue_text(
            messages,
            self.prompts.render_equivalence_prefix(),
            purpose=Purpose.VERIFY,
            max_tokens=1,
            temperature=0.0,
            logprobs=SCORE_TOP_LOGPROBS,
        )
        top = judged.top_logprobs[0] if judged.top_logprobs else {}
        rating = score_from_logprobs(judged.text, top, "average")
        return PairVerdict(rating.value >= self.threshold, rating.value, rating.distribution, costs=[judged.cost])

    def cancelled(self) -> list[RequestCost]:
        return [self.model.cancelled(Purpose.VERIFY)]
