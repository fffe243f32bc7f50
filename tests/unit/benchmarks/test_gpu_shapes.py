"""The seeds' shapes and the arithmetic of their bounds (`benchmarks.gpu_shapes`)."""

import pytest

from benchmarks.gpu_shapes import H100_BYTES_PER_S, SHAPES, TINY_SHAPES, bound_figures


def test_the_shapes_have_their_published_sizes():
    # QwQ-32B 32.8B parameters, R1-Distill-Qwen-1.5B 1.78B (untied), Qwen2.5-Math-1.5B 1.54B (tied)
    sizes = {name: round(shape.params / 1e9, 2) for name, shape in SHAPES.items()}
    assert sizes["QwQ-32B"] == 32.76 and sizes["R1-Distill-Qwen-1.5B"] == 1.78
    assert sizes["Qwen2.5-Math-1.5B"] == 1.54 and sizes["Qwen2.5-Math-7B"] == 7.62
    # a QwQ-32B token keeps 64 layers x 8 KV heads x 128 x (key, value) x 2 bytes = 256 KiB
    assert SHAPES["QwQ-32B"].kv_bytes_per_token == 256 * 1024


def test_a_decode_bound_counts_the_weights_once_and_every_sequences_cache():
    shape = TINY_SHAPES["tiny"]
    # per layer: QKV 64 x (64 + 2 * 32) + bias 128, output 64 x 64, MLP 3 x 64 x 128, two norms
    layer = 64 * 128 + 128 + 64 * 64 + 3 * 64 * 128 + 2 * 64
    assert shape.layer_params == layer
    assert shape.step_weight_bytes == 2 * (2 * layer + 64 + 256 * 64)
    # 2 layers x 2 KV heads x 16 dims x (key, value) x 2 bytes = 256 bytes a token, 11 tokens each
    assert shape.decode_bytes(batch=3, context=10) == shape.step_weight_bytes + 3 * 11 * 256
    assert shape.bound_ms(3, 10) == pytest.approx(1e3 * shape.decode_bytes(3, 10) / H100_BYTES_PER_S)


def test_figures_derived_from_the_bounds_follow_them():
    shape = SHAPES["QwQ-32B"]
    figures = bound_figures(shape, over_bound=1.5, flop_share=0.6)
    first = figures["decode"][0]
    assert (first["batch"], first["context"]) == (1, 2000)
    assert first["eager_ms"] == pytest.approx(1.5 * shape.bound_ms(1, 2000))
    # a 50-token score on a cached prefix is bandwidth-bound: one weight read, as a decode step
    assert figures["score"]["eager_ms"] == pytest.approx(1.5 * shape.bound_ms(1, 2050))
    # 90% of 80 GB less 65.5 GB of weights and 2 GB of activations: about 36,000 tokens of 256 KiB
    assert 35_000 < figures["memory"]["kv_tokens_vllm"] < 37_000
    fits = {(p["batch"], p["context"]): p["fits"] for p in figures["decode"]}
    assert fits[(16, 2000)] and not fits[(16, 8000)] and not fits[(64, 2000)]
