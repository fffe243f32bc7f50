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
from engine.logging import LOG_FILE
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies.vote import VoteSettings
from engine.reasoning.track import track_messages
from engine.run.config import DataConfig, ModelConfig, RunConfig
from engine.run.execute import execute
from engine.run.store import MANIFEST_FILE, RECORDS_FILE, read_records
from engine.serving.chat import load_tokenizer
from evaluators.viewer.build import VIEWER_FILE

FINISH_REASONS = {"answer", "think_end", "eos", "repeat", "budget"}
SHORT = dict(token_budget=96, max_step_tokens=24, seed=1)


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
    # The screen says what is happening, and shows no info event: those are in the run folder's log.
    said = result.stderr.splitlines()
    assert said[0].startswith("spectra's toy demo: spec (PRM judge), spec (big judge), big model alone, on the same")
    assert said[1].startswith("starting vLLM servers for the ") and said[2].startswith("servers ready in ")
    assert "run_start" not in result.stderr
    log = (tmp_path / "demo" / LOG_FILE).read_text()
    assert log.count("server_warmed") == 3 and log.count("run_start") == 3
    server_logs = sorted((tmp_path / "demo" / "server-logs").iterdir())
    assert [p.name for p in server_logs] == ["big.log", "prm.log", "small.log"]
    # the float32 toy models as they are measured (vLLM's dtype auto would serve them in bfloat16)
    assert all("dtype=torch.float32" in p.read_text() for p in server_logs)

    # stdout: the table, the run folders, one line per method against the big model alone
    table, folders, comparison = (block.splitlines() for block in result.stdout.rstrip("\n").split("\n\n"))
    folder_of = {"spec (PRM judge)": "demo", "spec (big judge)": "demo-big_judge", "big model alone": "demo-big_alone"}
    runs = {name: read_records(tmp_path / folder / RECORDS_FILE).records for name, folder in folder_of.items()}
    assert table[0].split()[:3] == ["method", "problem", "rep"] and len(table) == 1 + len(runs)
    for row, (name, (record,)) in zip(table[1:], runs.items(), strict=True):
        assert row.startswith(name) and row[len(name) :].split()[0] == record.problem_id == "0"
        assert row[len(name) :].split()[2:4] == [str(record.answer), record.reference_answer]
    (prm,), (judge,), (alone,) = runs.values()
    assert prm.tracks[0].policy == judge.tracks[0].policy == "spec" and set(alone.usage) == {"big"}
    assert "prm" in prm.usage and "prm" not in judge.usage, "the PRM judged the first run only"
    manifest = json.loads((tmp_path / "demo" / MANIFEST_FILE).read_text())
    assert "big-costly" in manifest["config"]["models"]["big"]["model"]
    for folder in folder_of.values():
        records, viewer = folders.pop(0), folders.pop(0)
        assert records == f"records: {tmp_path / folder / RECORDS_FILE} (1 new, 0 already done)"
        assert viewer == f"viewer: {tmp_path / folder / VIEWER_FILE} (open it in a browser)"
    assert folders == []
    seconds_alone = alone.latency_s
    for line, (name, (record,)) in zip(comparison, runs.items(), strict=True):
        right = int(is_correct(record.answer, record.reference_answer))
        figures = (
            f"{right}/1 right, {record.usage['big'].completion_tokens if 'big' in record.usage else 0} big-model "
            "tokens a problem, "
            f"{record.latency_s:.2f} s a problem"
        )
        assert line.startswith(f"{name}:") and figures in line
        if record is not alone:
            assert line.endswith(f", {record.latency_s / seconds_alone:.2f}x the big model's latency")

    # The run's viewer, written into its folder, shows the real trace step by step, by writer.
    viewer = tmp_path / "demo" / VIEWER_FILE
    with chromium() as browser:
        page = watched_page(browser)
        page.open(viewer, "run=0&p=0")
        steps = page.page.locator(".track .step")
        assert [steps.nth(i).get_attribute("data-writer") for i in range(steps.count())] == [
            s.writer for s in prm.tracks[0].steps
        ]
        # the kept text of each step (a rewritten step shows its rejected draft beside it)
        kept = page.page.locator(".track .step .text:not(.draft-text)").all_text_contents()
        assert kept == [s.text for s in prm.tracks[0].steps]
        page.shot("real-demo-run")
        assert page.errors == [] and page.requests == []
