"""Every registered policy and strategy honours its contract: built with its default settings, it
runs one step (policies) or one problem (strategies) on the scripted fake server, and no two
settings classes declare the same flag."""

import dataclasses
import itertools

import pytest

from benchmarks.sim_behaviour import markov_reply
from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.reasoning.policies import POLICIES
from engine.reasoning.policies.base import StepContext
from engine.reasoning.settings import ReasoningConfig, Settings
from engine.reasoning.strategies import STRATEGIES
from engine.reasoning.track import TrackSetup, track_messages, track_models
from engine.records import StepEnding
from engine.run.config import ModelConfig, RunConfig
from engine.run.flags import SETTINGS_CLASSES, check_unique_flags
from engine.run.scheduler import Scheduler, WorkItem
from engine.serving.models import WRITING
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import WORDS, run_one_track

PROBLEM = Problem(id="p", problem="What is 2 + 2?", answer="4")
PROMPTS = load_prompt_set("default")


def answer_chain(model: str, previous: int) -> list[float]:
    """A RAST model (requests of token ids) that writes "The answer is 4" and ends."""
    following = {WORDS.index(a): WORDS.index(b) for a, b in itertools.pairwise(WORDS[2:])}
    likely = following.get(previous, WORDS.index("The"))
    return [-0.01 if token == likely else -8.0 for token in range(len(WORDS))]


def a_step(body):
    """A step that ends thinking with an answer, with every token's top-k when asked for them."""
    step = Reply(text="so \\boxed{4}", stop_reason="\n\n")
    if body.get("logprobs"):  # the track asked for token logprobs (DeepConf), or a policy did
        step.top_logprobs = [{token: -0.1, "x": -3.0} for token in step.token_list()]
    return step


def a_high_rating(body):
    return Reply(text="9", top_logprobs=[{"9": -0.01, "1": -5.0}])


def rast_request(body):
    """RAST's requests of token ids, answered by `answer_chain`."""
    planned = markov_reply(body, answer_chain)
    return Reply(tokens=planned.tokens, top_logprobs=planned.top_logprobs, prompt_logprobs=planned.prompt_logprobs)


# Every purpose's requests: ratings for the judges, RAST's own, and a step for any other.
ANY_REQUEST = {"score": a_high_rating, "verify": a_high_rating, "rast": rast_request}


def roles_of(spec) -> tuple[str, ...]:
    """The big and small models, and any other a policy's default settings call (lookahead's judge)."""
    return tuple(dict.fromkeys(("big", "small", *spec.roles_for(spec.settings()))))


@pytest.mark.parametrize("name", list(POLICIES))
async def test_every_policy_writes_one_step_with_default_settings(make_models, name):
    spec = POLICIES[name]
    assert issubclass(spec.settings, Settings) and dataclasses.is_dataclass(spec.settings)
    async with FakeOpenAIServer(a_step, by_purpose=ANY_REQUEST) as server:
        models = make_models(**{role: server for role in roles_of(spec)})
        handles = track_models(models, TrackSetup(track_id=0, policy=name, seed=1))
        policy = spec.start(spec.settings(), handles, PROMPTS, ReasoningConfig())
        messages = track_messages(PROBLEM, PROMPTS, None)
        ctx = StepContext(handles, messages, "", (), 0, ReasoningConfig(), PROMPTS, PROBLEM.problem)
        result = await policy.step(ctx)
        policy.close()  # what a policy started ahead of the step is cancelled with the track
    assert result.step.text and result.step.writer in spec.roles
    assert result.ending in tuple(StepEnding)
    assert set(result.step.usage) <= set(spec.roles)
    PROMPTS.require_templates(spec.templates)


@pytest.mark.parametrize("name", [name for name, spec in POLICIES.items() if spec.gives_token_logprobs])
async def test_a_policy_that_gives_token_logprobs_records_every_kept_token_s_confidence(make_models, name):
    async with FakeOpenAIServer(a_step, by_purpose=ANY_REQUEST) as server:
        models = make_models(**{role: server for role in roles_of(POLICIES[name])})
        record = await run_one_track(models, PROBLEM, PROMPTS, policy=name, seed=1, token_logprobs=3)
    steps = [s for s in record.steps if s.tokens]
    assert steps and all(len(s.token_confidence) == len(s.token_logprob) == s.tokens for s in steps)
    # The requests that wrote them asked for at least the track's 3 (SplitReason's greedy ranking: its own 1 too).
    asked = [body.get("logprobs") for body, p in zip(server.requests, server.purposes, strict=True) if p in WRITING]
    assert asked and all(k is not None and k >= 3 for k in asked)


def any_pooling(body):
    """A process reward model's P(good) of .9 at every step tag."""
    return [[0.1, 0.9]] * body["input"].count("<extra_0>")


@pytest.mark.parametrize("name", list(STRATEGIES))
async def test_every_strategy_solves_one_problem_with_default_settings(make_models, name, tmp_path):
    spec = STRATEGIES[name]
    records = []
    # The PRM is read from its config, as for a local model folder: a Qwen-style pooling PRM.
    (tmp_path / "config.json").write_text('{"model_type": "qwen2", "architectures": ["Qwen2ForProcessRewardModel"]}')
    async with FakeOpenAIServer(a_step, by_purpose=ANY_REQUEST, pooler=any_pooling) as server:
        models = make_models(**{role: server for role in spec.roles}, sources={"prm": str(tmp_path)})
        config = RunConfig(
            runner="test",
            output_dir="unused",
            models={role: ModelConfig(str(tmp_path) if role == "prm" else role) for role in models},
            strategy=name,
        )
        scheduler = Scheduler(config, models, PROMPTS, run_id="r", dataset="d", on_record=records.append)
        await scheduler.run([WorkItem(PROBLEM, 0)])
    (record,) = records
    assert record.problem_id == "p" and record.answer == "4"
    assert record.config_digest == config.digest()
    assert set(spec.needed_roles(config.strategy_settings)) <= set(spec.roles)


def test_no_two_settings_classes_declare_one_flag():
    check_unique_flags(SETTINGS_CLASSES)

    @dataclasses.dataclass(frozen=True)
    class Clashing(Settings):
        score_threshold: float = 1.0

    with pytest.raises(TypeError, match="--score_threshold"):
        check_unique_flags([*SETTINGS_CLASSES, Clashing])


def test_settings_are_in_the_digest_and_the_manifest():
    base = RunConfig(runner="spec", output_dir="x", models={"big": ModelConfig("b"), "small": ModelConfig("s")})
    changed = dataclasses.replace(base, policy_settings=POLICIES["spec"].settings(score_threshold=5.0))
    assert base.digest() != changed.digest()
    assert changed.to_dict()["policy_settings"]["score_threshold"] == 5.0
