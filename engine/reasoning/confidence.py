"""DeepConf's confidence of a reasoning trace (Fu et al., 2025, "Deep Think with Confidence"), from the
top-k logprobs of every token it generated.

A token's confidence is minus the mean logprob of its top-k alternatives: high when the model put
its mass on one token (its alternatives are improbable), low when it hesitated between several.
A group's confidence is the mean over a sliding window of tokens (2048 in the paper). A trace is
measured by: `mean` (all its tokens), `bottom10` (the mean of its lowest 10% group confidences),
`lowest` (its lowest group), `tail` (its last window of tokens). Tracks get these only when a strategy asks for them
(`TrackSetup.token_logprobs`): the writer's requests then carry vLLM's `logprobs` k and each kept
step stores its tokens' confidence and sampled logprob (`StepRecord.token_confidence`,
`token_logprob`).

The measures run over either per-token value (`TOKEN_SCORES`): `confidence`, the paper's, or
`logprob`, the sampled token's own logprob (spectra's option: a trace that wrote a token its model
thought unlikely, such as a slipped digit, scores low even where the model's alternatives stayed
peaked). A logprob measure is a mean of logprobs, at most 0; as a vote weight it counts as its
exponent, the geometric-mean probability of the tokens (`vote_weight`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

from engine.records import TrackRecord

MEASURES = ("mean", "bottom10", "lowest", "tail")
TOKEN_SCORES = ("confidence", "logprob")
# Confidences are kept with this many decimals: the record stays small, the ranking unchanged.
DECIMALS = 3


def token_confidence(top_logprobs: dict[str, float]) -> float:
    """Minus the mean logprob of the top-k alternatives of one token (-inf logprobs left out)."""
    finite = [lp for lp in top_logprobs.values() if lp is not None and math.isfinite(lp)]
    return -sum(finite) / len(finite) if finite else 0.0


def step_confidences(top_logprobs: Sequence[dict[str, float]]) -> list[float]:
    return [round(token_confidence(top), DECIMALS) for top in top_logprobs]


def trace_tokens(track: TrackRecord, score: str = "confidence") -> list[float]:
    """A per-token value (`TOKEN_SCORES`) of a track's kept steps, in order (empty when none were asked for)."""
    if score == "confidence":
        return [c for step in track.steps for c in step.token_confidence or ()]
    if score == "logprob":
        return [lp for step in track.steps for lp in step.token_logprob or ()]
    raise ValueError(f"unknown token score {score!r}; use one of {', '.join(TOKEN_SCORES)}")


def vote_weight(value: float, score: str) -> float:
    """A trace's weight in the vote from its measure: the confidence itself (positive), or for a
    logprob measure the geometric-mean probability it stands for."""
    return math.exp(value) if score == "logprob" else value


def group_confidences(tokens: Sequence[float], window: int) -> list[float]:
    """The mean confidence of every window of `window` consecutive tokens (one group of all the
    tokens when there are fewer)."""
    if not tokens:
        return []
    if len(tokens) <= window:
        return [sum(tokens) / len(tokens)]
    total = sum(tokens[:window])
    groups = [total / window]
    for i in range(window, len(tokens)):
        total += tokens[i] - tokens[i - window]
        groups.append(total / window)
    return groups


def current_group(tokens: Sequence[float], window: int) -> float | None:
    """The confidence of the last window of tokens (all of them while fewer): DeepConf's online check."""
    return sum(tokens[-window:]) / len(tokens[-window:]) if tokens else None


def trace_confidence(tokens: Sequence[float], measure: str, window: int) -> float | None:
    """A trace's confidence under `measure` (see the module docstring); None without tokens."""
    if not tokens:
        return None
    if measure == "mean":
        return sum(tokens) / len(tokens)
    if measure == "tail":
        return current_group(tokens, window)
    groups = group_confidences(tokens, window)
    if measure == "lowest":
        return min(groups)
    if measure == "bottom10":
        # DeepConf's count of the lowest 10%: int(), at least one (utils.py `num_bottom`).
        lowest = sorted(groups)[: max(1, int(0.1 * len(groups)))]
        return sum(lowest) / len(lowest)
    raise ValueError(f"unknown confidence measure {measure!r}; use one of {', '.join(MEASURES)}")


def keep_most_confident(confidences: dict[int, float], percent: float) -> list[int]:
    """The ids of the traces at or above the (100 - `percent`)-th percentile of the confidences, as
    DeepConf's `filter_top_confidence` keeps them (every trace tied at the bar too), in id order."""
    if not confidences:
        return []
    bar = percentile(list(confidences.values()), 100 - percent)
    return sorted(i for i, c in confidences.items() if c >= bar)


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile of `values`, interpolated linearly (numpy's default)."""
    ordered = sorted(values)
    position = (len(ordered) - 1) * (q / 100)
    low, high = math.floor(position), math.ceil(position)
    below, above, t = ordered[low], ordered[high], position - low
    # numpy's lerp, to the last bit: from the nearer end, so a bar DeepConf compares with `>=` is its bar.
    return above - (above - below) * (1 - t) if t >= 0.5 else below + (above - below) * t
