"""The seeds' model shapes, and the arithmetic of what a step of them must move through GPU memory.

Every model the seeds run is a Qwen2 (RMSNorm, fused QKV projection with bias, rotary positions,
grouped-query attention, SwiGLU MLP); the figures below are their `config.json` on the Hub.
Qwen2.5-Math-PRM-7B is Qwen2.5-Math-7B with a two-layer reward head (hidden -> hidden -> 2) in
place of the lm_head; it only prefills (vLLM serves it through `/pooling`).
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The H100 SXM's HBM3 bandwidth by the vendor's datasheet: the bound issue 34 checks against.
H100_BYTES_PER_S = 3.35e12
BF16_BYTES = 2
# vLLM's default share of the GPU's memory for weights, activations and the KV cache.
VLLM_MEMORY_SHARE = 0.9
# An H100 80GB's memory as the driver reports it (81,559 MiB), and dense bf16 matrix arithmetic as
# measured on one here (KINDS.md: 798 TFLOP/s on an 8192^3 product of random data).
H100_MEMORY_BYTES = 81559 * 2**20
H100_FLOP_PER_S = 798e12


@dataclass(frozen=True)
class Shape:
    """One Qwen2 model's shape."""

    hidden: int
    intermediate: int
    layers: int
    heads: int
    kv_heads: int
    vocab: int
    tied: bool = False
    reward_head: bool = False
    head_dim: int = 128

    @property
    def layer_params(self) -> int:
        """Parameters of one decoder layer: QKV (with bias), output projection, MLP, two norms."""
        q, kv = self.heads * self.head_dim, self.kv_heads * self.head_dim
        attention = self.hidden * (q + 2 * kv) + (q + 2 * kv) + q * self.hidden
        return attention + 3 * self.hidden * self.intermediate + 2 * self.hidden

    @property
    def head_params(self) -> int:
        """The output head: the lm_head (none of its own when tied), or the PRM's reward head."""
        if self.reward_head:
            return self.hidden * self.hidden + self.hidden + 2 * self.hidden + 2
        return 0 if self.tied else self.vocab * self.hidden

    @property
    def params(self) -> int:
        return self.vocab * self.hidden + self.layers * self.layer_params + self.hidden + self.head_params

    @property
    def step_weight_bytes(self) -> int:
        """Weight bytes one forward step reads: every layer, the final norm and the output head
        (the lm_head is the embedding when tied); of the embedding only a few rows."""
        head = self.vocab * self.hidden if not self.reward_head else self.head_params
        return BF16_BYTES * (self.layers * self.layer_params + self.hidden + head)

    @property
    def kv_bytes_per_token(self) -> int:
        """KV-cache bytes one token keeps: a key and a value per layer and KV head."""
        return BF16_BYTES * 2 * self.layers * self.kv_heads * self.head_dim

    def decode_bytes(self, batch: int, context: int) -> int:
        """Bytes a decode step of `batch` sequences at `context` tokens must move at the least:
        the weights once, each sequence's KV cache read, one new key and value written."""
        return self.step_weight_bytes + batch * (context + 1) * self.kv_bytes_per_token

    def bound_ms(self, batch: int, context: int, bytes_per_s: float = H100_BYTES_PER_S) -> float:
        """The bandwidth bound of one decode step, in ms."""
        return 1e3 * self.decode_bytes(batch, context) / bytes_per_s

    def weights_bound_ms(self, bytes_per_s: float = H100_BYTES_PER_S) -> float:
        """The bandwidth bound of the weights alone (issue 34's bound), in ms."""
        return 1e3 * self.step_weight_bytes / bytes_per_s

    def prefill_flop(self, tokens: int) -> float:
        """Arithmetic of an uncached prefill: two per weight and token, plus causal attention."""
        attention = 2 * self.layers * self.heads * self.head_dim * tokens * tokens  # QK^T and PV, halved
        return 2.0 * (self.params - self.vocab * self.hidden) * tokens + attention

    def context_that_fits(self, batch: int, free_bytes: float) -> int:
        """The longest context (tokens a sequence) at which `batch` sequences' KV caches fit in
        `free_bytes` (0 when none does)."""
        return max(0, int(free_bytes // (batch * self.kv_bytes_per_token)))


SHAPES: dict[str, Shape] = {
    "QwQ-32B": Shape(hidden=5120, intermediate=27648, layers=64, heads=40, kv_heads=8, vocab=152064),
    "R1-Distill-Qwen-1.5B": Shape(hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2, vocab=151936),
    "Qwen2.5-Math-7B": Shape(hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, vocab=152064),
    "Qwen2.5-Math-1.5B": Shape(
        hidden=1536, intermediate=8960, layers=28, heads=12, kv_heads=2, vocab=151936, tied=True
    ),
    "Qwen2.5-Math-PRM-7B": Shape(
        hidden=3584, intermediate=18944, layers=28, heads=28, kv_heads=4, vocab=152064, reward_head=True
    ),
}
# Shapes small enough to check the script on a CPU.
TINY_SHAPES: dict[str, Shape] = {
    "tiny": Shape(hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=256, head_dim=16),
    "tiny-prm": Shape(
        hidden=64, intermediate=128, layers=2, heads=4, kv_heads=2, vocab=256, head_dim=16, reward_head=True
    ),
}


def bound_figures(shape: Shape, over_bound: float, flop_share: float, activation_bytes: float = 2e9) -> dict[str, Any]:
    """`benchmarks.gpu_decode`'s figures for `shape` on an H100, derived instead of measured:
    decode at `over_bound` times its bandwidth bound, prefill at `flop_share` of the measured bf16
    matrix rate, a score as a prefill on its cached prefix, vLLM's KV cache from 80 GB."""
    kv_bytes = VLLM_MEMORY_SHARE * H100_MEMORY_BYTES - 2 * shape.params - activation_bytes

    def prefill_ms(tokens: int, context: int = 0) -> float:
        flop = shape.prefill_flop(context + tokens) - shape.prefill_flop(context)
        return max(1e3 * flop / (flop_share * H100_FLOP_PER_S), over_bound * shape.bound_ms(1, context + tokens))

    decode = [
        {
            "batch": b,
            "context": c,
            "fits": b * (c + 1) <= kv_bytes / shape.kv_bytes_per_token,
            "eager_ms": over_bound * shape.bound_ms(b, c),
        }
        for c in (2000, 8000)
        for b in (1, 4, 16, 64)
    ]
    return {
        "derived": f"decode at {over_bound}x its bandwidth bound, prefill at {flop_share:.0%} of the matrix rate",
        "decode": decode,
        "prefill": [{"tokens": t, "ms": prefill_ms(t)} for t in (512, 2000, 8000)],
        "score": {"context": 2000, "tokens": 50, "eager_ms": prefill_ms(50, 2000)},
        "memory": {"kv_tokens_vllm": shape.context_that_fits(1, kv_bytes)},
    }


def main(argv: list[str] | None = None) -> int:
    """`python -m benchmarks.gpu_shapes --out FILE`: figures derived from the bounds, in
    `benchmarks.gpu_decode`'s format, for a projection where no GPU was at hand."""
    parser = argparse.ArgumentParser(allow_abbrev=False, description=main.__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--over_bound", type=float, default=1.5, help="decode time over its bandwidth bound")
    parser.add_argument("--flop_share", type=float, default=0.6, help="share of the bf16 matrix rate a prefill gets")
    args = parser.parse_args(argv)
    shapes = {name: bound_figures(shape, args.over_bound, args.flop_share) for name, shape in SHAPES.items()}
    args.out.write_text(json.dumps({"device": "derived from bounds, not measured", "shapes": shapes}, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
