"""The requests a spec track sends, compared with what the seeds send (tests/fixtures/seed_prompts.py).

SpecReason sends chat completions; vLLM renders them with the model's chat template. spectra renders
the same text itself for /v1/completions, so the expected prompt here is the seed's chat messages
rendered by the tokenizer's `apply_chat_template` exactly as vLLM does it (`add_generation_prompt`
for the first step, `continue_final_message` after it), and compared with what the fake server got.
"""

import math

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.reasoning.policies.single import SingleModelSettings
from engine.reasoning.settings import ReasoningConfig
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.fixtures import seed_prompts as seed
from tests.unit.conftest import chatml_tokenizer, run_one_track

PROBLEM = Problem(id="p1", problem="What is 6 * 7?", answer="42")
GPQA = Problem(id="g1", problem="Which gas is inert?", answer="B", choices=("Oxygen", "Argon", "Chlorine", "Fluorine"))


def seed_chat(messages: list[tuple[str, str]], *, first_step: bool = False) -> str:
    """What vLLM renders from the seed's chat request."""
    conversation = [{"role": role, "content": content} for role, content in messages]
    if first_step:
        return chatml_tokenizer().apply_chat_template(conversation, tokenize=False, add_generation_prompt=True)
    return chatml_tokenizer().apply_chat_template(conversation, tokenize=False, continue_final_message=True)


def assistant_turn(steps: list[str]) -> str:
    return seed.THINK_OPEN + seed.STEP_JOIN.join(steps) + seed.STEP_JOIN


def score_reply(digit: str) -> Reply:
    return Reply(text=digit, top_logprobs=[{digit: math.log(0.9), "0": math.log(0.1)}])


async def run_spec(make_models, problem, small_steps, scores, big_steps=()):
    small_replies = [Reply(text=t, stop_reason="\n\n") for t in small_steps]
    big_replies = {
        "score": [score_reply(d) for d in scores],
        "rewrite": [Reply(text=t, stop_reason="\n\n") for t in big_steps],
    }
    async with (
        FakeOpenAIServer(by_purpose={"draft": small_replies}) as small,
        FakeOpenAIServer(by_purpose=big_replies) as big,
    ):
        models = make_models(big=big, small=small)
        record = await run_one_track(models, problem, load_prompt_set("default"), ReasoningConfig())
    return record, small.requests, big


async def test_step_prompts_are_the_seed_chat_rendered_by_the_template(make_models):
    steps = ["First, 6 * 7 means six sevens.", "So the answer is \\boxed{42}."]
    _, small, _ = await run_spec(make_models, PROBLEM, steps, ["9", "9"])
    user = ("user", seed.first_user_message(PROBLEM.problem))
    assert small[0]["prompt"] == seed_chat([user], first_step=True)
    assert small[1]["prompt"] == seed_chat([user, ("assistant", assistant_turn(steps[:1]))])


async def test_score_prompt_is_the_seed_scoring_conversation(make_models):
    steps = ["First, 6 * 7 means six sevens.", "So the answer is \\boxed{42}."]
    _, _, big = await run_spec(make_models, PROBLEM, steps, ["9", "9"])
    user = ("user", seed.first_user_message(PROBLEM.problem))
    assert big.purposes == ["score", "score"]
    for n, body in enumerate(big.requests, start=1):
        expected = seed_chat(
            [
                user,
                ("assistant", assistant_turn(steps[:n])),
                ("user", seed.SCORE_REQUEST),
                ("assistant", seed.SCORE_PREFIX),
            ]
        )
        assert body["prompt"] == expected


async def test_a_rewrite_continues_the_prefix_the_rejected_draft_came_from(make_models):
    record, small, big = await run_spec(
        make_models, PROBLEM, ["6 * 7 = 41.", "So \\boxed{42}."], ["2", "9"], big_steps=["6 * 7 = 42."]
    )
    rewrite = big.requests_for("rewrite")
    assert len(rewrite) == 1 and rewrite[0]["prompt"] == small[0]["prompt"]
    assert [s.text for s in record.steps] == ["6 * 7 = 42.", "So \\boxed{42}."]
    user = ("user", seed.first_user_message(PROBLEM.problem))
    # the step after a rewrite continues from the kept (big) step, not the draft
    assert small[1]["prompt"] == seed_chat([user, ("assistant", assistant_turn(["6 * 7 = 42."]))])


async def test_gpqa_first_message_is_the_seeds_with_indented_choices(make_models):
    _, small, _ = await run_spec(make_models, GPQA, ["\\boxed{B}"], ["9"])
    user = ("user", seed.gpqa_user_message(GPQA.problem, list(GPQA.choices)))
    assert small[0]["prompt"] == seed_chat([user], first_step=True)


async def test_every_request_kind_has_the_seeds_sampling_parameters(make_models):
    # draft rejected (score 2), rewritten by the big model, then a draft accepted (score 9)
    _, small, big = await run_spec(
        make_models, PROBLEM, ["6 * 7 = 41.", "So \\boxed{42}."], ["2", "9"], big_steps=["6 * 7 = 42."]
    )
    scores, rewrites = big.requests_for("score"), big.requests_for("rewrite")
    assert len(small) == 2 and len(scores) == 2 and len(rewrites) == 1
    for body in [*small, *rewrites]:  # SpecReason's generate_new_step, for both models
        assert {k: body[k] for k in seed.STEP_PARAMS} == seed.STEP_PARAMS
        # a step is used whole, so it is asked whole (vLLM aborts it on disconnect all the same)
        assert body["stream"] is False
    for body in scores:  # SpecReason's get_score: one token, greedy, the top 10 logprobs
        assert body["max_tokens"] == seed.SCORE_PARAMS["max_tokens"]
        assert body["temperature"] == seed.SCORE_PARAMS["temperature"]
        assert body["logprobs"] == seed.SCORE_PARAMS["top_logprobs"]
        assert "stop" not in body


async def test_a_single_model_track_writes_its_reasoning_in_one_streamed_request(make_models):
    whole = Reply(text="Six sevens.\n\nThat is 42.</think>\n\nThe answer is \\boxed{42}.", stop_reason=None)
    async with FakeOpenAIServer([whole]) as big:
        models = make_models(big=big)
        record = await run_one_track(models, PROBLEM, load_prompt_set("default"), ReasoningConfig(), policy="big")
    (body,) = big.requests
    # SpecLRM's base_test / scale_reason: max_tokens is the budget, no stop strings
    assert body["max_tokens"] == 8192 and "stop" not in body and body["stream"] is True
    user = ("user", seed.first_user_message(PROBLEM.problem))
    assert body["prompt"] == seed_chat([user], first_step=True)
    assert record.finish_reason == "answer" and record.answer == "42" and len(record.steps) == 1
    assert record.thinking_tokens == record.steps[0].tokens


async def test_a_single_model_track_that_runs_out_of_budget_ends_there(make_models):
    cut = Reply(text="w " * 50, finish_reason="length", stop_reason=None)
    async with FakeOpenAIServer([cut]) as big:
        models = make_models(big=big)
        config = ReasoningConfig(token_budget=50)
        record = await run_one_track(models, PROBLEM, load_prompt_set("default"), config, policy="big")
    assert big.requests[0]["max_tokens"] == 50
    assert record.finish_reason == "budget" and record.answer is None and len(big.requests) == 1


async def test_stepwise_single_model_stops_at_each_delimiter(make_models):
    replies = [Reply(text="six sevens", stop_reason="\n\n"), Reply(text="so \\boxed{42}", stop_reason="\n\n")]
    async with FakeOpenAIServer(replies) as big:
        models = make_models(big=big)
        record = await run_one_track(
            models,
            PROBLEM,
            load_prompt_set("default"),
            ReasoningConfig(),
            policy="big",
            settings=SingleModelSettings(stepwise=True),
        )
    assert [b["stop"] for b in big.requests] == [["\n\n"], ["\n\n"]]
    assert [b["max_tokens"] for b in big.requests] == [512, 512]
    assert record.finish_reason == "answer" and [s.text for s in record.steps] == ["six sevens", "so \\boxed{42}"]
