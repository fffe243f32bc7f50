"""The token space RAST's three models share, and the vLLM flags their servers need.

RAST (ozyyshr/RAST, vllm/config.py `ContrastiveDecodingConfig`) assumes the base, positive and
negative models share the base model's tokenizer, and cuts every model's logits to the smallest
width, so the padding columns of a bigger model (Qwen2.5-14B has 152064 logits, 1.5B 151936, the
tokenizer 151665 tokens) never win. spectra checks the assumption instead of making it: the
tokenizers must give the same token string to every id below the smallest of them, and ids from
there on are left out of the combination.

Why ids and not strings: requests send token ids and ask for `return_tokens_as_token_ids`, because
vLLM's decoded token strings are lossy (a byte-level BPE token holding part of a UTF-8 character
decodes to "\\ufffd", so several ids share one string); ids are exact once the tokenizers agree.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from engine.errors import UsageError
from engine.reasoning.rast.decoding import TokenSpace
from engine.records import Role

if TYPE_CHECKING:
    from transformers import PreTrainedTokenizerBase

# RAST's runner stops on these ids as well as on the tokenizer's end of sequence: Qwen2.5's
# <|im_end|> and <|endoftext|> (vllm/tests/RAST_decode/run.py `stop_token_ids`).
RAST_STOP_TOKENS = ("<|im_end|>", "<|endoftext|>")


def shared_token_space(tokenizers: Mapping[str, PreTrainedTokenizerBase], base: str = Role.BASE) -> TokenSpace:
    """The ids every tokenizer gives the same string, the stop ids, and the base tokenizer's decoder.

    Raises UsageError naming the first id whose string differs: such models cannot be combined.
    """
    limit = min(len(tok) for tok in tokenizers.values())
    reference = tokenizers[base].convert_ids_to_tokens(list(range(limit)))
    for role, tok in tokenizers.items():
        strings = tok.convert_ids_to_tokens(list(range(limit)))
        for token_id, (mine, theirs) in enumerate(zip(strings, reference, strict=True)):
            if mine != theirs:
                raise UsageError(
                    f"the {role} model's tokenizer calls token {token_id} {mine!r} where the {base} model's says "
                    f"{theirs!r}; RAST needs models of one tokenizer family (e.g. all Qwen2.5)"
                )
    decoder = tokenizers[base]
    stop_ids = {
        decoder.eos_token_id,
        *(decoder.convert_tokens_to_ids(t) for t in RAST_STOP_TOKENS if t in decoder.vocab),
    }
    return TokenSpace(
        vocab_limit=limit,
        stop_token_ids=frozenset(t for t in stop_ids if t is not None),
        decode=lambda ids: decoder.decode(ids, skip_special_tokens=True),
    )


def rast_server_args(max_logprobs: int) -> tuple[str, ...]:
    """vLLM flags for a server RAST reads: raw logprobs (vLLM's default, said out loud: the processed
    modes would fold each request's own temperature and top-p into the logprobs), enough of them,
    and vLLM's own sampling defaults instead of the model's generation_config.json."""
    return ("--logprobs-mode", "raw_logprobs", "--max-logprobs", str(max_logprobs), "--generation-config", "vllm")
