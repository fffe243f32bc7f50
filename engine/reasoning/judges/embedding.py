"""spectra's embedding verifier for Lookahead Reasoning (`--verifier embedding`): both steps, white
space collapsed, are embedded by the `embedder` model (a vLLM server of an embedding model:
`--runner pooling --convert embed`), and the draft is kept when the cosine similarity of the two
embeddings reaches the bar (`--embedding_threshold`)."""

from __future__ import annotations

import asyncio
import math

from engine.reasoning.judges.base import PairVerdict, StepPair
from engine.records import RequestCost
from engine.serving.models import Model, Purpose


class EmbeddingSimilarity:
    """The cosine of the two steps' embeddings, kept at `threshold`."""

    name = "embedding"

    def __init__(self, model: Model, threshold: float):
        self.model = model
        self.threshold = threshold

    async def compare(self, pair: StepPair) -> PairVerdict:
        pooled = await asyncio.gather(
            self.model.pool(_collapsed(pair.draft), purpose=Purpose.EMBED, rendered=False),
            self.model.pool(_collapsed(pair.step), purpose=Purpose.EMBED, rendered=False),
        )
        a, b = (_vector(p.data) for p in pooled)
        norms = math.sqrt(sum(x * x for x in a)) * math.sqrt(sum(y * y for y in b))
        cosine = sum(x * y for x, y in zip(a, b, strict=True)) / norms if norms else 0.0
        cosine = max(-1.0, min(1.0, cosine))  # float rounding can step past 1 for equal vectors
        return PairVerdict(cosine >= self.threshold, cosine, costs=[p.cost for p in pooled])

    def cancelled(self) -> list[RequestCost]:
        return [self.model.cancelled(Purpose.EMBED)] * 2


def _collapsed(text: str) -> str:
    return " ".join(text.split())


def _vector(data: list) -> list[float]:
    """An embedding from vLLM's pooling output (a vector, or a one-row matrix)."""
    return [float(x) for x in (data[0] if data and isinstance(data[0], list) else data)]
