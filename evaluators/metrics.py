"""Pure metric functions on plain numbers: pass@k, voting, spread, percentiles, histograms.

Nothing here reads records or checks answers; `evaluators.summary` feeds these.
"""

from __future__ import annotations

import math
import random
import statistics
from collections.abc import Sequence

SCORE_BINS = 10


def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k for one problem: n samples, c of them correct, k drawn.

    The Codex paper's estimator (Chen et al. 2021, "Evaluating Large Language Models
    Trained on Code", eq. 1): the probability that at least one of k samples drawn without
    replacement from the n is correct, 1 - C(n-c, k) / C(n, k).
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"pass@k needs 0 <= c <= n and 1 <= k <= n, got n={n} c={c} k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.comb(n - c, k) / math.comb(n, k)


# RAST's evaluation (simplelr_math_eval/math_eval_pred.py) averages pass and majority at k over
# 10 random picks of k runs, or one pick when k is all of them.
SUBSAMPLE_DRAWS = 10


def subsample_picks(pool: Sequence[int], k: int, *, draws: int = SUBSAMPLE_DRAWS, seed: int = 0) -> list[list[int]]:
    """RAST's subsampling for pass and majority at k: `draws` picks of k distinct members of
    `pool` (a fixed seed, so a report is reproducible); one pick, the whole pool, when k is its size.
    RAST draws from run indices 0-31 whatever the runs; here the pool is the runs there are."""
    if not 1 <= k <= len(pool):
        raise ValueError(f"cannot pick {k} of {len(pool)}")
    if k == len(pool):
        return [sorted(pool)]
    rng = random.Random(seed)
    return [sorted(rng.sample(sorted(pool), k)) for _ in range(draws)]


def default_ks(max_n: int) -> list[int]:
    """The k values reported by default for up to `max_n` samples: 1, 2, 4, ... and max_n itself."""
    ks = []
    k = 1
    while k < max_n:
        ks.append(k)
        k *= 2
    if max_n >= 1:
        ks.append(max_n)
    return ks


def majority_group(groups: Sequence[Sequence[int]]) -> int | None:
    """Index of the winning group of votes, or None when there are none.

    `groups` hold sample indices grouped by equal answer, in order of first appearance (as
    `engine.data.answers.group_equivalent` returns them). The largest group wins; a tie goes to
    the group whose first member comes first, i.e. the answer given earliest.
    """
    if not groups:
        return None
    return max(range(len(groups)), key=lambda g: (len(groups[g]), -groups[g][0]))


def mean(values: Sequence[float]) -> float | None:
    """Arithmetic mean, None for no values."""
    return sum(values) / len(values) if values else None


def sample_std(values: Sequence[float]) -> float | None:
    """Sample standard deviation (n - 1 in the denominator); 0.0 for one value, None for none."""
    if not values:
        return None
    return statistics.stdev(values) if len(values) > 1 else 0.0


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0-100) with linear interpolation between order statistics.

    The rank is q/100 * (n - 1) over the sorted values, as numpy's default "linear" method.
    """
    if not values:
        return None
    ordered = sorted(values)
    rank = q / 100 * (len(ordered) - 1)
    low = math.floor(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def ratio(part: float, whole: float) -> float | None:
    """part / whole, None when whole is zero."""
    return part / whole if whole else None


def score_histogram(scores: Sequence[float]) -> list[int]:
    """Counts of step scores in the bins [0,1), [1,2), ... [9,9]: floor of the score, clamped to 0-9."""
    counts = [0] * SCORE_BINS
    for score in scores:
        counts[min(max(math.floor(score), 0), SCORE_BINS - 1)] += 1
    return counts


def bootstrap_mean_ci(
    values: Sequence[float], *, resamples: int = 2000, confidence: float = 0.95, seed: int = 0
) -> tuple[float, float] | None:
    """Percentile bootstrap confidence interval of the mean of `values`; None for no values.

    Resamples the values with replacement `resamples` times (a fixed seed, so a report is
    reproducible) and takes the (1-confidence)/2 and (1+confidence)/2 percentiles of the
    resampled means.
    """
    if not values:
        return None
    rng = random.Random(seed)
    size = len(values)
    means = [sum(rng.choices(values, k=size)) / size for _ in range(resamples)]
    tail = (1 - confidence) / 2 * 100
    return percentile(means, tail), percentile(means, 100 - tail)


def auc(positives: list[float], negatives: list[float]) -> float | None:
    """The chance that a random positive outscores a random negative (ties count half): the area
    under the ROC curve; None without both."""
    if not positives or not negatives:
        return None
    ranked = sorted([(s, 1) for s in positives] + [(s, 0) for s in negatives])
    wins, i = 0.0, 0
    below = 0  # negatives strictly below the current score
    while i < len(ranked):
        j = i
        while j < len(ranked) and ranked[j][0] == ranked[i][0]:
            j += 1
        pos = sum(1 for _, label in ranked[i:j] if label)
        neg = (j - i) - pos
        wins += pos * (below + 0.5 * neg)
        below += neg
        i = j
    return wins / (len(positives) * len(negatives))


def within_group_auc(groups: list[tuple[list[float], list[float]]]) -> tuple[float | None, int]:
    """The AUC over pairs of a positive and a negative of the same group (each group's AUC weighted
    by its pairs), and the number of such pairs: whether the scores rank within a group, as a
    method that picks among one problem's candidates needs; None without any pair."""
    pairs = wins = 0.0
    for positives, negatives in groups:
        if positives and negatives:
            pairs += len(positives) * len(negatives)
            wins += auc(positives, negatives) * len(positives) * len(negatives)
    return (wins / pairs if pairs else None), int(pairs)
