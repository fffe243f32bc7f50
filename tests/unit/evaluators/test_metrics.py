"""Pure metric functions, checked against enumeration and hand-computed values."""

import itertools
import math

import pytest

from evaluators import metrics


def _pass_at_k_by_enumeration(n: int, c: int, k: int) -> float:
    """Share of all k-subsets of n samples (the first c correct) holding a correct one."""
    subsets = list(itertools.combinations(range(n), k))
    return sum(any(i < c for i in subset) for subset in subsets) / len(subsets)


@pytest.mark.parametrize("n", range(1, 7))
def test_pass_at_k_matches_enumeration_for_small_n(n):
    for c in range(n + 1):
        for k in range(1, n + 1):
            assert metrics.pass_at_k(n, c, k) == pytest.approx(_pass_at_k_by_enumeration(n, c, k))


def test_pass_at_k_hand_values():
    assert metrics.pass_at_k(4, 1, 2) == pytest.approx(1 - 3 / 6)  # 1 - C(3,2)/C(4,2)
    assert metrics.pass_at_k(10, 3, 1) == pytest.approx(0.3)
    assert metrics.pass_at_k(5, 0, 5) == 0.0
    assert metrics.pass_at_k(5, 4, 2) == 1.0


@pytest.mark.parametrize(("n", "c", "k"), [(3, 4, 1), (3, 1, 0), (3, 1, 4), (2, -1, 1)])
def test_pass_at_k_rejects_impossible_counts(n, c, k):
    with pytest.raises(ValueError, match="pass@k needs"):
        metrics.pass_at_k(n, c, k)


def test_default_ks():
    assert metrics.default_ks(0) == []
    assert metrics.default_ks(1) == [1]
    assert metrics.default_ks(3) == [1, 2, 3]
    assert metrics.default_ks(8) == [1, 2, 4, 8]
    assert metrics.default_ks(12) == [1, 2, 4, 8, 12]


def test_majority_group_largest_wins():
    assert metrics.majority_group([[0], [1, 2]]) == 1


def test_majority_group_tie_goes_to_the_answer_given_first():
    assert metrics.majority_group([[0, 3], [1, 2]]) == 0
    assert metrics.majority_group([[0], [1], [2]]) == 0
    # Groups listed out of order of first appearance: the earliest first member still wins.
    assert metrics.majority_group([[1, 2], [0, 3]]) == 1


def test_majority_group_without_votes():
    assert metrics.majority_group([]) is None


def test_mean_and_sample_std():
    assert metrics.mean([]) is None
    assert metrics.mean([1.0, 0.5]) == 0.75
    assert metrics.sample_std([]) is None
    assert metrics.sample_std([0.4]) == 0.0
    assert metrics.sample_std([1.0, 0.5]) == pytest.approx(math.sqrt(0.125))  # ((0.25^2) * 2 / 1) ** 0.5


def test_percentile_interpolates_linearly():
    values = [40.0, 10.0, 30.0, 20.0]
    assert metrics.percentile(values, 50) == 25.0
    assert metrics.percentile(values, 95) == pytest.approx(38.5)  # rank 2.85: 30 + 0.85 * 10
    assert metrics.percentile(values, 0) == 10.0
    assert metrics.percentile(values, 100) == 40.0
    assert metrics.percentile([7.0], 95) == 7.0
    assert metrics.percentile([], 50) is None


def test_ratio():
    assert metrics.ratio(1, 4) == 0.25
    assert metrics.ratio(3, 0) is None


def test_score_histogram_floors_and_clamps():
    counts = metrics.score_histogram([0.0, 0.99, 3.5, 7.0, 6.999, 9.0, 9.7, -0.2])
    assert counts == [3, 0, 0, 1, 0, 0, 1, 1, 0, 2]


def test_bootstrap_ci_of_constant_values_is_a_point():
    assert metrics.bootstrap_mean_ci([0.25, 0.25, 0.25]) == (0.25, 0.25)


def test_bootstrap_ci_is_reproducible_and_brackets_the_mean():
    values = [0.0, 1.0] * 50
    low, high = metrics.bootstrap_mean_ci(values)
    assert metrics.bootstrap_mean_ci(values) == (low, high)
    # Normal approximation of the mean of 100 fair coins: 0.5 +- 1.96 * 0.05.
    assert low == pytest.approx(0.402, abs=0.03)
    assert high == pytest.approx(0.598, abs=0.03)
    assert metrics.bootstrap_mean_ci([]) is None


def test_auc_counts_every_positive_negative_pair_and_ties_half():
    positives, negatives = [3.0, 1.0, 2.0, 2.0], [2.0, 0.5, 2.5]
    pairs = list(itertools.product(positives, negatives))
    by_pairs = sum((p > n) + 0.5 * (p == n) for p, n in pairs) / len(pairs)
    assert metrics.auc(positives, negatives) == pytest.approx(by_pairs)
    assert metrics.auc([1.0], [2.0]) == 0.0 and metrics.auc([2.0], [2.0]) == 0.5
    assert metrics.auc([], [1.0]) is None


def test_within_group_auc_pairs_only_inside_a_group_weighted_by_its_pairs():
    # Group a: 2 x 1 pairs, both won; group b: 1 x 2 pairs, one won, one tied; c has no negative.
    groups = [([0.9, 0.8], [0.1]), ([0.5], [0.2, 0.5]), ([0.0], [])]
    value, pairs = metrics.within_group_auc(groups)
    assert pairs == 4 and value == pytest.approx((2 + 1.5) / 4)
    # Pooled, group c's low positive would lose to every negative; within groups it is never compared.
    assert metrics.auc([0.9, 0.8, 0.5, 0.0], [0.1, 0.2, 0.5]) < value
    assert metrics.within_group_auc([([1.0], []), ([], [0.0])]) == (None, 0)
