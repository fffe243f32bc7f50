"""The shipped toy pair: written offline in seconds as model folders vLLM can serve."""

import json

from engine.run.cli import main
from engine.serving.chat import load_chat_format
from engine.toy.trained import SIZES, WEIGHTS_DIR, make_toy_models


def test_make_toy_models_writes_both_models_from_the_shipped_weights(tmp_path, capsys):
    assert main(["make-toy-models", str(tmp_path)]) == 0
    printed = capsys.readouterr().out.split()
    folders = {
        "big": "big",
        "small": "small",
        "costly_big": "big-costly",
        "small_lost": "small-lost",
        "prm": "prm",
        "prm_token": "prm-token",
    }
    assert printed == [word for field, folder in folders.items() for word in (field, str(tmp_path / folder))]
    causal = (*SIZES.items(), ("small-lost", SIZES["small"]), ("prm-token", SIZES["prm"]))
    for folder_name, size in causal:
        folder = tmp_path / folder_name
        config = json.loads((folder / "config.json").read_text())
        architecture = "Qwen2ForProcessRewardModel" if folder_name == "prm" else "Qwen2ForCausalLM"
        assert config["architectures"] == [architecture] and config["head_dim"] == 64
        assert config["num_hidden_layers"] == size.layers and config["hidden_size"] == size.hidden
        assert (folder / "model.safetensors").stat().st_size > 0
        chat = load_chat_format(str(folder))
        assert chat.thinking
        tokens = chat._tokenizer.tokenize("57 + 33 = 90")
        assert [t for t in tokens if t.isdigit()] == list("573390")
    lost, small = (tmp_path / name / "model.safetensors" for name in ("small-lost", "small"))
    assert lost.read_bytes() != small.read_bytes()
    shipped = sum(p.stat().st_size for p in WEIGHTS_DIR.rglob("*") if p.is_file())
    assert shipped <= 32 * 1024 * 1024
    stamp = (tmp_path / "big" / "spectra-toy-model.json").stat().st_mtime_ns
    assert main(["make-toy-models", str(tmp_path)]) == 0  # a complete folder is reused, not rewritten
    assert (tmp_path / "big" / "spectra-toy-model.json").stat().st_mtime_ns == stamp


def test_the_costly_big_model_computes_the_trained_big_model_s_logits_exactly(tmp_path):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    toy = make_toy_models(tmp_path, big_layers=SIZES["big"].layers + 3)
    tokenizer = AutoTokenizer.from_pretrained(toy.big)
    ids = tokenizer("Start with 57. Add 33. Multiply by 2. What is the result?", return_tensors="pt").input_ids
    trained = AutoModelForCausalLM.from_pretrained(toy.big, dtype=torch.float32)
    costly = AutoModelForCausalLM.from_pretrained(toy.costly_big, dtype=torch.float32)
    assert costly.config.num_hidden_layers == trained.config.num_hidden_layers + 3
    # the extra layers compute on real activations (copies of layer 0), and add nothing
    extra = costly.model.layers[-1]
    assert torch.equal(extra.self_attn.q_proj.weight, trained.model.layers[0].self_attn.q_proj.weight)
    assert not extra.self_attn.o_proj.weight.any() and not extra.mlp.down_proj.weight.any()
    with torch.no_grad():
        assert torch.equal(trained(ids).logits, costly(ids).logits)


def test_a_costly_big_model_shallower_than_the_trained_one_is_refused(tmp_path, capsys):
    assert main(["make-toy-models", str(tmp_path), "--big_layers", "2"]) == 2
    assert "--big_layers must be at least the trained big model's 6" in capsys.readouterr().err
