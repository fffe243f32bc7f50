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
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

from engine.errors import UsageError
from engine.toy.tiny import TinySize, building

log = structlog.get_logger(__name__)

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

WEIGHTS_DIR = Path(__file__).parent / "weights"
TOKENIZER_DIR = WEIGHTS_DIR / "tokenizer"
MARKER = "spectra-toy-model.json"
FORMAT_VERSION = 1
# RoPE positions: no weights depend on it; room for the seeds' 8192-token single-request baselines.
MAX_POSITIONS = 16384
VOCAB_SIZE = 2048
# vLLM's `--dtype auto` serves a float32 checkpoint in bfloat16 on a CPU: slow there without native
# bf16 kernels, and the costly big model no longer bit-identical to the trained one. The toy models
# are measured and tested in float32; every server spectra starts for one gets these flags.
SERVER_ARGS = ("--dtype", "float32")
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


# The toy PRM keeps this many of the trained big model's first layers (engine/toy/weights/TRAINING.md).
PRM_LAYERS = 6


# The small model is weaker by design: fewer, narrower layers (and less training). The process
# reward model is the big model's width and its first layers (engine/toy/trained_prm.py).
SIZES = {
    "big": TinySize(hidden=256, heads=4, kv_heads=2, layers=6, intermediate=768),
    "small": TinySize(hidden=192, heads=3, kv_heads=1, layers=3, intermediate=512),
    "prm": TinySize(hidden=256, heads=4, kv_heads=2, layers=PRM_LAYERS, intermediate=768),
}


# The costly big model's depth: one decoded token then costs at least 6x the small model's on
# vLLM-CPU at batch 1, as a 32B model against a 1.5B drafter does on a GPU (benchmarks/README.md).
COSTLY_BIG_LAYERS = 48


# The shipped weight files: each file's stem, and the size (architecture) its weights fit. The
# `small_lost` model is the task variant on which DeepConf's confidence carries signal (issue 22):
# the small model fine-tuned on traces whose results are random once one has slipped.
WEIGHTS = {"small": "small", "big": "big", "small_lost": "small", "prm": "prm"}


@dataclass(frozen=True)
class ToyModels:
    small: Path
    big: Path
    # The trained big model's function at a big model's cost per token.
    costly_big: Path
    # A small model that is unsure of everything after its first slip (engine/toy/weights/TRAINING.md).
    small_lost: Path
    # The toy process reward model, served as Qwen2ForProcessRewardModel (engine/toy/trained_prm.py),
    # and its causal-LM twin, which writes "+" or "-" after a step tag.
    prm: Path
    prm_token: Path


def toy_config(name: str, tokenizer: PreTrainedTokenizerFast, *, padding: int = 0):
    """The Qwen2 config of the toy model `name` (the training script builds the same), with
    `padding` more decoder layers."""
    from engine.toy.tiny import qwen2_config

    size = replace(SIZES[name], layers=SIZES[name].layers + padding)
    return qwen2_config(tokenizer, size, positions=MAX_POSITIONS, tie_word_embeddings=True)


def make_toy_models(out_dir: Path, *, big_layers: int = COSTLY_BIG_LAYERS) -> ToyModels:
    """Write (or reuse) `out_dir/small`, `out_dir/big`, `out_dir/big-costly` (the trained big model
    padded to `big_layers` decoder layers), `out_dir/small-lost`, `out_dir/prm` and
    `out_dir/prm-token` from the shipped weights."""
    out_dir = Path(out_dir)
    trained = SIZES["big"].layers
    if big_layers < trained:
        raise UsageError(f"--big_layers must be at least the trained big model's {trained}, not {big_layers}")
    models = ToyModels(
        small=out_dir / "small",
        big=out_dir / "big",
        costly_big=out_dir / "big-costly",
        small_lost=out_dir / "small-lost",
        prm=out_dir / "prm",
        prm_token=out_dir / "prm-token",
    )
    stamp = _stamp()
    # field -> (weights, padding)
    folders = {
        "small": ("small", 0),
        "big": ("big", 0),
        "costly_big": ("big", big_layers - trained),
        "small_lost": ("small_lost", 0),
        "prm": ("prm", 0),
        "prm_token": ("prm", 0),
    }
    stale = {
        field: spec
        for field, spec in folders.items()
        if _marker(getattr(models, field)) != {**stamp, "padding": spec[1]}
    }
    if stale:
        from transformers.utils import logging as transformers_logging

        # Written once, in seconds: transformers' bar per shard would be noise on the demo's screen.
        shown = transformers_logging.is_progress_bar_enabled()
        transformers_logging.disable_progress_bar()
        try:
            for field, (weights, padding) in stale.items():
                folder, folder_stamp = getattr(models, field), {**stamp, "padding": padding}
                if field == "prm":
                    _write_prm(folder, folder_stamp)
                else:
                    _write_model(folder, weights, folder_stamp, padding=padding)
        finally:
            if shown:
                transformers_logging.enable_progress_bar()
        log.info("toy_models_written", folder=str(out_dir), models=sorted(stale))
    return models


def _tokenizer(weights: str) -> PreTrainedTokenizerFast:
    """The toy tokenizer with the served chat template; the PRM's has its step tag too."""
    if weights == "prm":
        return prm_tokenizer()
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(TOKENIZER_DIR)
    tokenizer.chat_template = SERVED_CHAT_TEMPLATE
    return tokenizer


def prm_tokenizer() -> PreTrainedTokenizerFast:
    """The toy tokenizer with `<extra_0>` as one special token and the served chat template."""
    from transformers import PreTrainedTokenizerFast

    from engine.toy.tiny_prm import STEP_TAG

    tokenizer = PreTrainedTokenizerFast.from_pretrained(TOKENIZER_DIR)
    # Replaces the list of additional special tokens, so `<|im_start|>` is named again.
    tokenizer.add_special_tokens({"additional_special_tokens": ["<|im_start|>", STEP_TAG]})
    tokenizer.chat_template = SERVED_CHAT_TEMPLATE
    return tokenizer


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


def _write_model(model_dir: Path, weights: str, stamp: dict, *, padding: int = 0) -> None:
    """A causal LM folder: the weights' body and the language-model head tied to its embeddings
    (a process reward model's own head, `score.*`, is left out)."""
    import torch
    from safetensors.torch import load_file
    from transformers import GenerationConfig, Qwen2ForCausalLM

    name, tokenizer = WEIGHTS[weights], _tokenizer(weights)
    config = toy_config(name, tokenizer, padding=padding)
    state = {
        k: v.to(torch.float32)
        for k, v in load_file(WEIGHTS_DIR / f"{weights}.safetensors").items()
        if not k.startswith("score.")
    }
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
    with building(model_dir, 0, marker=(MARKER, stamp)) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


def _write_prm(model_dir: Path, stamp: dict) -> None:
    """The PRM folder vLLM serves as `Qwen2ForProcessRewardModel`: transformers has no such class,
    so the shipped tensors (`model.*` and the head `score.*`, the names vLLM loads) are written as they are."""
    import torch
    from safetensors.torch import load_file, save_file

    from engine.toy.tiny_prm import ARCHITECTURE

    tokenizer = _tokenizer("prm")
    config = toy_config("prm", tokenizer)  # two labels, Qwen2Config's default and vLLM's for a PRM
    config.architectures = [ARCHITECTURE]
    state = {k: v.to(torch.float32).contiguous() for k, v in load_file(WEIGHTS_DIR / "prm.safetensors").items()}
    expected = {f"model.{k}" for k in _body_keys(config)} | {
        f"score.{i}.{p}" for i in (0, 2) for p in ("weight", "bias")
    }
    if set(state) != expected:
        raise RuntimeError(f"toy weights prm do not fit the PRM: {sorted(set(state) ^ expected)[:6]}")
    with building(model_dir, 0, marker=(MARKER, stamp)) as tmp:
        save_file(state, str(tmp / "model.safetensors"), metadata={"format": "pt"})
        config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)


def _body_keys(config) -> set[str]:
    import torch
    from transformers import Qwen2Model

    with torch.device("meta"):  # names only, no memory
        return set(Qwen2Model(config).state_dict())


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
