"""RAST decoding against the scripted fake server: the requests it makes, stopping, cancellation,
and that speculative mode samples the same distribution as token mode (chi-square)."""

import asyncio
import itertools
import math
from collections import Counter

import pytest

from benchmarks.sim_behaviour import SimConfig, plan_rast_reply, rast_logprobs
from engine.errors import UsageError
from engine.reasoning.rast.decoding import RastModels, RastSampling, TokenSpace, check_raw_logprobs, rast_decode
from engine.reasoning.rast.transfer import combine, sampling_distribution, top_k
from engine.serving.client import ModelClient
from tests.clocks import settled
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import FAST_LIMITS

# A small vocabulary, k below it (so top-k fills happen) and a large positive - negative delta
# (so speculative mode rejects often): the cases where a wrong rule would show.
SIM = SimConfig(rast_vocab=5, rast_spread=1.0, rast_delta=1.5, seed=4)
K = 3
AUX = 4  # logprobs of the positive and negative models: more than K, fewer than the vocabulary
PROMPT = [3, 1]


def fake_reply(body):
    planned = plan_rast_reply(body, SIM)
    return Reply(
        text="".join(planned.tokens),
        tokens=planned.tokens,
        finish_reason=planned.finish_reason,
        top_logprobs=planned.top_logprobs,
        prompt_logprobs=planned.prompt_logprobs,
        prompt_tokens=len(body["prompt"]),
    )


def rast_models(session, server):
    return RastModels(
        *(ModelClient(session, role, [server.url], FAST_LIMITS) for role in ("base", "positive", "negative"))
    )


def space(stop_ids=()):
    return TokenSpace(SIM.rast_vocab, frozenset(stop_ids), lambda ids: "".join(f"<{t}>" for t in ids))


async def test_speculative_chunk_requests_a_pinned_draft_and_prompt_logprobs_of_the_chunk(session):
    sampling = RastSampling(temperature=0.8, top_p=0.9, gamma=3, logprobs=K, aux_logprobs=AUX, max_tokens=3)
    async with FakeOpenAIServer(fake_reply) as server:
        out = await rast_decode(rast_models(session, server), PROMPT, sampling, space(), seed=11)
    draft, *scores = server.requests[:3]
    assert draft["model"] == "base" and draft["prompt"] == PROMPT and draft["max_tokens"] == 4
    assert (draft["temperature"], draft["top_p"], draft["top_k"], draft["logprobs"]) == (0.8, 1.0, K, K)
    assert draft["return_tokens_as_token_ids"] and draft["ignore_eos"] and draft["stream"] is False
    assert isinstance(draft["seed"], int)
    drafted = [int(t.split(":")[1]) for t in plan_rast_reply(draft, SIM).tokens[:3]]
    assert sorted(s["model"] for s in scores) == ["negative", "positive"]
    for score in scores:
        assert score["prompt"] == PROMPT + drafted and score["prompt_logprobs"] == AUX and score["max_tokens"] == 1
    assert out.chunks[0].drafted == 3 and out.requests_per_token == pytest.approx(len(server.requests) / 3)
    assert out.usage["base"].requests == len(out.chunks) and out.usage["positive"].requests == len(out.chunks)
    assert len(out.token_ids) == 3 and out.finish_reason == "length"


async def test_token_mode_asks_the_three_models_once_per_token(session):
    sampling = RastSampling(mode="token", gamma=3, logprobs=K, aux_logprobs=AUX, max_tokens=5)
    async with FakeOpenAIServer(fake_reply) as server:
        out = await rast_decode(rast_models(session, server), PROMPT, sampling, space(), seed=2)
    assert len(out.token_ids) == 5 and out.requests == 15 and out.requests_per_token == 3
    assert Counter(r["model"] for r in server.requests) == {"base": 5, "positive": 5, "negative": 5}
    assert server.requests[3]["prompt"] == [*PROMPT, out.token_ids[0]]
    assert out.positions == 5 and out.chunks == []
    # the small models are asked for more logprobs than the base: they are filled less often
    assert out.top_k_fills["base"] > out.top_k_fills["negative"] > 0
    assert out.fills_per_position == sum(out.top_k_fills.values()) / 5


@pytest.mark.parametrize("mode", ["token", "speculative"])
async def test_greedy_decoding_follows_the_combined_argmax_in_both_modes(session, mode):
    sampling = RastSampling(mode=mode, temperature=0.0, gamma=3, logprobs=K, aux_logprobs=AUX, max_tokens=7)
    async with FakeOpenAIServer(fake_reply) as server:
        out = await rast_decode(rast_models(session, server), PROMPT, sampling, space(), seed=0)
    ids = list(PROMPT)
    for _ in range(7):
        dist = exact_next(ids[-1], sampling)
        ids.append(max(dist, key=dist.get))
    assert out.token_ids == ids[len(PROMPT) :]


async def test_a_stop_token_or_stop_string_ends_the_text_without_it(session):
    sampling = RastSampling(mode="token", temperature=0.0, logprobs=K, aux_logprobs=AUX, max_tokens=7)
    async with FakeOpenAIServer(fake_reply) as server:
        full = await rast_decode(rast_models(session, server), PROMPT, sampling, space(), seed=0)
        first = full.token_ids[2]
        by_token = await rast_decode(rast_models(session, server), PROMPT, sampling, space([first]), seed=0)
        by_string = await rast_decode(rast_models(session, server), PROMPT, sampling, space(), stop=[f"<{first}>"])
    cut = full.token_ids.index(first)
    assert by_token.token_ids == full.token_ids[:cut] and by_token.stop_reason == first
    assert by_token.finish_reason == "stop" and by_token.text == "".join(f"<{t}>" for t in full.token_ids[:cut])
    assert by_string.text == by_token.text and by_string.stop_reason == f"<{first}>"


async def test_cancelling_a_decode_aborts_its_requests(session):
    def slow(body):
        reply = fake_reply(body)
        reply.after = asyncio.Event()  # never set: answered only by the client going away
        return reply

    async with FakeOpenAIServer(slow) as server:
        task = asyncio.create_task(
            rast_decode(rast_models(session, server), PROMPT, RastSampling(mode="token"), space())
        )
        await settled(lambda: server.in_flight == 3, "the three models' requests at the server")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        await server.quiet()  # the server has seen every connection close
    assert server.disconnects == 3


def exact_next(previous, sampling):
    """Token mode's distribution after `previous`, from the fixed distributions themselves."""
    roles = ("base", "positive", "negative")
    tops = [top_k(dict(enumerate(rast_logprobs(role, previous, SIM))), sampling.k_of(role)) for role in roles]
    combined = combine(*tops, sampling.alpha, SIM.rast_vocab, sampling.logprobs)
    return sampling_distribution(combined.scores, sampling.temperature, sampling.top_p)


def chi_square_p_value(counts, probs, n):
    """Chi-square goodness of fit, p-value by the Wilson-Hilferty normal approximation."""
    cells = [(counts.get(c, 0), n * p) for c, p in probs.items() if p > 0]
    stat, df = sum((o - e) ** 2 / e for o, e in cells), len(cells) - 1
    z = ((stat / df) ** (1 / 3) - (1 - 2 / (9 * df))) / math.sqrt(2 / (9 * df))
    return 0.5 * math.erfc(z / math.sqrt(2))


async def draws(session, server, sampling, n):
    semaphore = asyncio.Semaphore(48)

    async def one(seed):
        async with semaphore:
            return tuple(
                (await rast_decode(rast_models(session, server), PROMPT, sampling, space(), seed=seed)).token_ids
            )

    return Counter(await asyncio.gather(*(one(seed) for seed in range(n))))


# Draws over HTTP cost ~5 ms a request on a loaded 2-core machine (3 a speculative draw, 6 a token
# one); the rule itself is checked on 30000 draws without HTTP in test_logit_transfer.py.
SPECULATIVE_DRAWS, TOKEN_DRAWS = 800, 250


async def test_speculative_mode_samples_token_modes_distribution(session):
    """Two tokens (a chunk of 2, so rejections at both positions count): the speculative and token
    mode samples each fit token mode's exact distribution, and the speculative sample does not fit
    the base model's own (what accepting every draft would give), so the test can fail."""
    sampling = RastSampling(temperature=1.0, top_p=0.95, gamma=2, logprobs=K, aux_logprobs=AUX, max_tokens=2)
    exact = {}
    for a, b in itertools.product(range(SIM.rast_vocab), repeat=2):
        exact[(a, b)] = exact_next(PROMPT[-1], sampling).get(a, 0.0) * exact_next(a, sampling).get(b, 0.0)
    base_only = {
        (a, b): math.exp(rast_logprobs("base", PROMPT[-1], SIM)[a] + rast_logprobs("base", a, SIM)[b]) for a, b in exact
    }
    async with FakeOpenAIServer(fake_reply) as server:
        speculative = await draws(session, server, sampling, SPECULATIVE_DRAWS)
        token = await draws(session, server, RastSampling(**{**vars(sampling), "mode": "token"}), TOKEN_DRAWS)
    assert chi_square_p_value(speculative, exact, SPECULATIVE_DRAWS) > 0.001
    assert chi_square_p_value(token, exact, TOKEN_DRAWS) > 0.001
    assert chi_square_p_value(speculative, base_only, SPECULATIVE_DRAWS) < 1e-6


async def test_speculative_mode_counts_no_token_past_a_stop_string(session):
    sampling = RastSampling(temperature=0.0, gamma=4, logprobs=K, aux_logprobs=AUX, max_tokens=9)
    async with FakeOpenAIServer(fake_reply) as server:
        full = await rast_decode(rast_models(session, server), PROMPT, sampling, space(), seed=0)
        first = full.token_ids[1]
        cut = await rast_decode(rast_models(session, server), PROMPT, sampling, space(), stop=[f"<{first}>"])
    at = full.token_ids.index(first)
    # the chunk that wrote the stop string went on past it; those tokens are not the sample's
    assert cut.token_ids == full.token_ids[: at + 1] and cut.stop_reason == f"<{first}>"
    assert cut.text == "".join(f"<{t}>" for t in full.token_ids[:at])


async def test_a_server_with_processed_logprobs_is_refused_in_one_line(session):
    def tempered(body):
        reply = fake_reply(body)
        if body.get("temperature", 0) > 1:  # what a processed_logprobs server does: logprobs / T
            reply.top_logprobs = [{t: lp / body["temperature"] for t, lp in top.items()} for top in reply.top_logprobs]
        return reply

    async with FakeOpenAIServer(fake_reply) as raw:
        await check_raw_logprobs(rast_models(session, raw), PROMPT)  # raw: accepted
    async with FakeOpenAIServer(tempered) as processed:
        with pytest.raises(UsageError, match="returns processed logprobs .* --logprobs-mode raw_logprobs"):
            await check_raw_logprobs(rast_models(session, processed), PROMPT)
