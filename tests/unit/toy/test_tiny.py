"""The tiny models: a tokenizer that behaves like Qwen2's where spectra cares, configs vLLM's CPU
backend accepts, deterministic builds, and reuse of a complete earlier build."""

import json

import pytest
from transformers import AutoConfig, AutoTokenizer

from engine.toy.tiny import MARKER, make_tiny_models

# Building models needs torch, which comes with the cpu/gpu extras (vLLM), not the base install.
pytest.importorskip("torch")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    return make_tiny_models(tmp_path_factory.mktemp("tiny"), seed=0)


@pytest.fixture(scope="module")
def tokenizer(tiny):
    return AutoTokenizer.from_pretrained(tiny.small)


def test_every_digit_is_one_token_and_numbers_split_into_digits(tokenizer):
    for digit in "0123456789":
        assert len(tokenizer.encode(digit, add_special_tokens=False)) == 1
    ids = tokenizer.encode("2024", add_special_tokens=False)
    assert [tokenizer.decode([i]) for i in ids] == ["2", "0", "2", "4"]


@pytest.mark.parametrize(
    "text",
    [
        "Step 1: x = 3.\n\nStep 2: so 2x + 1 = 7.\n\n",
        "The answer is \\boxed{\\frac{1}{2}}.",
        "<think>\nWait, check it.\n</think>\n\nÀ bientôt: 3 ≠ 4",
    ],
)
def test_text_round_trips(tokenizer, text):
    assert tokenizer.decode(tokenizer.encode(text, add_special_tokens=False)) == text


def test_double_newline_and_think_tags_are_single_tokens(tokenizer):
    for piece in ("\n\n", "<think>", "</think>"):
        assert len(tokenizer.encode(piece, add_special_tokens=False)) == 1, piece
    # Not special: thinking parsers read the tags from text decoded with skip_special_tokens.
    ids = tokenizer.encode("<think>a</think><|im_end|>", add_special_tokens=False)
    assert tokenizer.decode(ids, skip_special_tokens=True) == "<think>a</think>"


def test_chat_template_is_chatml_with_generation_prompt(tokenizer):
    messages = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "1+1?"}]
    text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert text == (
        "<|im_start|>system\nBe brief.<|im_end|>\n<|im_start|>user\n1+1?<|im_end|>\n<|im_start|>assistant\n"
    )
    assert not tokenizer.apply_chat_template(messages, tokenize=False).endswith("assistant\n")
    assert (tokenizer.eos_token, tokenizer.pad_token, tokenizer.bos_token) == ("<|im_end|>", "<|endoftext|>", None)


def test_models_share_the_tokenizer_and_fit_vllm_cpu(tiny, tokenizer):
    assert (tiny.small / "tokenizer.json").read_bytes() == (tiny.big / "tokenizer.json").read_bytes()
    small, big = AutoConfig.from_pretrained(tiny.small), AutoConfig.from_pretrained(tiny.big)
    for config in (small, big):
        assert config.model_type == "qwen2" and config.head_dim == 64
        assert config.vocab_size == len(tokenizer) and config.max_position_embeddings >= 4096
        assert config.eos_token_id == tokenizer.eos_token_id
    assert big.hidden_size * big.num_hidden_layers > small.hidden_size * small.num_hidden_layers
    generation = json.loads((tiny.small / "generation_config.json").read_text())
    assert set(generation) <= {"bos_token_id", "eos_token_id", "pad_token_id", "transformers_version"}


def test_same_seed_same_files_other_seed_other_weights(tiny, tmp_path):
    again = make_tiny_models(tmp_path / "again", seed=0)
    other = make_tiny_models(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert (again.big / name).read_bytes() == (tiny.big / name).read_bytes(), name
    assert (other.big / "model.safetensors").read_bytes() != (tiny.big / "model.safetensors").read_bytes()


def test_a_complete_build_is_reused_and_an_incomplete_one_rebuilt(tmp_path):
    first = make_tiny_models(tmp_path, seed=0)
    weights = first.small / "model.safetensors"
    built_at = weights.stat().st_mtime_ns
    assert make_tiny_models(tmp_path, seed=0) == first
    assert weights.stat().st_mtime_ns == built_at

    (first.small / MARKER).unlink()
    make_tiny_models(tmp_path, seed=0)
    assert (first.small / MARKER).is_file() and weights.stat().st_mtime_ns != built_at

    make_tiny_models(tmp_path, seed=3)
    assert json.loads((first.big / MARKER).read_text())["seed"] == 3


def test_tiny_prm_is_a_qwen2_process_reward_model_with_a_single_step_tag(tmp_path):
    import torch
    from safetensors.torch import load_file

    from engine.reasoning.judges.prm import prm_kind_of
    from engine.toy.tiny_prm import STEP_TAG, make_tiny_prm, prm_server_args, step_tag_id

    model_dir = make_tiny_prm(tmp_path)
    config = AutoConfig.from_pretrained(model_dir)
    assert config.architectures == ["Qwen2ForProcessRewardModel"] and config.num_labels == 2
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer.encode(f"a{STEP_TAG}b{STEP_TAG}", add_special_tokens=False)
    assert ids.count(step_tag_id(model_dir)) == 2
    # vLLM's Qwen2 reward head: hidden -> hidden, ReLU, hidden -> 2 labels.
    weights = load_file(str(model_dir / "model.safetensors"))
    assert weights["score.0.weight"].shape == (config.hidden_size, config.hidden_size)
    assert weights["score.2.weight"].shape == (2, config.hidden_size) and weights["score.2.bias"].dtype == torch.float32
    assert json.loads(prm_server_args(model_dir)[-1]) == {"step_tag_id": step_tag_id(model_dir)}
    assert prm_kind_of(str(model_dir)) == "pooling"
    stamp = (model_dir / "model.safetensors").stat().st_mtime_ns
    assert make_tiny_prm(tmp_path) == model_dir and (model_dir / "model.safetensors").stat().st_mtime_ns == stamp
