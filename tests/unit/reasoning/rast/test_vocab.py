"""The token space RAST's models share, and the server flags it needs."""

import pytest
from tokenizers import Tokenizer, models
from transformers import PreTrainedTokenizerFast

from engine.errors import UsageError
from engine.reasoning.rast.vocab import rast_server_args, shared_token_space
from tests.unit.conftest import WORDS, chatml_tokenizer


def word_tokenizer(words):
    vocab = dict(zip(words, range(len(words)), strict=True))
    return PreTrainedTokenizerFast(
        tokenizer_object=Tokenizer(models.WordLevel(vocab, unk_token="[UNK]")),
        unk_token="[UNK]",
        eos_token="<|im_end|>",
    )


def test_models_of_one_tokenizer_share_every_id_and_stop_on_its_end_tokens():
    bigger = word_tokenizer([*WORDS, "padding-like"])
    space = shared_token_space({"base": bigger, "positive": chatml_tokenizer(), "negative": chatml_tokenizer()})
    assert space.vocab_limit == len(WORDS)  # the bigger vocabulary's extra id never wins
    assert space.stop_token_ids == {WORDS.index("<|im_end|>")}
    assert space.decode([WORDS.index("The"), WORDS.index("answer")]) == "The answer"


def test_tokenizers_that_disagree_on_an_id_are_refused_naming_it():
    swapped = list(WORDS)
    swapped[2], swapped[3] = swapped[3], swapped[2]
    with pytest.raises(UsageError, match="negative model's tokenizer calls token 2 'answer'"):
        shared_token_space(
            {"base": chatml_tokenizer(), "positive": chatml_tokenizer(), "negative": word_tokenizer(swapped)}
        )


def test_servers_get_raw_logprobs_enough_of_them_and_vllm_sampling_defaults():
    args = rast_server_args(640)
    assert args[args.index("--logprobs-mode") + 1] == "raw_logprobs"
    assert args[args.index("--max-logprobs") + 1] == "640"
    assert args[args.index("--generation-config") + 1] == "vllm"
