"""The trained toy pair (issue 13): a small and a big Qwen2 model that solve the toy arithmetic task,
and a costly big model that computes exactly what the trained big model computes.

The weights ship with spectra (`engine/toy/weights/`, bf16, trained by `engine/toy/trainer.py`);
`make_toy_models` writes them out as Hugging Face model folders vLLM serves, in seconds and
offline. Both trained models cost about the same per token on vLLM-CPU, so speculation cannot win
there; `costly_big` stacks `COSTLY_BIG_LAYERS - 6` extra decoder layers on the trained big model
whose output projections (`o_proj`, `down_proj`, neither with a bias in Qwen2) are zero: each adds
exactly 0.0 to the residual stream, so the logits are bit-identical in float32, while every token
pays for their attention and MLP like a deeper model's (benchmarks/README.md: the calibration).
The models share one byte-level BPE tokenizer (`build_toy_tokenizer`), trained on the
prompt texts and toy problems so prompts are short in tokens; Qwen2's pre-tokenizer splits every
digit, `<think>`/`</think>` are non-special added tokens and the chat template is ChatML.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from engine.errors import UsageError
from engine.toy.tiny import TinySize

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

WEIGHTS_DIR = Path(__file__).parent / "weights"
TOKENIZER_DIR = WEIGHTS_DIR / "tokenizer"
MARKER = "spectra-toy-model.json"
FORMAT_VERSION = 1
# RoPE positions: no weights depend on it; room for the seeds' 8192-token single-request baselines.
MAX_POSITIONS = 16384
VOCAB_SIZE = 2048
# The models were trained with `<think>\n` before the steps. A first step starts from the template's
# generation prompt, which for reasoning models (DeepSeek-R1's template) already ends with
# `<think>\n`; earlier assistant turns (SpecReason's scoring conversation holds one) get the newline
# after `<think>` when it lacks one. The seeds' continuation after steps writes `<think>` + steps
# itself, with no newline: the models meet that form untrained (see engine/toy/weights/TRAINING.md).
SERVED_CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{%- set content = message['content'] %}"
    "{%- if message['role'] == 'assistant' and content.startswith('<think>')"
    " and not content.startswith('<think>\\n') %}"
    "{%- set content = '<think>\\n' + content[7:] %}"
    "{%- endif %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + content + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n<think>\\n' }}{%- endif %}"
)


# The small model is weaker by design: fewer, narrower layers (and less training).
SIZES = {
    "big": TinySize(hidden=256, heads=4, kv_heads=2, layers=6, intermediate=768),
    "small": TinySize(hidden=192, heads=3, kv_heads=1, layers=3, intermediate=512),
}


# The costly big model's depth: one decoded token then costs at least 6x the small model's on
# vLLM-CPU at batch 1, as a 32B model against a 1.5B drafter does on a GPU (benchmarks/README.md).
COSTLY_BIG_LAYERS = 48


# The shipped weight files: each file's stem, and the size (architecture) its weights fit. The
# `small_lost` model is the task variant on which DeepConf's confidence carries signal (issue 22):
# the small model fine-tuned on traces whose results are random once one has slipped.
WEIGHTS = {"small": "small", "big": "big", "small_lost": "small"}


@dataclass(frozen=True)
class ToyModels:
    small: Path
    big: Path
    # The trained big model's function at a big model's cost per token.
    costly_big: Path
    # A small model that is unsure of everything after its first slip (engine/toy/weights/TRAINING.md).
    small_lost: Path


def toy_config(name: str, tokenizer: PreTrainedTokenizerFast, *, padding: int = 0):
    """The Qwen2 config of the toy model `name` (the training script builds the same), with
    `padding` more decoder layers."""
    from engine.toy.tiny import qwen2_config

    size = replace(SIZES[name], layers=SIZES[name].layers + padding)
    return qwen2_config(tokenizer, size, positions=MAX_POSITIONS, tie_word_embeddings=True)


def make_toy_models(out_dir: Path, *, big_layers: int = COSTLY_BIG_LAYERS) -> ToyModels:
    """Write (or reuse) `out_dir/small`, `out_dir/big`, `out_dir/big-costly` (the trained big model
    padded to `big_layers` decoder layers) and `out_dir/small-lost` from the shipped weights."""
    out_dir = Path(out_dir)
    trained = SIZES["big"].layers
    if big_layers < trained:
        raise UsageError(f"--big_layers must be at least the trained big model's {trained}, not {big_layers}")
    models = ToyModels(
        small=out_dir / "small",
        big=out_dir / "big",
        costly_big=out_dir / "big-costly",
        small_lost=out_dir / "small-lost",
    )
    stamp = _stamp()
    # field -> (weights, padding)
    folders = {
        "small": ("small", 0),
        "big": ("big", 0),
        "costly_big": ("big", big_layers - trained),
        "small_lost": ("small_lost", 0),
    }
    stale = {
        field: spec
        for field, spec in folders.items()
        if _marker(getattr(models, field)) != {**stamp, "padding": spec[1]}
    }
    if not stale:
        return models
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(TOKENIZER_DIR)
    tokenizer.chat_template = SERVED_CHAT_TEMPLATE
    for field, (weights, padding) in stale.items():
        _write_model(getattr(models, field), weights, tokenizer, {**stamp, "padding": padding}, padding=padding)
    return models


def _stamp() -> dict:
    """What a built folder must match to be reused: the format and the shipped weights' digests
    (retrained weights have the same sizes)."""
    weights = {name: hashlib.sha256((WEIGHTS_DIR / f"{name}.safetensors").read_bytes()).hexdigest() for name in WEIGHTS}
    return {
        "format": FORMAT_VERSION,
        "weights": weights,
        "sizes": {n: asdict(s) for n, s in SIZES.items()},
        "chat_template": SERVED_CHAT_TEMPLATE,
        "max_positions": MAX_POSITIONS,
    }


def _marker(model_dir: Path) -> dict | None:
    marker = model_dir / MARKER
    return json.loads(marker.read_text()) if marker.is_file() else None


def _write_model(
    model_dir: Path, weights: str, tokenizer: PreTrainedTokenizerFast, stamp: dict, *, padding: int = 0
) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import GenerationConfig, Qwen2ForCausalLM

    name = WEIGHTS[weights]
    config = toy_config(name, tokenizer, padding=padding)
    state = {k: v.to(torch.float32) for k, v in load_file(WEIGHTS_DIR / f"{weights}.safetensors").items()}
    if padding:
        state = _padded(state, SIZES[name].layers, padding)
    model = Qwen2ForCausalLM(config)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"toy weights {weights} do not fit the model: missing {missing}, unexpected {unexpected}")
    model.tie_weights()
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id, eos_token_id=config.eos_token_id, pad_token_id=config.pad_token_id
    )
    # Written into a temporary sibling and renamed, so an interrupted build never looks complete.
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}-", dir=model_dir.parent))
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        (tmp / MARKER).write_text(json.dumps(stamp))
        if model_dir.exists():
            shutil.rmtree(model_dir)
        tmp.rename(model_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


# The layers' parameters whose output enters the residual stream; zeroed, a layer adds exactly 0.0.
RESIDUAL_WRITERS = ("self_attn.o_proj.weight", "mlp.down_proj.weight")


def _padded(state: dict, layers: int, padding: int) -> dict:
    """`state` with `padding` more decoder layers after the `layers` it has: copies of layer 0 (so
    their attention and MLP compute on real activations) whose residual writers are zero."""
    import torch

    first = {k.removeprefix("model.layers.0."): v for k, v in state.items() if k.startswith("model.layers.0.")}
    padded = dict(state)
    for index in range(layers, layers + padding):
        for key, value in first.items():
            padded[f"model.layers.{index}.{key}"] = (
                torch.zeros_like(value) if key in RESIDUAL_WRITERS else value.clone()
            )
    return padded


def build_toy_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    """The shared tokenizer, trained on `corpus` (prompt texts, problems, solutions)."""
    from engine.toy.tiny import THINK_TOKENS, bpe_tokenizer

    return bpe_tokenizer(corpus, vocab_size=VOCAB_SIZE - len(THINK_TOKENS), max_positions=MAX_POSITIONS)
