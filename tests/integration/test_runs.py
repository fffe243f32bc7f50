"""Whole runs on the tiny vLLM-CPU models: records complete and consistent, resumes, the CLI.

Random weights write random text, so these check protocol and bookkeeping, never content."""

import dataclasses
import json
import subprocess
import sys

from benchmarks.browser import chromium, watched_page
from engine.data.answers import is_correct
from engine.data.problems import demo_problems
from engine.data.prompts import load_prompt_set
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies.vote import VoteSettings
from engine.reasoning.track import track_messages
from engine.run.config import DataConfig, ModelConfig, RunConfig
from engine.run.execute import execute
from engine.run.store import MANIFEST_FILE, RECORDS_FILE, read_records
from engine.serving.chat import load_tokenizer
from evaluators.viewer.build import VIEWER_FILE

FINISH_REASONS = {"answer", "think_end", "eos", "repeat", "budget"}
SHORT = dict(token_budget=96, max_step_tokens=24, answer_max_tokens=16, seed=1)


def config_for(
    servers, tmp_path, runner="spec", reasoning=None, strategy_settings=None, prompt_set="default", policy="spec"
):
    return RunConfig(
        runner=runner,
        output_dir=str(tmp_path / runner),
        models={
            "big": ModelConfig(servers.big.model, (servers.big.url,)),
            "small": ModelConfig(servers.small.model, (servers.small.url,)),
        },
        policy=policy,
        strategy_settings=strategy_settings,
        reasoning=reasoning or ReasoningConfig(**SHORT),
        data=DataConfig(dataset_name="demo", problem_id="0-1"),
        prompt_set=prompt_set,
    )


def check_track_bookkeeping(track, config):
    assert track.finish_reason in FINISH_REASONS, track.error
    assert track.steps, "a track that finished has steps"
    assert track.thinking_tokens == sum(s.tokens for s in track.steps)
    for model, usage in track.usage.items():
        from_steps = sum(s.usage[model].completion_tokens for s in track.steps if model in s.usage)
        answer = track.answer_tokens if model == config.reasoning.answer_model else 0
        assert usage.completion_tokens == from_steps + answer
    for step in track.steps:
        assert step.writer in ("small", "big")
        if config.policy == "spec":
            assert step.score is not None and 0 <= step.score <= 9
            assert isinstance(step.score_distribution, dict)
            rewritten = step.score < config.policy_settings.score_threshold
            assert (step.draft is not None) == rewritten
            assert step.writer == ("big" if rewritten else "small")
            assert step.usage["big"].requests == (2 if rewritten else 1)


def problem_usage_is_the_sum_of_tracks(record):
    for model, usage in record.usage.items():
        tracks = sum(t.usage[model].completion_tokens for t in record.tracks if model in t.usage)
        selection = (record.method_selection or {}).get("usage", {}).get(model, {}).get("completion_tokens", 0)
        assert usage.completion_tokens == tracks + selection


async def test_spec_run_writes_complete_consistent_records_and_resumes(vllm_servers, tmp_path):
    config = config_for(vllm_servers, tmp_path)
    outcome = await execute(config, progress=False)
    assert [(r.problem_id, r.repeat_id) for r in outcome.records] == [("0", 0), ("1", 0)]
    for record in outcome.records:
        (track,) = record.tracks
        check_track_bookkeeping(track, config)
        problem_usage_is_the_sum_of_tracks(record)
        assert record.reference_answer is not None and record.config_digest == config.digest()
    manifest = json.loads((tmp_path / "spec" / "manifest.json").read_text())
    assert manifest["models"]["big"] == vllm_servers.big.model and "vllm-cpu" in manifest["versions"]
    # the version the server itself reports (GET /version), and how the run was loaded
    assert manifest["servers"]["big"]["vllm_version"] == manifest["versions"]["vllm-cpu"]
    assert manifest["concurrency"]["replicas"] == {"big": 1, "small": 1}
    for record in outcome.records:
        # SpecReason's loop: no answer request; every step but the last went on
        assert record.tracks[0].answer_tokens == 0 and record.multiple_choice is False

    again = await execute(config, progress=False)
    assert again.new == 0 and again.resumed == 2
    assert len(read_records(tmp_path / "spec" / RECORDS_FILE).records) == 2


async def test_big_only_baseline_uses_only_the_big_model(vllm_servers, tmp_path):
    # runners.base's default: SpecLRM's raw message, no chat template, the tokenizer's special tokens
    config = dataclasses.replace(config_for(vllm_servers, tmp_path, runner="base", policy="big"), prompt_format="raw")
    outcome = await execute(config, progress=False)
    tokenizer = load_tokenizer(vllm_servers.big.model)
    problems = {p.id: p for p in demo_problems()}
    for record in outcome.records:
        assert set(record.usage) == {"big"}
        check_track_bookkeeping(record.tracks[0], config)
        # SpecLRM's base_test: the whole reasoning in one request of at most the token budget
        (step,) = record.tracks[0].steps
        assert record.usage["big"].requests == 1 and step.tokens <= config.reasoning.token_budget
        # vLLM read the message alone, as LLM.generate tokenizes it (a chat template adds role tokens)
        (message,) = track_messages(problems[record.problem_id], load_prompt_set("default"))
        assert step.costs[0].prompt_tokens == len(tokenizer(message.content)["input_ids"])


async def test_spec_scale_methods_selects_methods_and_votes(vllm_servers, tmp_path):
    config = config_for(
        vllm_servers,
        tmp_path,
        runner="spec_scale_methods",
        prompt_set="methods",
        strategy_settings=VoteSettings(tracks=3, method_num=3, early_stop=True),
    )
    outcome = await execute(config, progress=False)
    for record in outcome.records:
        selection = record.method_selection
        assert len(selection["methods"]) == 3 and isinstance(selection["fallback"], bool)
        assert selection["usage"]["big"]["requests"] == 1
        assert [t.method for t in record.tracks] == selection["methods"]
        for track in record.tracks:
            if track.track_id in record.cancelled_tracks:
                assert track.finish_reason == "cancelled"
            else:
                check_track_bookkeeping(track, config)
        answered = [t.answer for t in record.tracks if t.answer is not None]
        assert sum(record.votes.values()) == len(answered)
        assert (record.answer is None) == (not answered)
        problem_usage_is_the_sum_of_tracks(record)


def test_runner_command_line_runs_and_prints_a_summary(vllm_servers, tmp_path):
    out = tmp_path / "cli"
    command = [
        sys.executable,
        "-m",
        "runners.spec_scale",
        "--dataset-name",
        "demo",
        "--problem-id",
        "2",
        "--tracks",
        "2",
        "--use_role_prompts",
        "--prompt-set",
        "roles",
        "--big_model",
        vllm_servers.big.model,
        "--big_url",
        vllm_servers.big.url,
        "--small_model",
        vllm_servers.small.model,
        "--small_url",
        vllm_servers.small.url,
        "--token_budget",
        "64",
        "--max_step_tokens",
        "16",
        "--answer_max_tokens",
        "8",
        "--output_dir",
        str(out),
        "--no_progress",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.splitlines()[0].startswith("problem")
    (record,) = read_records(out / RECORDS_FILE).records
    assert [t.role for t in record.tracks] == ["careful_algebraist", "skeptical_verifier"]


def test_the_demo_command_starts_its_own_servers_and_prints_a_summary(toy_models, tmp_path):
    command = [
        sys.executable,
        "-m",
        "runners.spectra",
        "run",
        "--toy_models_dir",
        str(toy_models.big.parent),
        "--problem_id",
        "0",
        "--output_dir",
        str(tmp_path / "demo"),
        "--no_progress",
    ]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    header, row, totals, records_line, viewer_line, comparison = result.stdout.splitlines()
    assert header.split()[:5] == ["problem", "rep", "answer", "ref", "ok"] and row.split()[0] == "0"
    (record,) = read_records(tmp_path / "demo" / RECORDS_FILE).records
    assert record.dataset == "toy" and record.tracks[0].policy == "spec"
    assert (
        record.usage["big"].requests > 0
        and "big-costly"
        in json.loads((tmp_path / "demo" / MANIFEST_FILE).read_text())["config"]["models"]["big"]["model"]
    )
    assert row.split()[2:4] == [str(record.answer), record.reference_answer]
    assert totals.startswith("accuracy ") and "big model's share of tokens" in totals
    assert "1 new, 0 already done" in records_line
    # the big model alone on the same problem, and one line comparing the two
    (alone,) = read_records(tmp_path / "demo-big_alone" / RECORDS_FILE).records
    assert alone.problem_id == record.problem_id and set(alone.usage) == {"big"}
    right = int(is_correct(record.answer, record.reference_answer))
    assert comparison.startswith(f"spec: {right}/1 right, ") and "x the big model's latency" in comparison
    assert comparison.endswith(f"big alone {int(is_correct(alone.answer, alone.reference_answer))}/1 right")
    logs = sorted(p.name for p in (tmp_path / "demo" / "server-logs").iterdir())
    assert logs == ["big.log", "small.log"]
    # The run's viewer, written into its folder, shows the real trace step by step, by writer.
    viewer = tmp_path / "demo" / VIEWER_FILE
    assert viewer_line == f"viewer: {viewer} (open it in a browser)"
    with chromium() as browser:
        page = watched_page(browser)
        page.open(viewer, "run=0&p=0")
        steps = page.page.locator(".track .step")
        assert [steps.nth(i).get_attribute("data-writer") for i in range(steps.count())] == [
            s.writer for s in record.tracks[0].steps
        ]
        assert page.page.locator(".track .step .text").all_text_contents() == [s.text for s in record.tracks[0].steps]
        page.shot("real-demo-run")
        assert page.errors == [] and page.requests == []
