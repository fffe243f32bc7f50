"""Shared unit-test pieces: a real (tiny, word-level) tokenizer with a ChatML template, and
models whose clients talk to scripted fake servers."""

import aiohttp
import pytest
from tokenizers import Tokenizer, models, pre_tokenizers
from transformers import PreTrainedTokenizerFast

from engine.data.prompts import PromptSet
from engine.reasoning.policies import POLICIES
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.track import Track, TrackSetup, new_track_record, track_models
from engine.records import ProblemRecord, RequestCost, sum_usage, usage_of_costs
from engine.serving.chat import ChatFormat
from engine.serving.client import ModelClient
from engine.serving.endpoints import ClientLimits
from engine.serving.models import Model

CHATML = (
    "{%- for m in messages %}{{ '<|im_start|>' + m['role'] + '\\n' + m['content'] + '<|im_end|>\\n' }}"
    "{%- endfor %}{%- if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{%- endif %}"
)
# The words a scripted RAST model writes, token by token (test_registry.py).
WORDS = ("[UNK]", "<think>", "The", "answer", "is", "4", "<|im_end|>")
FAST_LIMITS = ClientLimits(backoff_initial_s=0.01, backoff_max_s=0.02, max_attempts=2, stall_timeout_s=5.0)


def chatml_tokenizer() -> PreTrainedTokenizerFast:
    word_level = Tokenizer(models.WordLevel(dict(zip(WORDS, range(len(WORDS)), strict=True)), unk_token="[UNK]"))
    word_level.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=word_level, unk_token="[UNK]", eos_token="<|im_end|>")
    tokenizer.chat_template = CHATML
    return tokenizer


@pytest.fixture
async def session():
    async with aiohttp.ClientSession() as s:
        yield s


@pytest.fixture
def make_models(session):
    """models(big=server, small=server, thinking=True) -> {"big": Model, "small": Model};
    `sources`: role -> the folder a model was loaded from (a PRM's config names its kind)."""

    def build(*, thinking: bool = True, limits: ClientLimits = FAST_LIMITS, sources=None, **servers):
        chat = ChatFormat(chatml_tokenizer(), thinking=thinking)
        return {
            role: Model(
                role, ModelClient(session, role, [server.url], limits), chat, source=(sources or {}).get(role, "")
            )
            for role, server in servers.items()
        }

    return build


async def run_one_track(
    models: dict[str, Model],
    problem,
    prompts: PromptSet,
    config: ReasoningConfig = ReasoningConfig(),
    *,
    policy: str = "spec",
    settings=None,
    seed: int | None = None,
    token_logprobs: int | None = None,
):
    """Run one track of `policy` (with `settings`, default the policy's) to its end; its record."""
    spec = POLICIES[policy]
    setup = TrackSetup(track_id=0, policy=policy, seed=seed, token_logprobs=token_logprobs)
    handles = track_models(models, setup)
    track_policy = spec.start(settings or spec.settings(), handles, prompts, config)
    track = Track(
        new_track_record(setup), setup, problem, handles, prompts, config, track_policy, continuous=spec.continuous
    )
    return await track.run()


def every_cost(record: ProblemRecord) -> list[RequestCost]:
    """Every request entered anywhere in `record`."""
    tracks = [cost for track in record.tracks for cost in track.costs]
    steps = [cost for track in record.tracks for step in track.steps for cost in step.costs]
    return [*record.costs, *tracks, *steps]


def assert_usage_is_its_costs(record: ProblemRecord) -> None:
    """Every usage dict of `record` is the sum of the requests entered where it counts them: a step's
    own, a track's with its steps', the problem's with everything it holds; `wasted` likewise."""

    def used(costs, wasted=False):
        return usage_of_costs(c for c in costs if c.wasted == wasted)

    for track in record.tracks:
        for step in track.steps:
            assert (step.usage, step.wasted) == (used(step.costs), used(step.costs, wasted=True))
        costs = [*track.costs, *(c for step in track.steps for c in step.costs)]
        assert (track.usage, track.wasted) == (used(costs), used(costs, wasted=True))
    assert record.usage == used(every_cost(record))
    assert record.usage == sum_usage([t.usage for t in record.tracks] + [used(record.costs)])
