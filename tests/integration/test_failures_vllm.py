"""A run that cannot work is refused before its first problem, and a run whose problems fail says so,
on the session's tiny vLLM-CPU servers (started with vLLM's default --max-logprobs 20 and the tiny
models' context of 4096 tokens).

The issue's case first: RAST asks 200 logprobs of its positive and negative models, which stock
servers refuse; every problem failed, the run printed "accuracy 0/2" and exited 0.
"""

import json
import subprocess
import sys

import pytest

from engine.errors import PROBLEMS_FAILED_EXIT, ServerSettingError
from engine.reasoning.settings import ReasoningConfig
from engine.run.config import DataConfig, ModelConfig, RunConfig
from engine.run.configure import build_config
from engine.run.execute import execute
from engine.run.flags import parse_run_flags
from engine.run.store import RECORDS_FILE, read_records
from engine.toy.tiny import MAX_POSITIONS


async def test_rast_against_servers_with_the_default_max_logprobs_is_refused_in_one_line(vllm_servers, tmp_path):
    big, small = vllm_servers.big, vllm_servers.small
    flags = ["--base_model", big.model, "--base_url", big.url]
    for role in ("positive", "negative"):
        flags += [f"--{role}_model", small.model, f"--{role}_url", small.url]
    out = tmp_path / "rast"
    flags += ["--dataset_name", "demo", "--problem_id", "0-1", "--max_tokens", "12", "--output_dir", str(out)]
    plan, parsed = parse_run_flags("rast", flags)
    with pytest.raises(ServerSettingError) as refused:  # the command line's one line, exit code 2
        await execute(build_config(plan, parsed), progress=False)
    assert str(refused.value) == "; ".join(
        f"the {role} model's server gives at most 20 logprobs a token and the run asks 200 "
        f"(--rast_aux_logprobs): start it with --max-logprobs 200 (or let spectra start it: drop --{role}_url)"
        for role in ("positive", "negative")
    )
    assert refused.value.exit_code == 2 and not out.exists()


async def test_a_token_budget_beyond_the_servers_context_is_refused_before_the_first_problem(vllm_servers, tmp_path):
    big = vllm_servers.big
    config = RunConfig(
        runner="base",
        output_dir=str(tmp_path / "run"),
        models={"big": ModelConfig(big.model, (big.url,))},
        policy="big",
        reasoning=ReasoningConfig(token_budget=MAX_POSITIONS),
        data=DataConfig(dataset_name="demo", problem_id="0"),
    )
    with pytest.raises(ServerSettingError) as refused:
        await execute(config, progress=False)
    message = str(refused.value)
    assert message.startswith(f"the big model's server holds {MAX_POSITIONS} tokens of context (max_model_len)")
    assert "lower --token_budget by " in message and not (tmp_path / "run").exists()


def test_a_run_whose_problem_fails_exits_3_naming_the_first_error(vllm_servers, tmp_path):
    problems = tmp_path / "problems.jsonl"
    rows = [
        {"id": "short", "problem": "What is 2 + 2?", "answer": "4"},
        {"id": "long", "problem": "Long words " * MAX_POSITIONS, "answer": "4"},  # more tokens than the context
    ]
    problems.write_text("".join(json.dumps(row) + "\n" for row in rows))
    big, out = vllm_servers.big, tmp_path / "run"
    flags = ["--model", "big", "--big_model", big.model, "--big_url", big.url, "--token_budget", "16"]
    command = [sys.executable, "-m", "runners.base", *flags, "--dataset_name", str(problems), "--output_dir", str(out)]
    result = subprocess.run([*command, "--no_progress"], capture_output=True, text=True, timeout=300)
    assert result.returncode == PROBLEMS_FAILED_EXIT, result.stderr[-2000:]
    last = result.stderr.splitlines()[-1]
    assert last.startswith(f"spectra: 1 of 2 problems failed; first error: {big.url}: HTTP 400: "), last
    assert "context length" in last
    records = {r.problem_id: r for r in read_records(out / RECORDS_FILE).records}
    assert records["long"].failed and not records["short"].failed
