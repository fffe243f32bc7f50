"""RAST's next-token rule on the top-k logprobs of three served models, and speculative acceptance.

RAST (ozyyshr/RAST, vllm/contrast_decode) samples a big base model from
`base + alpha * (positive - negative)` on raw logits, then applies temperature and top-p. vLLM's
returned logprobs (in its default `--logprobs-mode raw_logprobs`) are log-softmax of the raw
logits, which differs from the logits by one constant per position and model; the constants
vanish in the softmax after the combination, so combining logprobs gives RAST's distribution
over the tokens whose logprobs are known: the union of the three top-k.

Everything here is pure: token ids are ints in the base model's id space, a `TopK` maps token id
to logprob, distributions map token id to probability, randomness comes from a `random.Random`.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass

from engine.records import Role

TopK = dict[int, float]
Distribution = dict[int, float]


def top_k(entries: TopK, k: int) -> TopK:
    """The k most likely of `entries`. vLLM adds the sampled token (or the prompt token, for
    prompt_logprobs) to the top-k it returns, so a response can hold k + 1 entries."""
    if len(entries) <= k:
        return dict(entries)
    ranked = sorted((-logprob, token) for token, logprob in entries.items())  # tuples: no key function to call
    return {token: entries[token] for _, token in ranked[:k]}


# The three models, in the order their distributions are passed.
ROLES = (Role.BASE, Role.POSITIVE, Role.NEGATIVE)


@dataclass(frozen=True)
class Combined:
    """`base + alpha * (positive - negative)` over the candidates: the union of the three top-k.

    `fills` counts, per model, the candidates missing from the logprobs it returned, which got
    its lowest returned logprob instead: an upper bound of the true value. For the base and the
    positive model that overrates the token; for the negative model, subtracted, it underrates
    it, exactly for the tokens RL promoted. So the two small models are asked for many more
    logprobs than the k that pick the candidates (`RastSampling.aux_logprobs`), which makes their
    fills rare and their bound tight.
    """

    scores: dict[int, float]
    fills: dict[str, int]


def combine(
    base: TopK, positive: TopK, negative: TopK, alpha: float, vocab_limit: int, k: int | None = None
) -> Combined:
    """RAST's combination over the union of the three models' `k` likeliest tokens (all they
    returned when `k` is None), each model's value read from everything it returned; ids >=
    `vocab_limit` are left out.

    `vocab_limit` is the smallest vocabulary of the three models: RAST cuts every model's logits
    to the smallest width, so the padding columns of a bigger model never win.
    """
    parts = [{t: lp for t, lp in model.items() if t < vocab_limit} for model in (base, positive, negative)]
    if not all(parts):
        raise ValueError("every model needs at least one known logprob inside the shared vocabulary")
    b, p, n = parts
    floor_b, floor_p, floor_n = (min(part.values()) for part in parts)
    union = sorted(set().union(*(top_k(part, k) if k else part for part in parts)))
    scores = {t: b.get(t, floor_b) + alpha * (p.get(t, floor_p) - n.get(t, floor_n)) for t in union}
    fills = {role: sum(t not in part for t in union) for role, part in zip(ROLES, parts, strict=True)}
    return Combined(scores, fills)


def sampling_distribution(scores: dict[int, float], temperature: float, top_p: float) -> Distribution:
    """Temperature, then top-p, as vLLM's sampler applies them after RAST's combination.

    Temperature 0 is greedy: all mass on the highest score (the lowest id on a tie, as argmax).
    Top-p follows vLLM (v1 sampler `apply_top_k_top_p`): sorted ascending, a token is dropped
    when its probability plus all smaller ones sum to at most 1 - top_p; the likeliest stays.
    """
    if temperature == 0:
        best = max(scores.items(), key=lambda item: (item[1], -item[0]))[0]
        return {best: 1.0}
    dist = softmax({t: s / temperature for t, s in scores.items()})
    if top_p >= 1:
        return dist
    ascending = sorted((prob, -token) for token, prob in dist.items())  # ties: the higher id first
    cumulative, cut = 0.0, len(ascending) - 1  # the likeliest always stays
    for i, (prob, _) in enumerate(ascending):
        cumulative += prob
        if cumulative > 1 - top_p:
            cut = i  # this token and every likelier one stay
            break
    return normalised({-negated: prob for prob, negated in ascending[cut:]})


def draft_distribution(base: TopK, temperature: float, drafted: int) -> Distribution:
    """The distribution the base model's draft token `drafted` was really sampled from.

    The draft request asks vLLM for temperature T, top_p 1 and top_k k, so the sampler draws from
    softmax(logits / T) restricted to the k likeliest tokens: computable exactly from the k raw
    logprobs returned (log-softmax differs from the logits by a constant, which cancels), and zero
    outside them. Temperature 0 is greedy: all mass on the token drafted (vLLM's own argmax, so a
    tie in the returned logprobs cannot make it look impossible).
    """
    if temperature == 0:
        return {drafted: 1.0}
    return softmax({t: lp / temperature for t, lp in base.items()})


def softmax(scores: dict[int, float]) -> Distribution:
    top = max(scores.values())
    return normalised({t: math.exp(s - top) for t, s in scores.items()})


def normalised(weights: dict[int, float]) -> Distribution:
    total = sum(weights.values())
    if total <= 0:
        raise ValueError("cannot normalise weights that sum to zero")
    return {t: w / total for t, w in weights.items()}


def sample(dist: Distribution, rng: random.Random) -> int:
    """One token of `dist` (walked in id order, so a seed always gives the same token)."""
    u = rng.random()
    cumulative, token = 0.0, None
    for token, prob in sorted(dist.items()):
        cumulative += prob
        if u < cumulative:
            return token
    return token  # u within rounding of 1: the last token


def residual(target: Distribution, draft: Distribution) -> Distribution:
    """The normalised positive part of target - draft: where speculative sampling draws after a
    rejection (Leviathan et al. 2023, "Fast Inference from Transformers via Speculative Decoding")."""
    weights = {t: p - draft.get(t, 0.0) for t, p in target.items() if p > draft.get(t, 0.0)}
    if not weights:
        # target == draft up to rounding: a rejection had probability ~0; the target is the answer.
        return dict(target)
    return normalised(weights)


@dataclass(frozen=True)
class ChunkVerdict:
    """What a verified chunk emits: the accepted prefix of the draft, then one more token (the
    residual's draw at the first rejection, or the bonus token when all were accepted)."""

    tokens: list[int]
    accepted: int


def verify_chunk(
    drafted: list[int],
    drafts: list[Distribution],
    targets: list[Distribution],
    bonus: Distribution | None,
    rng: random.Random,
) -> ChunkVerdict:
    """Speculative acceptance of `drafted` (token j drawn from `drafts[j]`) against `targets`.

    Token j is kept with probability min(1, target/draft); at the first rejection a token is drawn
    from the residual and the chunk ends; when all are kept, one more comes from `bonus` (None
    when there is no bonus position: the draft ended on an end-of-sequence token or the budget).
    The emitted tokens are distributed exactly as tokens drawn one by one from the targets.
    """
    if not len(drafted) == len(drafts) == len(targets):
        raise ValueError("a chunk needs one draft and one target distribution per drafted token")
    for j, token in enumerate(drafted):
        q, p = drafts[j].get(token, 0.0), targets[j].get(token, 0.0)
        if q <= 0:
            raise ValueError(f"drafted token {token} has no probability under its draft distribution")
        if rng.random() >= p / q:
            return ChunkVerdict([*drafted[:j], sample(residual(targets[j], drafts[j]), rng)], j)
    extra = [sample(bonus, rng)] if bonus is not None else []
    return ChunkVerdict([*drafted, *extra], len(drafted))
