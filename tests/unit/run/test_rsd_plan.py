"""runners.rsd: RSD's flag names and defaults (main_online.py) on policy spec with a PRM judge, its
translations and refusals, and a whole run on scripted fake servers."""

import json

import pytest

from engine.run.configure import config_of_command
from engine.run.store import RECORDS_FILE, read_records
from runners.rsd import main
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.paths import REPO_ROOT
from tests.threaded_server import served_in_a_thread
from tests.unit.run.runner_commands import config_of
from tests.unit.run.test_refusals import BOTH, NOWHERE, refusal

PRM = ["--prm_model", "Qwen/Qwen2.5-Math-PRM-7B", "--prm_url", NOWHERE]
SERVED = [*BOTH, *PRM]
TOY_TOKENIZER = str(REPO_ROOT / "engine" / "toy" / "weights" / "tokenizer")


def test_rsd_runs_spec_judged_by_a_prm_with_rsds_defaults():
    config = config_of("rsd", *SERVED)
    assert (config.runner, config.policy, config.strategy) == ("rsd", "spec", "vote")
    assert config.strategy_settings.tracks == 1
    settings, reasoning = config.policy_settings, config.reasoning
    assert (settings.scorer, settings.prm_threshold, settings.drafts_per_step) == ("prm", 0.7, 1)
    assert (reasoning.temperature, reasoning.top_p, reasoning.seed) == (0.0, 1.0, None)
    assert (reasoning.max_step_tokens, reasoning.token_budget, reasoning.step_delimiter) == (2048, 2048, "\n\n")
    assert (reasoning.max_steps, reasoning.stop_rule, reasoning.answer_phase) == (100, "rsd", False)
    assert (config.prompt_format, config.prompt_set, config.thinking) == ("raw", "rsd", "off")
    assert set(config.models) == {"big", "small", "prm"}


def test_rsds_flags_translate_to_spectras():
    config = config_of("rsd", *SERVED, "--step_word", "\\n", "--max_tokens_per_call", "4096", "--max_steps", "7")
    reasoning = config.reasoning
    assert (reasoning.step_delimiter, reasoning.max_step_tokens, reasoning.token_budget) == ("\n", 4096, 4096)
    assert reasoning.max_steps == 7
    same = config_of("rsd", *SERVED, "--step_word", "\\n", "--step_delimiter", "\\n", "--prm_threshold", "0.5")
    assert same.reasoning.step_delimiter == "\n" and same.policy_settings.prm_threshold == 0.5
    # spectra's own names set each half of --max_tokens_per_call apart
    apart = config_of("rsd", *SERVED, "--max_step_tokens", "512", "--token_budget", "8192").reasoning
    assert (apart.max_step_tokens, apart.token_budget) == (512, 8192)


def test_rsd_on_the_toy_models_sends_them_the_chat_turns_they_were_taught(tmp_path):
    config = config_of_command("rsd", ["--toy_models_dir", str(tmp_path)])
    assert (config.prompt_format, config.prompt_set, config.thinking) == ("chat", "default", "auto")
    assert (config.reasoning.stop_rule, config.policy_settings.scorer) == ("rsd", "prm") and "prm" in config.models


def test_rendered_with_chat_templates_rsds_raw_prompt_set_and_thinking_give_way_unless_given():
    # RSD's set is its ChatML prompt as text: a chat template around it would wrap it twice
    chat = config_of("rsd", *SERVED, "--prompt_format", "chat")
    assert (chat.prompt_set, chat.thinking) == ("default", "auto")
    given = config_of("rsd", *SERVED, "--prompt_format", "chat", "--prompt_set", "clean", "--thinking", "off")
    assert (given.prompt_set, given.thinking) == ("clean", "off")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (
            BOTH,
            "runners.rsd needs --prm_model: RSD's PRM, Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B, is served by "
            "Skywork's plugin for vLLM 0.6.4 (a value head stock vLLM does not load): give a PRM stock vLLM "
            "serves, e.g. --prm_model Qwen/Qwen2.5-Math-PRM-7B",
        ),
        (
            [*BOTH, "--prm_model", "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B", "--prm_url", NOWHERE],
            "--prm_model Skywork/Skywork-o1-Open-PRM-Qwen-2.5-7B is served by Skywork's plugin for vLLM 0.6.4",
        ),
        ([*SERVED, "--scorer", "judge"], "runners.rsd judges each draft with a PRM (RSD); for the big model's 0-9"),
        (
            [*SERVED, "--max_tokens_per_call", "4096", "--token_budget", "100"],
            "--max_tokens_per_call is RSD's name for --token_budget: give one of them",
        ),
        ([*SERVED, "--step_word", "\\n", "--step_delimiter", "x"], "--step_word is RSD's name for --step_delimiter"),
        ([*SERVED, "--prm_threshold", "1.5"], "--prm_threshold must be between 0 and 1, not 1.5"),
        ([*SERVED, "--drafts_per_step", "2"], "--drafts_per_step 2 at --temperature 0 drafts the same step 2 times"),
        ([*SERVED, "--model", "big"], "--model has no effect in rsd"),
    ],
)
def test_bad_rsd_flags_give_one_line_and_exit_2(capsys, tmp_path, argv, message):
    assert message in refusal(capsys, tmp_path, "rsd", *argv)


@pytest.mark.parametrize(
    ("flag", "instead"), [("--step_word", "--step_delimiter"), ("--max_tokens_per_call", "--max_step_tokens and")]
)
def test_rsds_flags_are_refused_by_other_runners(capsys, tmp_path, flag, instead):
    line = refusal(capsys, tmp_path, "spec", *BOTH, flag, "8")
    assert f"{flag} is a flag of runners.rsd; with runner spec use {instead}" in line


def test_rsd_runs_on_fake_servers_and_records_who_wrote_each_step_and_what_the_prm_said(tmp_path, capsys):
    # Step 0: the PRM rates the draft 0.5 (under 0.7), the big model writes the step. Step 1: the
    # draft ends the sequence and is kept at 0.8, which ends the trace (RSD's rule).
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"id": "a", "problem": "What is 6 * 7?", "answer": "42"}) + "\n")
    prm_model = tmp_path / "prm"
    prm_model.mkdir()
    (prm_model / "config.json").write_text('{"model_type": "qwen2", "architectures": ["Qwen2ForProcessRewardModel"]}')
    rewards = iter([0.5, 0.8])

    def rate(body):
        if "<extra_0>" not in body["input"]:  # the warm-up before the first problem
            return [[0.5, 0.5]]
        last = next(rewards)
        return [[0.5, 0.5]] * (body["input"].count("<extra_0>") - 1) + [[1 - last, last]]

    drafts = [Reply(text="Six sevens make 40.", stop_reason="\n\n"), Reply(text="So \\boxed{42}.", stop_reason=None)]
    warm_up = [Reply(text="ok")]
    small = FakeOpenAIServer(by_purpose={"draft": drafts, "warm_up": warm_up})
    big = FakeOpenAIServer(
        by_purpose={"rewrite": [Reply(text="Six sevens make 42.", stop_reason="\n\n")], "warm_up": list(warm_up)}
    )
    prm = FakeOpenAIServer(pooler=rate, served_model=str(prm_model))
    out = tmp_path / "run"
    with served_in_a_thread(small) as s, served_in_a_thread(big) as b, served_in_a_thread(prm) as p:
        argv = ["--dataset_name", str(problems), "--output_dir", str(out), "--no_progress"]
        for role, url, model in (("small", s, "fake-model"), ("big", b, "fake-model"), ("prm", p, str(prm_model))):
            argv += [f"--{role}_model", model, f"--{role}_url", url, f"--{role}_tokenizer", TOY_TOKENIZER]
        code = main(argv)
    assert code == 0, capsys.readouterr().err
    (record,) = read_records(out / RECORDS_FILE).records
    (track,) = record.tracks
    assert [(st.writer, st.outcome, st.judge, st.score) for st in track.steps] == [
        ("big", "rewritten", "prm", 0.5),
        ("small", "accepted", "prm", 0.8),
    ]
    assert track.steps[0].draft == "Six sevens make 40." and track.steps[1].ending == "eos"
    assert (track.finish_reason, record.answer, record.runner) == ("eos", "42", "rsd")
    # two drafts, one rewrite, two PRM scores; each step's PRM entry carries the judge and its value
    assert [record.usage[role].requests for role in ("small", "big", "prm")] == [2, 1, 2]
    judged = [c for st in track.steps for c in st.costs if c.purpose == "prm"]
    assert [(c.judge, c.verdict) for c in judged] == [("prm", 0.5), ("prm", 0.8)]
    manifest = json.loads((out / "manifest.json").read_text())
    assert manifest["runner"] == "rsd" and manifest["config"]["reasoning"]["stop_rule"] == "rsd"
    assert len(small.requests_for("draft")) == 2 and len(big.requests_for("rewrite")) == 1
    assert len(prm.pooling_requests) == 3  # the warm-up, then two scores
