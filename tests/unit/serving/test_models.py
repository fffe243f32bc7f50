"""The model handle: the one seed rule, and what every request it sends carries and returns, on the
scripted fake server."""

import itertools
import random

import pytest

from engine.records import Role
from engine.serving.chat import Message
from engine.serving.models import (
    LEGACY_SALTS,
    NEW_SEEDS_FROM,
    UNSEEDED,
    WRITING,
    Purpose,
    request_seed,
)
from tests.fake_openai import FakeOpenAIServer, Reply

# Seeds as the code before the handle computed them (20ceec8): `engine.serving.models.request_seed(
# track_seed, index, salt)` = track_seed * 7919 + index * 4 + salt, with salt 0 for one model's step,
# 1 a draft, 2 a rewrite, 3 the answer (index 0) and a probe (index >= 1); SplitReason numbered
# logprob_subselect's candidates round * 1024 + j (salt 1 small, 2 big, 3 a rescore) and
# spec_reason's big chunks step * 1024 + chunk (salt 2). Printed by running that code.
PINNED = [
    (0, Purpose.STEP, 0, 0),
    (1, Purpose.DRAFT, 0, 7920),
    (123456789, Purpose.REWRITE, 7, 977654312121),
    (2**32 - 1, Purpose.ANSWER, 0, 34011846009108),
    (4242, Purpose.PROBE, 5, 33592421),
    (99, Purpose.REWRITE, 3 * 1024 + 2, 796279),
    (99, Purpose.RESCORE, 2 * 1024 + 1, 792180),
    (77, Purpose.REWRITE, 5 * 1024 + 3, 630257),
]
# search-and-learn's requests, by `Searcher.request_seed(key)` of 20ceec8 (crc32 of repr((seed, key)),
# 31 bits) with the problem seed 3141592653.
PINNED_SEARCH = [
    (("beam", 0, 0, 0), 1952829316),
    (("beam", 2, 3, 1), 1573257115),
    (("best_of_n", 5, 0), 266541772),
    (("dvts", 1, 2, 3, 0), 819214315),
    (("dvts_finish", 0, 1, 0), 1972376066),
]


@pytest.mark.parametrize(("track_seed", "purpose", "index", "seed"), PINNED)
def test_seeded_purposes_keep_the_seeds_they_had(track_seed, purpose, index, seed):
    assert request_seed(track_seed, purpose, index) == seed


@pytest.mark.parametrize(("key", "seed"), PINNED_SEARCH)
def test_search_requests_keep_the_seeds_they_had(key, seed):
    assert request_seed(3141592653, Purpose.SEARCH, key=key) == seed


def test_no_two_requests_of_a_track_share_a_seed_and_new_purposes_stay_apart_from_old_seeds():
    rng = random.Random(31)
    track_seeds = [0, 1, 2, 7919, 2**31, 2**32 - 1, *(rng.randrange(2**32) for _ in range(40))]
    indices = [*range(64), 1023, 1024, 4097, 2**20, 2**25 - 1]
    fresh = {}
    for seed, index, purpose in itertools.product(track_seeds, indices, Purpose):
        if purpose in LEGACY_SALTS or purpose == Purpose.SEARCH:
            continue
        value = request_seed(seed, purpose, index)
        assert NEW_SEEDS_FROM <= value < 2**63
        assert fresh.setdefault(value, (seed, purpose, index)) == (seed, purpose, index), "two requests, one seed"
    for seed in track_seeds:
        # The old rule: within a track (steps under 1024), a seed per (salt, index); the answer,
        # a probe and a rescore share salt 3 and tell apart by index, as they did.
        old = {(salt, i): request_seed(seed, p, i) for p, salt in LEGACY_SALTS.items() for i in indices}
        within = {key: value for key, value in old.items() if key[1] < 1024}
        assert len(set(within.values())) == len(within)
        assert max(old.values()) < NEW_SEEDS_FROM
    assert request_seed(None, Purpose.DRAFT, 3) is None
    with pytest.raises(ValueError, match="index must be in"):
        request_seed(5, Purpose.SCORE, 2**25)


async def test_a_request_names_its_purpose_seeds_from_the_track_and_returns_its_cost(make_models):
    async with FakeOpenAIServer([Reply(text="six", prompt_tokens=9, cached_tokens=4)]) as server:
        handle = make_models(small=server)["small"].for_track(seed=11)
        reply = await handle.continue_reasoning(
            (Message("user", "q"),), "", purpose=Purpose.DRAFT, index=2, max_tokens=8, temperature=0.6, top_p=0.9
        )
    (body,) = server.requests
    assert server.purposes == ["draft"] and body["seed"] == 11 * 7919 + 2 * 4 + 1
    assert body["add_special_tokens"] is False and body["temperature"] == 0.6 and body["top_p"] == 0.9
    assert body["prompt"] == handle.chat.generation_prompt((Message("user", "q"),))
    cost = reply.cost
    assert (cost.role, cost.purpose, cost.server, cost.model) == (Role.SMALL, "draft", server.url, "small")
    assert (cost.prompt_tokens, cost.completion_tokens, cost.cached_prompt_tokens, cost.attempts) == (9, 3, 4, 1)
    assert cost.started_at <= cost.ended_at and cost.client_s >= 0 and reply.usage["small"].requests == 1


async def test_greedy_and_pooling_purposes_go_unseeded_and_only_writing_ones_carry_the_track_s_logprobs(
    make_models,
):
    async with FakeOpenAIServer(lambda body: Reply(text="x"), pooler=lambda body: [[0.5, 0.5]]) as server:
        handle = make_models(big=server)["big"].for_track(seed=3, token_logprobs=5)
        messages = [Message("user", "q")]
        for purpose in Purpose:
            if purpose not in (Purpose.SEARCH, Purpose.EMBED, Purpose.PRM):
                await handle.continue_text(messages, "a", purpose=purpose, max_tokens=1, temperature=0.0, logprobs=1)
        await handle.pool("rendered", purpose=Purpose.PRM)
        await handle.pool("raw text", purpose=Purpose.EMBED, rendered=False)
    for purpose, body in zip(server.purposes, server.requests, strict=True):
        assert ("seed" in body) == (purpose not in UNSEEDED), purpose
        assert body["logprobs"] == (5 if purpose in WRITING else 1), purpose
    assert server.pooling_purposes == ["prm", "embed"]
    prm, embed = server.pooling_requests
    assert prm["add_special_tokens"] is False and "add_special_tokens" not in embed


def test_a_cancelled_request_s_entry_is_one_wasted_request_of_unknown_tokens(make_models):
    cost = make_models(small=FakeOpenAIServer())["small"].cancelled(Purpose.DRAFT)
    assert cost.wasted and cost.cancelled and cost.server is None and cost.usage.requests == 1
    assert cost.to_dict() == {"role": "small", "purpose": "draft", "server": None, "model": "small", "wasted": True,
                              "cancelled": True}  # fmt: skip


async def test_a_request_s_entry_keeps_the_server_s_timings_and_a_pooling_entry_the_client_s_alone(make_models):
    metrics = {"queue_time_ms": 2.0, "time_to_first_token_ms": 30.0, "generation_time_ms": 120.0}
    async with FakeOpenAIServer([Reply(text="x", metrics=metrics)], pooler=lambda body: [[0.5, 0.5]]) as server:
        handle = make_models(big=server)["big"].for_track(seed=1)
        reply = await handle.continue_text([Message("user", "q")], "", purpose=Purpose.SCORE, max_tokens=1,
                                           temperature=0.0)  # fmt: skip
        pooled = await handle.pool("rendered", purpose=Purpose.PRM)
    assert (reply.cost.queue_s, reply.cost.prefill_s, reply.cost.generation_s) == (0.002, 0.03, 0.12)
    assert (pooled.cost.queue_s, pooled.cost.prefill_s, pooled.cost.generation_s) == (None, None, None)
    assert pooled.cost.client_s >= 0 and pooled.cost.started_at <= pooled.cost.ended_at


def test_each_track_handle_has_a_route_key_of_its_own_and_the_run_s_model_none(make_models):
    model = make_models(small=FakeOpenAIServer())["small"]
    first, second = model.for_track(seed=1), model.for_track(seed=1)
    assert model.route is None and first.route is not None and first.route is not second.route
