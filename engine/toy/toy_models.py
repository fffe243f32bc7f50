"""The trained toy pair (issue 13): a small and a big Qwen2 model that solve the toy arithmetic task.

The weights ship with spectra (`engine/toy/weights/`, bf16, trained by `engine/toy/trainer.py`);
`make_toy_models` writes them out as two Hugging Face model folders vLLM serves, in seconds and
offline. Both models share one byte-level BPE tokenizer (`build_toy_tokenizer`), trained on the
prompt texts and toy problems so prompts are short in tokens; Qwen2's pre-tokenizer splits every
digit, `<think>`/`</think>` are non-special added tokens and the chat template is ChatML.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from engine.toy.tiny_models import TinySize

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


@dataclass(frozen=True)
class ToyModels:
    small: Path
    big: Path


def toy_config(name: str, tokenizer: PreTrainedTokenizerFast):
    """The Qwen2 config of the toy model `name` (the training script builds the same)."""
    from engine.toy.tiny_models import qwen2_config

    return qwen2_config(tokenizer, SIZES[name], positions=MAX_POSITIONS, tie_word_embeddings=True)


def make_toy_models(out_dir: Path) -> ToyModels:
    """Write (or reuse) `out_dir/small` and `out_dir/big` from the shipped weights."""
    out_dir = Path(out_dir)
    models = ToyModels(small=out_dir / "small", big=out_dir / "big")
    stamp = _stamp()
    if all(_marker(getattr(models, name)) == stamp for name in SIZES):
        return models
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(TOKENIZER_DIR)
    tokenizer.chat_template = SERVED_CHAT_TEMPLATE
    for name in SIZES:
        _write_model(getattr(models, name), name, tokenizer, stamp)
    return models


def _stamp() -> dict:
    """What a built folder must match to be reused: the format and the shipped weights' digests
    (retrained weights have the same sizes)."""
    weights = {name: hashlib.sha256((WEIGHTS_DIR / f"{name}.safetensors").read_bytes()).hexdigest() for name in SIZES}
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


def _write_model(model_dir: Path, name: str, tokenizer: PreTrainedTokenizerFast, stamp: dict) -> None:
    import torch
    from safetensors.torch import load_file
    from transformers import GenerationConfig, Qwen2ForCausalLM

    config = toy_config(name, tokenizer)
    model = Qwen2ForCausalLM(config)
    state = {k: v.to(torch.float32) for k, v in load_file(WEIGHTS_DIR / f"{name}.safetensors").items()}
    missing, unexpected = model.load_state_dict(state, strict=False)
    if unexpected or [k for k in missing if k != "lm_head.weight"]:
        raise RuntimeError(f"toy weights {name} do not fit the model: missing {missing}, unexpected {unexpected}")
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


def build_toy_tokenizer(corpus: list[str]) -> PreTrainedTokenizerFast:
    """The shared tokenizer, trained on `corpus` (prompt texts, problems, solutions)."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    from engine.toy.tiny_models import CHAT_TEMPLATE, QWEN2_SPLIT_PATTERN, SPECIAL_TOKENS, THINK_TOKENS

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE - len(THINK_TOKENS),
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    # Not special, as in Qwen3 and DeepSeek-R1: reasoning parsers look for them in decoded text.
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in THINK_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=MAX_POSITIONS,
    )
