"""The seeds' real chat templates on a real vLLM server: a tiny random-weight model on Qwen2's real
vocabulary (tests/fixtures/qwen2_vocab/) served with `--chat-template` (R1-Distill-Qwen's), the
others given per request. vLLM accepts the prompts spectra renders with each template, and the
conversations the seeds send through vLLM's chat rendering come out as the same tokens as spectra's
own rendering, with Qwen2's real merges (so "\\n\\n", "<think>" and the template markup split as
they do for the seeds' models).
"""

from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from transformers import AutoTokenizer

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.reasoning.track import track_messages
from engine.serving.chat import ChatFormat
from engine.serving.servers import RunningServer, serve_models
from engine.serving.vllm_command import ServerSpec
from tests.fixtures.chat_templates import FOLDER, template_text
from tests.fixtures.qwen2_vocab import make_qwen2_model
from tests.integration.conftest import STARTUP_TIMEOUT_S

SERVED = "deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja"
TEMPLATES = {
    "Qwen-QwQ-32B.jinja": True,
    SERVED: True,
    "Qwen-Qwen2.5-7B-Instruct.jinja": False,
    "meta-llama-Llama-3.2-3B-Instruct.jinja": False,
}
STEP = "Six sevens make 42."
PROBLEM = Problem(id="p", problem="What is 6 * 7?", answer="42")


@pytest.fixture(scope="module")
def qwen2_model(tmp_path_factory) -> Path:
    return make_qwen2_model(tmp_path_factory.mktemp("qwen2-vocab") / "model")


@pytest.fixture(scope="module")
async def templated(qwen2_model, tmp_path_factory) -> AsyncIterator[RunningServer]:
    args = ("--chat-template", str(FOLDER / SERVED), "--trust-request-chat-template")
    spec = ServerSpec(name="templated", model=str(qwen2_model), dtype="float32", extra_args=args)
    log_dir = tmp_path_factory.mktemp("template-logs")
    async with serve_models([spec], log_dir=log_dir, startup_timeout_s=STARTUP_TIMEOUT_S) as running:
        yield running["templated"]


async def post(url: str, path: str, body: dict) -> dict:
    async with aiohttp.ClientSession() as session:
        async with session.post(url + path, json=body, timeout=aiohttp.ClientTimeout(total=60)) as response:
            payload = await response.json()
            assert response.status == 200, payload
            return payload


@pytest.mark.parametrize("name", sorted(TEMPLATES))
async def test_vllm_accepts_spectras_prompts_and_renders_the_seeds_chats_alike(templated, qwen2_model, name):
    tokenizer = AutoTokenizer.from_pretrained(qwen2_model)
    # Qwen2's ids, as rtp-llm's own test of these files checks them.
    assert tokenizer.encode("<|im_start|>hello<|im_end|>") == [151644, 14990, 151645]
    tokenizer.chat_template = template_text(name)
    chat = ChatFormat(tokenizer, thinking=TEMPLATES[name])
    messages = track_messages(PROBLEM, load_prompt_set("default"), None)
    conversation = [{"role": m.role, "content": m.content} for m in messages]
    per_request = {} if name == SERVED else {"chat_template": template_text(name)}
    model = templated.model

    first = chat.continuation(messages, "")
    continued = chat.continuation(messages, STEP + "\n\n")
    for prompt in (first, continued):
        completion = await post(
            templated.url, "/v1/completions", {"model": model, "prompt": prompt, "max_tokens": 2, "temperature": 0}
        )
        assert completion["usage"]["completion_tokens"] >= 1

    async def ours(prompt: str) -> list[int]:
        body = {"model": model, "prompt": prompt, "add_special_tokens": False}
        return (await post(templated.url, "/tokenize", body))["tokens"]

    async def seeds(chat_messages: list[dict], **how) -> list[int]:
        body = {"model": model, "messages": chat_messages, "add_special_tokens": False, **how, **per_request}
        return (await post(templated.url, "/tokenize", body))["tokens"]

    # SpecReason's first step: the chat with the generation prompt.
    assert await ours(first) == await seeds(conversation, add_generation_prompt=True)
    # Its continued step: the assistant turn "<think>" + steps, continued. Llama's template trims
    # the turn's trailing "\n\n" (spectra keeps it).
    turn = {"role": "assistant", "content": chat.think_open + STEP + "\n\n"}
    seed_tokens = await seeds([*conversation, turn], add_generation_prompt=False, continue_final_message=True)
    our_tokens = await ours(continued)
    if name.startswith("meta-llama"):
        # (compared as text: the last tokens merge differently with and without the "\n\n")
        seed_text, our_text = tokenizer.decode(seed_tokens), tokenizer.decode(our_tokens)
        assert our_text == seed_text + "\n\n"
    else:
        assert our_tokens == seed_tokens
    # Search's first step (search-and-learn's build_conv: a system turn, the problem, the generation
    # prompt); its later steps go on from that text.
    search = track_messages(PROBLEM, load_prompt_set("search"), None)
    search_conversation = [{"role": m.role, "content": m.content} for m in search]
    assert await ours(chat.generation_prompt(search)) == await seeds(search_conversation, add_generation_prompt=True)
