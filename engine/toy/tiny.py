"""Tiny Qwen2 causal LMs with random weights, built offline in seconds for tests and the demo.

Two models (`small`, `big`) share one byte-level BPE tokenizer trained on the spot, so speculative
setups see the same vocabulary. Their output is noise; what matters is that vLLM serves them like a
real Qwen2 chat model: ChatML template, `<|im_end|>` as end of turn, `<think>` tags, digits 0-9 as
single tokens (scores are read from the logprobs of one digit token).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import structlog

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerFast

log = structlog.get_logger(__name__)

# Bump when the files written here change, so stale caches are rebuilt instead of reused.
FORMAT_VERSION = 1
MARKER = "spectra-tiny-model.json"
MAX_POSITIONS = 4096
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
THINK_TOKENS = ["<think>", "</think>"]

# Qwen2's own pre-tokenizer pattern: every digit is its own piece (`\p{N}`) and runs of newlines
# stay together (`\s*[\r\n]+`), so "\n\n" can become one token as in the real tokenizer.
QWEN2_SPLIT_PATTERN = (
    r"(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"
    r"|\s*[\r\n]+|\s+(?!\S)|\s+"
)

CHAT_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)

CORPUS = [
    "0 1 2 3 4 5 6 7 8 9 10 12 25 100 2024 3.14 -7 1/2 x^2 + y^2 = z^2",
    "Let's think step by step.\n\nFirst, we compute the sum of the numbers.\n\n",
    "The answer is \\boxed{42}.\n\nTherefore the final answer is \\boxed{7}.",
    "Step 1: Find the value of x.\nStep 2: Substitute x into the equation.\n\n",
    "We solve the equation 3x + 5 = 20, so x = 5. Check: 3 * 5 + 5 = 20.\n\n",
    "The probability is \\frac{1}{6}. The area of the triangle is \\frac{1}{2} b h.\n\n",
    "Let n be a positive integer. The remainder when n is divided by 7 is 3.\n\n",
    "Score the step from 0 to 9. Score: 9\nScore: 0\nScore: 5\n",
    "Question: What is the sum of the first 10 positive integers?\nAnswer: 55\n\n",
    "(A) 12 (B) 15 (C) 18 (D) 21\nThe correct option is (B).\n\n",
    "<think>\nHmm, wait. Let me check the calculation again.\n</think>\n\n",
    "Since a + b = 10 and a - b = 2, we get a = 6 and b = 4. Hence a * b = 24.\n\n",
    "The square root of 144 is 12, and 2^10 = 1024. The polynomial has 3 real roots.\n\n",
    "Consider the function f(x) = x^3 - 3x. Its derivative is f'(x) = 3x^2 - 3.\n\n",
    "You are a careful mathematician. Solve the problem and put the final answer in \\boxed{}.\n\n",
    "Is this step correct? Yes, the reasoning is correct. No, there is an error.\n\n",
]


@dataclass(frozen=True)
class TinyModels:
    """Directories of the two tiny models; each is a Hugging Face model dir vLLM can serve."""

    small: Path
    big: Path


@dataclass(frozen=True)
class TinySize:
    """Shape of one small Qwen2 model (tiny or toy); head_dim is 64 because vLLM's CPU attention rejects 16."""

    hidden: int
    heads: int
    kv_heads: int
    layers: int
    intermediate: int


SMALL = TinySize(hidden=64, heads=1, kv_heads=1, layers=1, intermediate=128)
BIG = TinySize(hidden=128, heads=2, kv_heads=1, layers=2, intermediate=256)


def make_tiny_models(out_dir: Path, *, seed: int = 0) -> TinyModels:
    """Build (or reuse) the tiny `small` and `big` models under `out_dir`.

    Deterministic for a given `seed`; a complete earlier build with the same seed is reused as is.
    """
    out_dir = Path(out_dir)
    models = TinyModels(small=out_dir / "small", big=out_dir / "big")
    if is_complete(models.small, seed) and is_complete(models.big, seed):
        return models
    out_dir.mkdir(parents=True, exist_ok=True)
    tokenizer = build_tokenizer()
    for name, size, model_seed in (("small", SMALL, seed), ("big", BIG, seed + 1)):
        build_model(getattr(models, name), tokenizer, size, model_seed, marker_seed=seed)
    log.info("tiny_models_built", out_dir=str(out_dir), seed=seed, vocab=len(tokenizer))
    return models


def is_complete(model_dir: Path, seed: int) -> bool:
    marker = model_dir / MARKER
    if not marker.is_file():
        return False
    return json.loads(marker.read_text()) == {"format": FORMAT_VERSION, "seed": seed}


def build_tokenizer() -> PreTrainedTokenizerFast:
    # Repeating the corpus keeps "\n\n" and the math words frequent enough to be merged.
    return bpe_tokenizer(CORPUS * 4, vocab_size=640, max_positions=MAX_POSITIONS)


def bpe_tokenizer(corpus: list[str], *, vocab_size: int, max_positions: int) -> PreTrainedTokenizerFast:
    """A byte-level BPE tokenizer trained on `corpus` as Qwen2's is built (its pre-tokenizer: every
    digit its own piece), ChatML special tokens, `<think>`/`</think>` added after `vocab_size`."""
    from tokenizers import AddedToken, Regex, Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN2_SPLIT_PATTERN), behavior="isolated"),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=2,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tok.train_from_iterator(corpus, trainer=trainer)
    # Not special: thinking-model parsers look for <think> in the decoded text, so it must survive
    # skip_special_tokens, as in Qwen3 and DeepSeek-R1 tokenizers.
    tok.add_tokens([AddedToken(t, normalized=False, special=False) for t in THINK_TOKENS])
    return PreTrainedTokenizerFast(
        tokenizer_object=tok,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        additional_special_tokens=["<|im_start|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=max_positions,
    )


def qwen2_config(
    tokenizer: PreTrainedTokenizerFast, size: TinySize, *, positions: int = MAX_POSITIONS, **extra: object
):
    """The Qwen2 config of a model of `size` over `tokenizer` (float32 weights, `positions` RoPE positions)."""
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=len(tokenizer),
        hidden_size=size.hidden,
        intermediate_size=size.intermediate,
        num_hidden_layers=size.layers,
        num_attention_heads=size.heads,
        num_key_value_heads=size.kv_heads,
        head_dim=size.hidden // size.heads,
        max_position_embeddings=positions,
        max_window_layers=size.layers,
        bos_token_id=tokenizer.pad_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        dtype="float32",
        **extra,
    )


def build_model(
    model_dir: Path, tokenizer: PreTrainedTokenizerFast, size: TinySize, seed: int, *, marker_seed: int
) -> None:
    """A random-weight Qwen2 causal LM of `size` over `tokenizer`, written with it to `model_dir`."""
    import torch
    from transformers import GenerationConfig, Qwen2ForCausalLM

    config = qwen2_config(tokenizer, size, tie_word_embeddings=True)
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).eval()
    # Only the token ids: vLLM takes default sampling settings from generation_config.json.
    model.generation_config = GenerationConfig(
        bos_token_id=config.bos_token_id,
        eos_token_id=config.eos_token_id,
        pad_token_id=config.pad_token_id,
    )
    with building(model_dir, marker_seed) as tmp:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)


@contextlib.contextmanager
def building(model_dir: Path, seed: int, *, marker: tuple[str, dict] | None = None) -> Iterator[Path]:
    """A temporary sibling of `model_dir` to write a model into. When the block ends without error
    the marker (`marker`: its file name and content, else the tiny models' own for `seed`) is added
    and it is renamed to `model_dir`, so an interrupted build never looks complete."""
    name, content = marker or (MARKER, {"format": FORMAT_VERSION, "seed": seed})
    model_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{model_dir.name}-", dir=model_dir.parent))
    try:
        yield tmp
        (tmp / name).write_text(json.dumps(content))
        if model_dir.exists():
            shutil.rmtree(model_dir)
        tmp.rename(model_dir)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
