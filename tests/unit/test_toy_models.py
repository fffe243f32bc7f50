"""The shipped toy pair: written offline in seconds as model folders vLLM can serve."""

import json

from engine.run.cli import main
from engine.serving.chat import load_chat_format
from engine.toy.toy_models import SIZES, WEIGHTS_DIR


def test_make_toy_models_writes_both_models_from_the_shipped_weights(tmp_path, capsys):
    assert main(["make-toy-models", str(tmp_path)]) == 0
    assert capsys.readouterr().out.split() == ["big", str(tmp_path / "big"), "small", str(tmp_path / "small")]
    for name, size in SIZES.items():
        folder = tmp_path / name
        config = json.loads((folder / "config.json").read_text())
        assert config["architectures"] == ["Qwen2ForCausalLM"] and config["head_dim"] == 64
        assert config["num_hidden_layers"] == size.layers and config["hidden_size"] == size.hidden
        assert (folder / "model.safetensors").stat().st_size > 0
        chat = load_chat_format(str(folder))
        assert chat.thinking
        tokens = chat._tokenizer.tokenize("57 + 33 = 90")
        assert [t for t in tokens if t.isdigit()] == list("573390")
    shipped = sum(p.stat().st_size for p in WEIGHTS_DIR.rglob("*") if p.is_file())
    assert shipped <= 20 * 1024 * 1024
    stamp = (tmp_path / "big" / "spectra-toy-model.json").stat().st_mtime_ns
    assert main(["make-toy-models", str(tmp_path)]) == 0  # a complete folder is reused, not rewritten
    assert (tmp_path / "big" / "spectra-toy-model.json").stat().st_mtime_ns == stamp
