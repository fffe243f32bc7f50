"""The seeds' model shapes, and the arithmetic of what a step of them must move through GPU memory.

Every model the seeds run is a Qwen2 (RMSNorm, fused QKV projection with bias, rotary positions,
grouped-query attention, SwiGLU MLP); the figures below are their `config.json` on the Hub.
Qwen2.5-Math-PRM-7B is Qwen2.5-Math-7B with a two-layer reward head (hidden -> hidden -> 2) in
place of the lm_head; it only prefills (vLLM serves it through `/pooling`).
"""

from __future__ import annotations

from dataclasses import dataclass

# The H100 SXM's HBM3 bandwidth by the vendor's datasheet: the bound issue 34 checks against.
H100_BYTES_PER_S = 3.35e12
BF16_BYTES = 2
# vLLM's default share of the GPU's memory for weights, activations and the KV cache.
VLLM_MEMORY_SHARE = 0.9


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
