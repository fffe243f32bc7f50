"""A Qwen2 forward pass written out by hand over a static KV cache, for timing the seeds' shapes
with random weights (`benchmarks.gpu_decode`).

Why by hand: eager decode of the small shapes is launch-bound (issue 34: R1-1.5B 15.3 ms a token,
almost Math-7B's 17.0), so a projection needs decode captured in a CUDA graph as vLLM runs it, and
transformers' StaticCache failed under manual capture. Every buffer here is allocated once and
every shape is fixed, so one step can be captured and replayed.

A step feeds `new` tokens of each of `batch` sequences at positions `start .. start + new - 1`:
with `start` 0 and no cache it is an uncached prefill (causal attention over the fresh keys);
otherwise the new keys and values are written into the cache and the queries attend to the cache's
first `start + new` positions (a decode step when `new` is 1, a score on a cached prefix when more).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from benchmarks.gpu_shapes import Shape

RMS_EPS = 1e-6
ROPE_THETA = 1e6
INIT_STD = 0.02


@dataclass
class Layer:
    input_norm: torch.Tensor
    qkv: torch.Tensor
    qkv_bias: torch.Tensor
    out: torch.Tensor
    post_norm: torch.Tensor
    gate_up: torch.Tensor
    down: torch.Tensor


@dataclass
class Weights:
    """A model's weights; `head` is the lm_head (the embedding when tied) or, for a PRM, the reward
    head's two layers (`head`, `head_bias`, `score`, `score_bias`)."""

    embed: torch.Tensor
    layers: list[Layer]
    norm: torch.Tensor
    head: torch.Tensor
    head_bias: torch.Tensor | None = None
    score: torch.Tensor | None = None
    score_bias: torch.Tensor | None = None


def random_weights(shape: Shape, device: str, dtype: torch.dtype, seed: int = 0) -> Weights:
    """Random weights of `shape` (normal, std 0.02; norms near 1), drawn on `device`."""
    generator = torch.Generator(device=device).manual_seed(seed)

    def normal(*size: int, mean: float = 0.0) -> torch.Tensor:
        tensor = torch.empty(size, device=device, dtype=dtype)
        return tensor.normal_(mean, INIT_STD, generator=generator)

    h, q, kv = shape.hidden, shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    layers = [
        Layer(
            input_norm=normal(h, mean=1.0),
            qkv=normal(q + 2 * kv, h),
            qkv_bias=normal(q + 2 * kv),
            out=normal(h, q),
            post_norm=normal(h, mean=1.0),
            gate_up=normal(2 * shape.intermediate, h),
            down=normal(h, shape.intermediate),
        )
        for _ in range(shape.layers)
    ]
    embed = normal(shape.vocab, h)
    if shape.reward_head:
        return Weights(embed, layers, normal(h, mean=1.0), normal(h, h), normal(h), normal(2, h), normal(2))
    return Weights(embed, layers, normal(h, mean=1.0), embed if shape.tied else normal(shape.vocab, h))


def rms_norm(x: torch.Tensor, weight: torch.Tensor) -> torch.Tensor:
    return F.rms_norm(x.float(), (x.shape[-1],), eps=RMS_EPS).to(x.dtype) * weight


def add_rms_norm(x: torch.Tensor, delta: torch.Tensor, weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The residual stream after adding `delta`, and its norm (vLLM fuses the two in one kernel)."""
    x = x + delta
    return x, rms_norm(x, weight)


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x: [batch, new, heads, head_dim]; cos, sin: [new, head_dim]."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos[:, None, :] + rotated * sin[:, None, :]


def silu_mul(gate_up: torch.Tensor) -> torch.Tensor:
    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


@dataclass(frozen=True)
class Ops:
    """The elementwise pieces of a layer: as PyTorch's eager kernels (several launches each), or
    each fused into one kernel by `torch.compile` (`fused_ops`), as vLLM runs its own fused kernels."""

    norm: Callable = rms_norm
    add_norm: Callable = add_rms_norm
    rotary: Callable = apply_rotary
    silu_mul: Callable = silu_mul


def fused_ops() -> Ops:
    """The same ops compiled by `torch.compile` (dynamic shapes: a few compiles serve every batch;
    sizes of 1 and sizes that happen to be equal are specialised, hence the higher limit)."""
    torch._dynamo.config.recompile_limit = 64
    functions = (rms_norm, add_rms_norm, apply_rotary, silu_mul)
    return Ops(*(torch.compile(f, dynamic=True, fullgraph=True) for f in functions))


@dataclass
class Step:
    """The static buffers of one step: input tokens, rotary tables for its positions, the KV cache
    (one key and one value tensor per layer, [batch, kv_heads, length, head_dim]) and its mask."""

    tokens: torch.Tensor
    start: int
    cos: torch.Tensor
    sin: torch.Tensor
    keys: list[torch.Tensor] | None
    values: list[torch.Tensor] | None
    mask: torch.Tensor | None
    ops: Ops = field(default_factory=Ops)


def causal_mask(start: int, new: int, device: str) -> torch.Tensor:
    """Additive mask, [new, start + new]: query i (at position start + i) sees keys 0 .. start + i."""
    keys = torch.arange(start + new, device=device)[None, :]
    visible = keys <= start + torch.arange(new, device=device)[:, None]
    return torch.zeros(new, start + new, device=device).masked_fill(~visible, float("-inf"))


def new_step(
    shape: Shape, batch: int, new: int, start: int, cached: bool, device: str, dtype: torch.dtype, ops: Ops = Ops()
) -> Step:
    """Buffers for a step of `new` tokens at `start`; with `cached`, a KV cache of `start + new`
    positions filled with random values (a prefix someone computed before)."""
    generator = torch.Generator(device=device).manual_seed(1)
    tokens = torch.randint(0, shape.vocab, (batch, new), device=device, generator=generator)
    cos, sin = rotary(shape.head_dim, start, new, device, dtype)
    keys = values = mask = None
    if cached:
        size = (batch, shape.kv_heads, start + new, shape.head_dim)
        keys = [torch.randn(size, device=device, dtype=dtype, generator=generator) for _ in range(shape.layers)]
        values = [torch.randn(size, device=device, dtype=dtype, generator=generator) for _ in range(shape.layers)]
        mask = causal_mask(start, new, device) if new > 1 else None
    return Step(tokens, start, cos, sin, keys, values, mask, ops)


def rotary(head_dim: int, start: int, count: int, device: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2's rotary tables for positions `start .. start + count - 1`, [count, head_dim]."""
    inverse = 1.0 / (ROPE_THETA ** (torch.arange(0, head_dim, 2, device=device, dtype=torch.float32) / head_dim))
    angles = torch.arange(start, start + count, device=device, dtype=torch.float32)[:, None] * inverse[None, :]
    angles = torch.cat([angles, angles], dim=-1)
    return angles.cos().to(dtype), angles.sin().to(dtype)


def attention(shape: Shape, step: Step, layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """q: [batch, new, heads, head_dim]; k, v: [batch, new, kv_heads, head_dim] -> [batch, new, heads * head_dim]."""
    batch, new, heads, dim = q.shape
    group = heads // shape.kv_heads
    if step.keys is None:
        # Uncached prefill: causal attention over the fresh keys (flash attention on a GPU).
        k, v = (t.transpose(1, 2).repeat_interleave(group, dim=1) for t in (k, v))
        out = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, is_causal=True)
        return out.transpose(1, 2).reshape(batch, new, heads * dim)
    keys, values = step.keys[layer], step.values[layer]
    keys[:, :, step.start : step.start + new] = k.transpose(1, 2)
    values[:, :, step.start : step.start + new] = v.transpose(1, 2)
    # Each KV head's query heads side by side, so the cache is read once, not once per query head.
    grouped = q.view(batch, new, shape.kv_heads, group, dim).permute(0, 2, 3, 1, 4)
    grouped = grouped.reshape(batch, shape.kv_heads, group * new, dim)
    scores = torch.matmul(grouped, keys.transpose(-1, -2)).float() * dim**-0.5
    if step.mask is not None:
        length = keys.shape[2]
        scores = (scores.view(batch, shape.kv_heads, group, new, length) + step.mask).view_as(scores)
    out = torch.matmul(scores.softmax(dim=-1).to(q.dtype), values)
    out = out.view(batch, shape.kv_heads, group, new, dim).permute(0, 3, 1, 2, 4)
    return out.reshape(batch, new, heads * dim)


def attend(shape: Shape, step: Step, layer: Layer, index: int, normed: torch.Tensor) -> torch.Tensor:
    """The attention block's output (before the residual add) for the normed hidden states."""
    batch, new, _ = normed.shape
    q_size, kv_size = shape.heads * shape.head_dim, shape.kv_heads * shape.head_dim
    q, k, v = F.linear(normed, layer.qkv, layer.qkv_bias).split([q_size, kv_size, kv_size], dim=-1)
    q = step.ops.rotary(q.view(batch, new, shape.heads, shape.head_dim), step.cos, step.sin)
    k = step.ops.rotary(k.view(batch, new, shape.kv_heads, shape.head_dim), step.cos, step.sin)
    v = v.view(batch, new, shape.kv_heads, shape.head_dim)
    return F.linear(attention(shape, step, index, q, k, v), layer.out)


def hidden_states(shape: Shape, weights: Weights, step: Step) -> torch.Tensor:
    """The final normed hidden states of the step's tokens, [batch, new, hidden]."""
    ops, layers = step.ops, weights.layers
    x = weights.embed[step.tokens]
    normed = ops.norm(x, layers[0].input_norm)
    for index, layer in enumerate(layers):
        x, normed = ops.add_norm(x, attend(shape, step, layer, index, normed), layer.post_norm)
        following = layers[index + 1].input_norm if index + 1 < len(layers) else weights.norm
        x, normed = ops.add_norm(x, F.linear(ops.silu_mul(F.linear(normed, layer.gate_up)), layer.down), following)
    return normed


def next_token_logits(shape: Shape, weights: Weights, step: Step) -> torch.Tensor:
    """Logits after the step's last token, [batch, vocab] (vLLM computes no others)."""
    return F.linear(hidden_states(shape, weights, step)[:, -1], weights.head)


def reward(shape: Shape, weights: Weights, step: Step) -> torch.Tensor:
    """A PRM's probability that each position's step is good, [batch, new] (the head runs on every
    position; vLLM's step pooling keeps those of the step separators)."""
    x = F.relu(F.linear(hidden_states(shape, weights, step), weights.head, weights.head_bias))
    return F.linear(x, weights.score, weights.score_bias).float().softmax(dim=-1)[..., 1]


def forward(shape: Shape, weights: Weights, step: Step) -> torch.Tensor:
    """What a server computes for the step: the greedy next token of each sequence, or a PRM's rewards."""
    if shape.reward_head:
        return reward(shape, weights, step)
    return next_token_logits(shape, weights, step).argmax(dim=-1)
