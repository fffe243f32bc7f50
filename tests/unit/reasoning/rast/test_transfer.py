"""RAST's combination, temperature, top-p and speculative acceptance, on plain numbers."""

import math
import random

import pytest

from engine.reasoning.rast.transfer import (
    combine,
    draft_distribution,
    residual,
    sample,
    sampling_distribution,
    top_k,
    verify_chunk,
)


def log_softmax(logits):
    top = max(logits.values())
    total = math.log(sum(math.exp(v - top) for v in logits.values())) + top
    return {t: v - total for t, v in logits.items()}


def test_combining_logprobs_equals_combining_logits_when_every_logprob_is_known():
    # Log-softmax shifts each model's logits by a constant, which the softmax after RAST's rule removes.
    base, pos, neg = {0: 2.0, 1: 0.5, 2: -1.0}, {0: 0.1, 1: 1.7, 2: 0.3}, {0: 0.9, 1: 0.2, 2: 0.4}
    alpha = 0.7
    from_logits = {t: base[t] + alpha * (pos[t] - neg[t]) for t in base}
    combined = combine(log_softmax(base), log_softmax(pos), log_softmax(neg), alpha, vocab_limit=3)
    expected = sampling_distribution(from_logits, 1.0, 1.0)
    got = sampling_distribution(combined.scores, 1.0, 1.0)
    assert got == pytest.approx(expected, abs=1e-12)
    assert combined.fills == {"base": 0, "positive": 0, "negative": 0}


def test_missing_tokens_get_the_models_lowest_shown_logprob_and_are_counted():
    base = {0: -0.1, 1: -2.5}
    pos = {0: -0.3, 2: -1.5}
    neg = {1: -0.2, 2: -3.0}
    combined = combine(base, pos, neg, alpha=1.0, vocab_limit=10)
    assert set(combined.scores) == {0, 1, 2}
    # base misses 2 (gets -2.5), pos misses 1 (gets -1.5), neg misses 0 (gets -3.0)
    assert combined.scores[0] == pytest.approx(-0.1 + (-0.3 - -3.0))
    assert combined.scores[1] == pytest.approx(-2.5 + (-1.5 - -0.2))
    assert combined.scores[2] == pytest.approx(-2.5 + (-1.5 - -3.0))
    assert combined.fills == {"base": 1, "positive": 1, "negative": 1}


def test_candidates_come_from_the_top_k_and_values_from_every_logprob_returned():
    # The small models return more than k: their extra entries fill values, not candidates, so a
    # candidate the negative model ranks low gets its true logprob, not an overrated k-th one.
    base = {0: -0.1, 1: -2.5}
    pos = {0: -0.3, 2: -1.5, 3: -4.0}
    neg = {1: -0.2, 2: -3.0, 0: -6.0}
    combined = combine(base, pos, neg, alpha=1.0, vocab_limit=10, k=2)
    assert set(combined.scores) == {0, 1, 2}  # 3 is only in positive's extra entries
    assert combined.scores[0] == pytest.approx(-0.1 + (-0.3 - -6.0))  # the k-th (-3.0) would underrate it
    assert combined.fills == {"base": 1, "positive": 1, "negative": 0}


def test_ids_past_the_shared_vocabulary_never_win():
    base = {0: -3.0, 700: -0.01}
    combined = combine(base, {0: -0.5, 700: -0.1}, {0: -0.5}, alpha=1.0, vocab_limit=640)
    assert set(combined.scores) == {0}


def test_top_k_drops_the_extra_sampled_token_vllm_adds():
    assert top_k({5: -4.0, 1: -0.2, 2: -1.0, 3: -2.0}, 3) == {1: -0.2, 2: -1.0, 3: -2.0}


def test_temperature_then_top_p_as_vllm():
    probs = {0: 0.5, 1: 0.3, 2: 0.15, 3: 0.05}
    scores = {t: math.log(p) for t, p in probs.items()}
    # ascending cumulative: 0.05, 0.20, 0.50, 1.0; with top_p 0.85 drop while cumulative <= 0.15
    assert sampling_distribution(scores, 1.0, 0.85) == pytest.approx({1: 0.3 / 0.95, 2: 0.15 / 0.95, 0: 0.5 / 0.95})
    # top_p 0.75 drops tokens up to cumulative 0.25: tokens 3 and 2
    assert sampling_distribution(scores, 1.0, 0.75) == pytest.approx({0: 0.5 / 0.8, 1: 0.3 / 0.8})
    hot = sampling_distribution(scores, 2.0, 1.0)
    assert hot[0] == pytest.approx(math.sqrt(0.5) / sum(math.sqrt(p) for p in probs.values()))
    assert sampling_distribution(scores, 0.0, 0.95) == {0: 1.0}


def test_greedy_ties_go_to_the_lowest_id():
    assert sampling_distribution({4: 1.0, 2: 1.0, 9: 0.5}, 0.0, 1.0) == {2: 1.0}


def test_draft_distribution_is_the_tempered_top_k():
    base = {0: math.log(0.6), 1: math.log(0.3)}  # top-2 of a larger vocabulary
    assert draft_distribution(base, 1.0, 1) == pytest.approx({0: 2 / 3, 1: 1 / 3})
    assert draft_distribution(base, 0.5, 0) == pytest.approx({0: 0.36 / 0.45, 1: 0.09 / 0.45})
    assert draft_distribution({0: -1.0, 1: -1.0}, 0.0, 1) == {1: 1.0}  # greedy: what vLLM picked


def test_residual_is_the_normalised_positive_part():
    assert residual({0: 0.5, 1: 0.5}, {0: 0.8, 1: 0.1, 2: 0.1}) == pytest.approx({1: 1.0})
    assert residual({0: 0.2, 1: 0.5, 2: 0.3}, {0: 0.4, 1: 0.4, 2: 0.2}) == pytest.approx({1: 0.5, 2: 0.5})


def test_sample_follows_the_distribution():
    rng = random.Random(1)
    counts = [0, 0, 0]
    for _ in range(20000):
        counts[sample({0: 0.2, 1: 0.5, 2: 0.3}, rng)] += 1
    assert [c / 20000 for c in counts] == pytest.approx([0.2, 0.5, 0.3], abs=0.015)


def test_verify_chunk_keeps_tokens_the_target_likes_more_and_adds_the_bonus():
    same = {0: 0.5, 1: 0.5}
    verdict = verify_chunk([1, 0], [same, same], [same, same], {7: 1.0}, random.Random(0))
    assert verdict.tokens == [1, 0, 7] and verdict.accepted == 2


def test_verify_chunk_rejects_a_token_the_target_never_gives_and_draws_from_the_residual():
    verdict = verify_chunk([1, 0], [{1: 1.0}, {0: 1.0}], [{0: 0.4, 2: 0.6}, {0: 1.0}], {7: 1.0}, random.Random(0))
    assert verdict.accepted == 0 and len(verdict.tokens) == 1 and verdict.tokens[0] in (0, 2)


def test_one_position_of_speculative_acceptance_samples_the_target_exactly():
    target, draft = {0: 0.1, 1: 0.6, 2: 0.3}, {0: 0.5, 1: 0.2, 2: 0.3}
    rng, counts, n = random.Random(3), [0, 0, 0], 30000
    for _ in range(n):
        token = sample(draft, rng)
        counts[verify_chunk([token], [draft], [target], None, rng).tokens[0]] += 1
    assert [c / n for c in counts] == pytest.approx([0.1, 0.6, 0.3], abs=0.012)


def test_verify_chunk_refuses_a_token_its_draft_could_not_have_drawn():
    with pytest.raises(ValueError, match="no probability"):
        verify_chunk([3], [{0: 1.0}], [{3: 1.0}], None, random.Random(0))
