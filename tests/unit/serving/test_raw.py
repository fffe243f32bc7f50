"""SpecLRM's runners send its raw strings (`--prompt_format raw`, their default): every request of
base, scale, spec_scale and spec_scale_methods, run on the scripted fake server, is compared with the
f-string SpecLRM builds for it (tests/fixtures/seed_prompts.py), as text and as the token ids vLLM
makes of it under the request's `add_special_tokens`: R1-Distill's tokenizer (the small model) puts
its BOS first by default, as `LLM.generate` sends it; QwQ's (the big model) adds nothing. Both
tokenizers carry their real chat templates, which the raw renderer must not use.

The role and method texts are spectra's own wording (issue 07); the layout around them is SpecLRM's.
RSD's runner sends its ChatML prompt as text with the steps straight after it, and its PRM reads
the PRM's own chat template: each request compared with RSD's f-strings.
"""

import functools
import json

import pytest

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.errors import UsageError
from engine.reasoning.judges.prm import QWEN_PRM_SYSTEM
from engine.run.configure import build_config, config_of_command
from engine.run.execute import execute
from engine.run.runner_plans import RUNNERS
from engine.run.scheduler import Scheduler, WorkItem
from engine.run.store import RECORDS_FILE, read_records
from engine.serving.chat import Message
from engine.serving.client import ModelClient
from engine.serving.models import Model
from engine.serving.raw import RawFormat
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.fixtures import seed_prompts as seed
from tests.fixtures.chat_templates import template_text
from tests.fixtures.qwen2_vocab import R1_BOS_ID, qwen2_tokenizer, r1_distill_tokenizer
from tests.unit.conftest import FAST_LIMITS

PROBLEM = Problem(id="p1", problem="What is 6 * 7?", answer="42")
PROMPTS = load_prompt_set("default")
FIRST, REWRITE, LAST = "Six sevens make 40.", "Six sevens make 42.", "So \\boxed{42}."


@functools.cache
def tokenizers():
    """(small: R1-Distill's, big: QwQ's), each with its model's own chat template."""
    small, big = r1_distill_tokenizer(), qwen2_tokenizer()
    small.chat_template = template_text("deepseek-ai-DeepSeek-R1-Distill-Qwen-32B.jinja")
    big.chat_template = template_text("Qwen-QwQ-32B.jinja")
    return {"small": small, "big": big}


def writer(body):
    """A one-request track's whole reasoning, or SpecReason's steps: a first step the judge rejects."""
    if body["max_tokens"] > 512:
        return Reply(text=f"{FIRST}\n\n{LAST}")
    return Reply(text=LAST if "<think>" in body["prompt"] else FIRST, stop_reason="\n\n")


def judge(body):
    rating = "2" if body["prompt"].endswith(f"<think>{FIRST}\n\n\n{seed.SCORE_REQUEST}\n{seed.SCORE_PREFIX}") else "9"
    return Reply(text=rating, top_logprobs=[{rating: -0.1}])


def rewrite(body):
    return Reply(text=REWRITE, stop_reason="\n\n")


BOTH = {"big_model": "big", "small_model": "small"}


async def run_runner(session, runner: str, flags: dict, selection: str = "B,E,F"):
    """One problem through runner `runner`'s config (`flags` name its models), both models on one
    fake server; the requests as (role, purpose, body)."""
    config = build_config(RUNNERS[runner], flags)
    assert config.prompt_format == "raw", "SpecLRM's runners default to its raw strings"
    scripts = {"score": judge, "select": [Reply(text=selection)], "rewrite": rewrite}
    async with FakeOpenAIServer(writer, by_purpose=scripts) as server:
        models = {
            role: Model(role, ModelClient(session, role, [server.url], FAST_LIMITS), RawFormat(tok, thinking=True))
            for role, tok in tokenizers().items()
        }
        records = []
        scheduler = Scheduler(config, models, PROMPTS, run_id="r", dataset="d", on_record=records.append)
        await scheduler.run([WorkItem(PROBLEM, 0)])
    assert records[0].answer == "42"
    return [(body["model"], purpose, body) for body, purpose in zip(server.requests, server.purposes, strict=True)]


def assert_sent(requests, expected: list[tuple[str, str, str]]):
    """The requests are `expected` ((role, purpose, SpecLRM's string) in any order), as text and as the
    token ids of the string under the role's tokenizer's defaults (its BOS for R1-Distill)."""
    sent = sorted((role, purpose, body["prompt"]) for role, purpose, body in requests)
    assert sent == sorted(expected)
    for role, _, body in requests:
        tokenizer = tokenizers()[role]
        ids = tokenizer(body["prompt"], add_special_tokens=body["add_special_tokens"])["input_ids"]
        assert ids == tokenizer(body["prompt"])["input_ids"]
        assert (ids[0] == R1_BOS_ID) == (role == "small")


def spec_track(message: str) -> list[tuple[str, str, str]]:
    """A spec track's requests: the rejected first draft, its rewrite, the accepted last draft."""
    return [
        ("small", "draft", seed.speclrm_step_prompt(message, [])),
        ("big", "score", seed.speclrm_score_prompt(message, [FIRST])),
        ("big", "rewrite", seed.speclrm_step_prompt(message, [])),
        ("small", "draft", seed.speclrm_step_prompt(message, [REWRITE])),
        ("big", "score", seed.speclrm_score_prompt(message, [REWRITE, LAST])),
    ]


async def test_base_sends_the_message_alone(session):
    requests = await run_runner(session, "base", {"model": "small", "small_model": "small"})
    assert_sent(requests, [("small", "step", seed.first_user_message(PROBLEM.problem))])


async def test_scale_with_roles_sends_each_role_before_the_message(session):
    requests = await run_runner(session, "scale", {"model": "big", "big_model": "big", "use_role_prompts": True})
    roles = PROMPTS.require_roles().values()
    messages = [seed.speclrm_role_message(f"\n{role}\n", PROBLEM.problem) for role in roles]
    assert_sent(requests, [("big", "step", message) for message in messages])


async def test_spec_scale_sends_steps_scores_and_rewrites_as_speclrm(session):
    requests = await run_runner(session, "spec_scale", BOTH)
    roles = PROMPTS.require_roles().values()
    messages = [seed.speclrm_role_message(f"\n{role}\n", PROBLEM.problem) for role in roles]
    assert_sent(requests, [request for message in messages for request in spec_track(message)])


async def test_spec_scale_methods_selects_and_puts_each_tip_where_speclrm_does(session):
    requests = await run_runner(session, "spec_scale_methods", BOTH, selection="B, M")
    methods = list(PROMPTS.require_methods().values())
    listing = "\n".join(f"{m.code}. {m.description}" for m in methods)
    choose = (
        "\nYou will be given a math problem. First, read the list of possible solution strategies below (A–M), "
        f"then select strategies that are most promising for solving the problem.\n\n{listing}\n\n"
        "If you are uncertain about which strategy to choose, you may select option M multiple times.\n"
    )
    select = seed.speclrm_select_prompt(choose, PROBLEM.problem, 3, "B,E,F")
    # B, then M twice (two codes for three tracks: filled with the unknown choice, whose tip is "None")
    tips = [methods[1].instruction, seed.SPECLRM_UNKNOWN_TIP, seed.SPECLRM_UNKNOWN_TIP]
    messages = [seed.SPECLRM_METHOD_MESSAGE.format(method_prompt=tip, problem=PROBLEM.problem) for tip in tips]
    # SpecLRM's score and rewrite prompts take the method of the last track in its loop (a variable
    # that leaks out of the loop); spectra's take each track's own (README).
    expected = [("big", "select", select), *[request for message in messages for request in spec_track(message)]]
    assert_sent(requests, expected)


def test_a_prompt_sets_raw_separator_joins_the_turns_and_the_text_the_model_continues(tmp_path):
    assert PROMPTS.templates.raw_separator == "\n"  # SpecLRM's, the default
    (tmp_path / "templates.yaml").write_text('problem: "<open>{problem}<close>"\nraw_separator: ""\n')
    joined = RawFormat(
        qwen2_tokenizer(), thinking=False, separator=load_prompt_set(str(tmp_path)).templates.raw_separator
    )
    messages = (Message("user", "<open>Q<close>"),)
    assert (joined.continuation(messages, ""), joined.continuation(messages, "a\n\n")) == (
        "<open>Q<close>",
        "<open>Q<close>a\n\n",
    )
    assert joined.render([Message("user", "x"), Message("user", "y")], "z") == "xyz"


def test_the_gpqa_method_message_is_speclrms():
    gpqa = Problem(
        id="g", problem="Which gas is inert?", answer="A", choices=("Argon", "Oxygen", "Fluorine", "Chlorine")
    )
    rendered = PROMPTS.render_problem(gpqa.problem, gpqa.choices, method="Think about noble gases.")
    a, b, c, d = gpqa.choices
    expected = seed.SPECLRM_GPQA_METHOD_MESSAGE.format(
        method_prompt="Think about noble gases.", problem=gpqa.problem, ans_a=a, ans_b=b, ans_c=c, ans_d=d
    )
    assert rendered == expected


@pytest.mark.parametrize("runner", ["base", "scale", "spec_scale", "spec_scale_methods"])
def test_the_chat_template_stays_a_named_choice(runner):
    models = BOTH if RUNNERS[runner].models == "both" else {"model": "big", "big_model": "big"}
    assert build_config(RUNNERS[runner], {**models, "prompt_format": "chat"}).prompt_format == "chat"


def test_other_runners_render_with_the_chat_template_and_rast_refuses_a_format():
    assert build_config(RUNNERS["spec"], BOTH).prompt_format == "chat"
    with pytest.raises(UsageError, match="--prompt_format changes nothing with strategy rast"):
        build_config(RUNNERS["rast"], {"prompt_format": "raw", "base_model": "b"})


def qwen_folder(tmp_path, name: str, template: str, architecture: str | None = None) -> str:
    """A model folder holding Qwen2's tokenizer with `template` (and a config naming `architecture`)."""
    folder = tmp_path / name
    tokenizer = qwen2_tokenizer()
    tokenizer.chat_template = template_text(template)
    tokenizer.save_pretrained(folder)
    if architecture:
        (folder / "config.json").write_text(json.dumps({"model_type": "qwen2", "architectures": [architecture]}))
    return str(folder)


def qwen_prm_input(problem: str, steps: list[str]) -> str:
    """Qwen2.5-Math-PRM's input (search-and-learn's): its system line, the problem, each step and its tag."""
    head = f"<|im_start|>system\n{QWEN_PRM_SYSTEM}<|im_end|>\n<|im_start|>user\n{problem}<|im_end|>\n"
    return head + "<|im_start|>assistant\n" + "".join(f"{step}<extra_0>" for step in steps)


async def test_rsd_sends_its_prompt_and_steps_as_text_and_its_prm_reads_the_question_and_steps(tmp_path):
    # The PRM rejects the first draft (the big model writes the step) and keeps the second, which ends
    # the sequence: RSD ends the trace there.
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"id": "p1", "problem": PROBLEM.problem, "answer": "42"}) + "\n")
    writer = qwen_folder(tmp_path, "writer", "Qwen-Qwen2.5-7B-Instruct.jinja")
    prm_model = qwen_folder(tmp_path, "prm", "Qwen-Qwen2.5-7B-Instruct.jinja", "Qwen2ForProcessRewardModel")

    def rate(body):
        last = 0.2 if body["input"].endswith(f"{FIRST}<extra_0>") else 0.9
        return [[0.5, 0.5]] * (body["input"].count("<extra_0>") - 1) + [[1 - last, last]]

    drafts = [Reply(text=FIRST, stop_reason="\n\n"), Reply(text=LAST, stop_reason=None)]
    async with (
        FakeOpenAIServer(by_purpose={"draft": drafts}) as small,
        FakeOpenAIServer(by_purpose={"rewrite": [Reply(text=REWRITE, stop_reason="\n\n")]}) as big,
        FakeOpenAIServer(pooler=rate, served_model=prm_model) as prm,
    ):
        argv = ["--dataset_name", str(problems), "--output_dir", str(tmp_path / "run")]
        for role, server, model in (("small", small, writer), ("big", big, writer), ("prm", prm, prm_model)):
            argv += [f"--{role}_model", server.served_model, f"--{role}_url", server.url, f"--{role}_tokenizer", model]
        await execute(config_of_command("rsd", argv), progress=False)
    question = PROBLEM.problem
    assert [body["prompt"] for body in small.requests] == [
        seed.rsd_step_prompt(question, []),
        seed.rsd_step_prompt(question, [REWRITE]),
    ]
    assert [body["prompt"] for body in big.requests] == [seed.rsd_step_prompt(question, [])]
    for body in small.requests + big.requests:
        assert {key: body[key] for key in seed.RSD_STEP_PARAMS} == seed.RSD_STEP_PARAMS
        assert "seed" not in body and body.get("add_special_tokens", True)
    readings = [seed.rsd_prm_reading(question, [], FIRST), seed.rsd_prm_reading(question, [REWRITE], LAST)]
    assert [body["input"] for body in prm.pooling_requests] == [qwen_prm_input(*r) for r in readings]
    (record,) = read_records(tmp_path / "run" / RECORDS_FILE).records
    (track,) = record.tracks
    assert [(s.text, s.writer, s.outcome) for s in track.steps] == [
        (REWRITE, "big", "rewritten"),
        (LAST, "small", "accepted"),
    ]
    assert (track.finish_reason, record.answer) == ("eos", "42")
