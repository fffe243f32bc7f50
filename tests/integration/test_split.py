"""SplitReason's modes end to end on the tiny vLLM-CPU models: `runners.split` with each mode flag,
`spectra run --policy random_switch` on the demo, and one offloaded <bigmodel> span written by the
big model and closed by real probes (random weights never write the tag themselves).

Random weights write random text, so these check protocol and bookkeeping, never content."""

import subprocess
import sys
from types import SimpleNamespace

import aiohttp
import pytest

from engine.data.prompts import load_prompt_set
from engine.reasoning.policies import POLICIES
from engine.reasoning.policies.base import StepContext
from engine.reasoning.policies.splitreason.spec_reason import CLOSE_TAG, PROBED_CHUNKS, SPAN_CHUNK_TOKENS
from engine.reasoning.settings import ReasoningConfig
from engine.run.store import RECORDS_FILE, read_records
from engine.serving.chat import Message, load_chat_format
from engine.serving.client import ModelClient
from engine.serving.models import Model
from tests.integration.test_runs import check_track_bookkeeping

SPLIT_POLICIES = {
    "--random_switch": "random_switch",
    "--logprob_subselect": "logprob_subselect",
    "--spec_reason": "spec_reason",
    "--big_model_only": "big",
    "--small_model_only": "small",
}


@pytest.mark.parametrize("mode", list(SPLIT_POLICIES))
def test_runners_split_runs_each_mode(vllm_servers, tmp_path, mode):
    out = tmp_path / "split"
    servers = vllm_servers
    command = [sys.executable, "-m", "runners.split", mode, "--dataset_name", "demo", "--problem_id", "0"]
    policy = SPLIT_POLICIES[mode]
    # The models the mode calls: a run refuses a model it does not call.
    for role in [policy] if policy in ("big", "small") else ["big", "small"]:
        command += [f"--{role}_model", getattr(servers, role).model, f"--{role}_url", getattr(servers, role).url]
    command += ["--max_tokens", "48", "--seed", "3", "--output_dir", str(out)]
    result = subprocess.run([*command, "--no_progress"], capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = read_records(out / RECORDS_FILE).records
    (track,) = record.tracks
    assert track.policy == policy and track.thinking_tokens <= 48
    answer_model = "small" if policy == "small" else "big"
    check_track_bookkeeping(track, SimpleNamespace(policy=policy, reasoning=SimpleNamespace(answer_model=answer_model)))
    if mode == "--logprob_subselect":
        rounds = track.steps[0].detail["rounds"]
        assert rounds and len(rounds[0]["scores"]) == 8 and all(score <= 0 for score in rounds[0]["scores"])


def test_spectra_run_policy_random_switch_runs_on_the_demo(toy_models, tmp_path):
    command = [sys.executable, "-m", "runners.spectra", "run", "--policy", "random_switch", "--seed", "1"]
    command += ["--toy_models_dir", str(toy_models.big.parent), "--problem_id", "0"]
    command += ["--output_dir", str(tmp_path / "demo"), "--no_progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = read_records(tmp_path / "demo" / RECORDS_FILE).records
    (track,) = record.tracks
    assert track.policy == "random_switch" and track.finish_reason in ("budget", "answer", "eos")
    assert {s.tokens for s in track.steps[:-1]} <= {16}  # chunks of --switch_chunk until the last


def test_deepconf_measures_every_trace_random_switch_writes_on_the_demo(toy_models, tmp_path):
    # SplitReason's requests once dropped the track's logprobs request: no trace had a confidence.
    command = [sys.executable, "-m", "runners.spectra", "run", "--policy", "random_switch", "--seed", "1"]
    command += ["--strategy", "deepconf", "--deepconf_traces", "3", "--deepconf_keep", "100"]
    command += ["--toy_models_dir", str(toy_models.big.parent), "--problem_id", "0"]
    command += ["--output_dir", str(tmp_path / "deepconf"), "--no_progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = read_records(tmp_path / "deepconf" / RECORDS_FILE).records
    answered = [t for t in record.tracks if t.answer is not None]
    assert answered and record.answer is not None
    assert sorted(record.details["confidence"]) == sorted(str(t.track_id) for t in answered)
    assert all(len(s.token_confidence) == s.tokens for t in record.tracks for s in t.steps)


async def test_an_offloaded_span_is_written_by_the_big_model_and_closed_by_real_probes(vllm_servers):
    prompts = load_prompt_set("default")
    async with aiohttp.ClientSession() as session:
        # The track's handles: its seed, and token logprobs as DeepConf asks for them.
        models = {
            role: Model(
                role, ModelClient(session, server.model, [server.url]), load_chat_format(server.model)
            ).for_track(seed=4, token_logprobs=5)
            for role, server in (("big", vllm_servers.big), ("small", vllm_servers.small))
        }
        spec = POLICIES["spec_reason"]
        policy = spec.start(spec.settings(), models, prompts, ReasoningConfig())
        config = ReasoningConfig(token_budget=200, max_step_tokens=200, step_delimiter="")
        messages = (Message("user", prompts.render_problem("What is 6 * 7?")),)
        reasoning = "Let me compute. <bigmodel>"
        ctx = StepContext(models, messages, reasoning, (reasoning,), 1, config, prompts, "What is 6 * 7?")
        outcome = await policy.step(ctx)
    step = outcome.step
    # Every kept token of the span (a probe's cut included) has its confidence.
    assert len(step.token_confidence) == len(step.token_logprob) == step.tokens
    assert step.writer == "big" and step.detail["ended"] in ("probe", "cap", "eos", "budget")
    span_most = (PROBED_CHUNKS + 1) * SPAN_CHUNK_TOKENS  # SplitReason closes a span on its 9th chunk
    assert 0 < step.tokens <= min(span_most, 200) and step.usage["big"].requests == step.detail["chunks"]
    if step.detail["ended"] in ("probe", "cap"):
        assert step.text.endswith(CLOSE_TAG) and outcome.ending == "delimiter"
    if step.detail["chunks"] > 1 or step.detail["ended"] == "probe":
        # every chunk but an EOS one was probed, one 8-token request per token prefix, at once
        assert step.usage["small"].requests >= 1
        assert step.usage["small"].completion_tokens <= 8 * step.usage["small"].requests
