"""How `benchmarks.gpu_projection` turns the GPU's measured figures into the sim's cost model."""

import pytest

from benchmarks.gpu_projection import gpu_cost, reward_model_cost


def point(batch: int, context: int, eager: float | None, fused: float | None = None) -> dict:
    if eager is None:
        return {"batch": batch, "context": context, "fits": False}
    times = {"eager_ms": eager} | ({"fused_ms": fused} if fused is not None else {})
    return {"batch": batch, "context": context, "fits": True, **times}


MEASURED = {
    "decode": [
        point(1, 2000, 22.0, 21.0),
        point(4, 2000, 23.0, 24.0),
        point(16, 2000, 26.0),
        point(64, 2000, None),
        point(1, 8000, 21.6),
        point(4, 8000, 25.4),
    ],
    "prefill": [{"tokens": 512, "ms": 60.0}, {"tokens": 2000, "ms": 221.0}, {"tokens": 8000, "ms": 900.0}],
    "memory": {"kv_tokens_vllm": 45000},
}


def test_decode_takes_the_faster_kernels_at_the_reference_context_and_skips_what_did_not_fit():
    cost = gpu_cost(MEASURED)
    assert cost.decode_ms == ((1, 21.0), (4, 23.0), (16, 26.0))
    assert cost.reference_context == 2000 and cost.kv_tokens == 45000


def test_the_kv_term_is_the_mean_cost_of_a_longer_context_per_sequence_and_token():
    # batch 1: (21.6 - 21.0) / 6000; batch 4: (25.4 - 23.0) / (4 * 6000)
    assert gpu_cost(MEASURED).kv_ms_per_token == pytest.approx((0.6 / 6000 + 2.4 / 24000) / 2)


def test_prefill_runs_through_the_two_longest_prefills_beyond_one_decode_steps_weight_reading():
    cost = gpu_cost(MEASURED)
    # 200 ms for 2,000 tokens and 879 ms for 8,000 once the batch-1 decode step is taken off
    assert cost.iteration_ms(1, 2000, [(0, 2000)]) == pytest.approx(221.0)
    assert cost.iteration_ms(1, 2000, [(0, 8000)]) == pytest.approx(900.0)
    assert cost.prefill_ms_per_token_squared == pytest.approx((879 / 8000 - 200 / 2000) / 6000)
    assert cost.prefix_cache


def test_a_reward_model_only_prefills_and_never_from_a_cache():
    cost = reward_model_cost({"prefill": MEASURED["prefill"], "memory": MEASURED["memory"]})
    assert [cost.iteration_ms(1, 0, [(0, n)]) for n in (2000, 8000)] == pytest.approx([221.0, 900.0])
    assert not cost.prefix_cache and cost.kv_tokens == 45000
