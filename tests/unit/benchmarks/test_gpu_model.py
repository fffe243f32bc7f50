"""The hand-written Qwen2 forward pass that `benchmarks.gpu_decode` times computes what
transformers' Qwen2 computes with the same weights: an uncached prefill, a cached prefill on top of
a prefix (a judge's score) and decode steps over the static KV cache, compared on fresh random
tokens in float32 on the CPU."""

import pytest
import torch
from transformers import Qwen2Config, Qwen2ForCausalLM

from benchmarks.gpu_model import (
    RMS_EPS,
    ROPE_THETA,
    Ops,
    Step,
    Weights,
    causal_mask,
    forward,
    fused_ops,
    next_token_logits,
    random_weights,
    reward,
    rotary,
)
from benchmarks.gpu_shapes import TINY_SHAPES, Shape

TINY = TINY_SHAPES["tiny"]


def reference_model(shape: Shape, weights: Weights) -> Qwen2ForCausalLM:
    """transformers' Qwen2 of `shape` holding `weights`."""
    config = Qwen2Config(
        hidden_size=shape.hidden,
        intermediate_size=shape.intermediate,
        num_hidden_layers=shape.layers,
        num_attention_heads=shape.heads,
        num_key_value_heads=shape.kv_heads,
        head_dim=shape.head_dim,
        vocab_size=shape.vocab,
        rms_norm_eps=RMS_EPS,
        rope_theta=ROPE_THETA,
        tie_word_embeddings=shape.tied,
    )
    model = Qwen2ForCausalLM(config).eval()
    q, kv = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    state = {
        "model.embed_tokens.weight": weights.embed,
        "model.norm.weight": weights.norm,
        "lm_head.weight": weights.head,
    }
    for i, layer in enumerate(weights.layers):
        prefix = f"model.layers.{i}."
        for name, tensor in zip(("q", "k", "v"), layer.qkv.split([q, kv, kv]), strict=True):
            state[prefix + f"self_attn.{name}_proj.weight"] = tensor
        for name, tensor in zip(("q", "k", "v"), layer.qkv_bias.split([q, kv, kv]), strict=True):
            state[prefix + f"self_attn.{name}_proj.bias"] = tensor
        gate, up = layer.gate_up.chunk(2)
        state |= {
            prefix + "self_attn.o_proj.weight": layer.out,
            prefix + "input_layernorm.weight": layer.input_norm,
            prefix + "post_attention_layernorm.weight": layer.post_norm,
            prefix + "mlp.gate_proj.weight": gate,
            prefix + "mlp.up_proj.weight": up,
            prefix + "mlp.down_proj.weight": layer.down,
        }
    model.load_state_dict(state, strict=True)
    return model


EAGER = Ops()


def cached_steps(shape: Shape, tokens: torch.Tensor, chunks: list[int], ops: Ops = EAGER) -> list[Step]:
    """Steps that feed `tokens` in chunks of `chunks` tokens through one KV cache of their whole length."""
    batch, length = tokens.shape
    size = (batch, shape.kv_heads, length, shape.head_dim)
    # poisoned: a position the steps should have written and did not shows up as NaN
    keys = [torch.full(size, float("nan")) for _ in range(shape.layers)]
    values = [torch.full(size, float("nan")) for _ in range(shape.layers)]
    steps, start = [], 0
    for new in chunks:
        end = start + new
        cos, sin = rotary(shape.head_dim, start, new, "cpu", torch.float32)
        mask = causal_mask(start, new, "cpu") if new > 1 else None
        view = [k[:, :, :end] for k in keys], [v[:, :, :end] for v in values]
        steps.append(Step(tokens[:, start:end], start, cos, sin, *view, mask, ops))
        start = end
    return steps


@pytest.fixture
def weights():
    return random_weights(TINY, "cpu", torch.float32, seed=int(torch.randint(0, 2**31, ())))


def fresh_tokens(batch: int, length: int) -> torch.Tensor:
    return torch.randint(0, TINY.vocab, (batch, length))


def reference_logits(weights: Weights, tokens: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return reference_model(TINY, weights)(tokens).logits


def relative_error(out: torch.Tensor, ref: torch.Tensor) -> float:
    return float((out - ref).norm() / ref.norm())


def test_an_uncached_prefill_gives_transformers_last_logits(weights):
    tokens = fresh_tokens(3, 24)
    (step,) = cached_steps(TINY, tokens, [24])
    uncached = Step(tokens, 0, step.cos, step.sin, None, None, None)
    ref = reference_logits(weights, tokens)[:, -1]
    assert relative_error(next_token_logits(TINY, weights, uncached), ref) < 1e-5
    assert torch.equal(forward(TINY, weights, uncached), ref.argmax(-1))


@pytest.mark.parametrize("ops", [Ops(), fused_ops()], ids=["eager", "fused"])
def test_a_score_on_a_cached_prefix_then_decode_steps_follow_transformers(weights, ops):
    tokens = fresh_tokens(2, 30)
    ref = reference_logits(weights, tokens)
    # a prefix of 20, a 7-token score prompt on it, then three decode steps of one token
    steps = cached_steps(TINY, tokens, [20, 7, 1, 1, 1], ops)
    ends = [20, 27, 28, 29, 30]
    for step, end in zip(steps, ends, strict=True):
        logits = next_token_logits(TINY, weights, step)
        assert relative_error(logits, ref[:, end - 1]) < 1e-5, f"after {end} tokens"
    assert not any(k.isnan().any() for k in steps[-1].keys)


def test_a_prm_rewards_every_position_from_the_same_hidden_states():
    shape = TINY_SHAPES["tiny-prm"]
    weights = random_weights(shape, "cpu", torch.float32, seed=3)
    tokens = torch.randint(0, shape.vocab, (1, 12))
    (whole,) = cached_steps(shape, tokens, [12])
    first, rest = cached_steps(shape, tokens, [5, 7])
    rewards = reward(shape, weights, whole)
    assert rewards.shape == (1, 12) and ((rewards > 0) & (rewards < 1)).all()
    # causal: the first five positions' rewards do not depend on what follows them
    assert torch.allclose(reward(shape, weights, first), rewards[:, :5], atol=1e-6)
    assert torch.allclose(reward(shape, weights, rest), rewards[:, 5:], atol=1e-6)
