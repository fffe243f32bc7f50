"""A tiny process reward model with random weights, shaped like Qwen/Qwen2.5-Math-PRM-7B.

vLLM serves `Qwen2ForProcessRewardModel` as a pooling model: a Qwen2 body and a two-layer head
(`score.0`: hidden -> hidden, ReLU, `score.2`: hidden -> 2 labels) read at every `<extra_0>`
token, where the answer is softmax([bad, good]). transformers has no such class (the real model
ships remote code), so the weights are written here: a random Qwen2 body from transformers and
a random head, under the names vLLM's loader expects. The tokenizer is the tiny models' one with
`<extra_0>` added as a single special token. Its id is not Qwen's 151651 (vLLM's default
`step_tag_id`), so the server needs `prm_server_args(...)`.
"""

from __future__ import annotations

import json
from pathlib import Path

import structlog

from engine.toy.tiny import SMALL, build_tokenizer, building, is_complete, qwen2_config

log = structlog.get_logger(__name__)

STEP_TAG = "<extra_0>"
ARCHITECTURE = "Qwen2ForProcessRewardModel"


def make_tiny_prm(out_dir: Path, *, seed: int = 0) -> Path:
    """Build (or reuse) the tiny PRM in `out_dir/prm`; deterministic for a given `seed`."""
    model_dir = Path(out_dir) / "prm"
    if is_complete(model_dir, seed):
        return model_dir
    tokenizer = build_tokenizer()
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", STEP_TAG]})
    with building(model_dir, seed) as tmp:
        _write_weights(tmp, tokenizer, seed)
        tokenizer.save_pretrained(tmp)
    log.info("tiny_prm_built", model_dir=str(model_dir), seed=seed)
    return model_dir


def step_tag_id(model_dir: Path) -> int:
    """The token id of `<extra_0>` in the model's tokenizer."""
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model_dir).convert_tokens_to_ids(STEP_TAG)


def prm_server_args(model_dir: Path) -> tuple[str, ...]:
    """vLLM flags that serve the tiny PRM: pooling runner, step pooling at its own `<extra_0>` id."""
    pooler = {"step_tag_id": step_tag_id(model_dir)}
    return ("--runner", "pooling", "--pooler-config", json.dumps(pooler))


def _write_weights(model_dir: Path, tokenizer, seed: int) -> None:
    import torch
    from safetensors.torch import save_file
    from transformers import Qwen2Model

    size = SMALL
    config = qwen2_config(tokenizer, size, tie_word_embeddings=False, num_labels=2)
    config.architectures = [ARCHITECTURE]
    torch.manual_seed(seed)
    body = Qwen2Model(config).eval()
    tensors = {f"model.{name}": t.contiguous() for name, t in body.state_dict().items()}
    hidden = size.hidden
    # A larger scale than the body's init, so the two labels' probabilities differ visibly per step.
    tensors["score.0.weight"] = torch.randn(hidden, hidden) / hidden**0.5
    tensors["score.0.bias"] = torch.zeros(hidden)
    tensors["score.2.weight"] = torch.randn(2, hidden)
    tensors["score.2.bias"] = torch.zeros(2)
    save_file(tensors, str(model_dir / "model.safetensors"), metadata={"format": "pt"})
    config.save_pretrained(model_dir)
