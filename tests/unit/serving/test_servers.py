"""What spectra reads from a server someone else started: the model it serves, its context length,
and its --max-logprobs when that is below what a run asks (on the scripted fake server)."""

import pytest
from aiohttp import web

from engine.errors import ServerError, UsageError
from engine.serving.client import ModelClient
from engine.serving.servers import ServedModel, check_server, logprobs_limit
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import FAST_LIMITS


class ServerWithContext(FakeOpenAIServer):
    """The fake server, reporting a context length in GET /v1/models as vLLM does."""

    max_model_len: int = 64

    async def _models(self, request: web.Request) -> web.Response:
        card = {"id": self.served_model, "object": "model", "max_model_len": self.max_model_len}
        return web.json_response({"object": "list", "data": [card]})


async def test_check_server_returns_the_served_model_and_its_context_length(session):
    async with ServerWithContext([]) as with_length, FakeOpenAIServer([]) as without:
        assert await check_server(session, with_length.url, "fake-model") == ServedModel("fake-model", 64)
        assert await check_server(session, without.url + "/", None) == ServedModel("fake-model", None)


def refusal(message: str) -> Reply:
    return Reply(status=400, error_message=message)


@pytest.mark.parametrize(
    ("reply", "limit"),
    [
        (refusal("Requested sample logprobs of 200, which is greater than max allowed: 20"), 20),
        (refusal("Requested prompt logprobs of 30, which is greater than max allowed: 5"), 5),
        (Reply("x", top_logprobs=[{"x": -0.1}]), None),
    ],
)
async def test_the_logprobs_limit_is_read_from_vllms_refusal(session, reply, limit):
    async with FakeOpenAIServer([reply]) as server:
        client = ModelClient(session, "fake-model", [server.url], FAST_LIMITS)
        assert await logprobs_limit(client, 200) == limit
    (probe,) = server.requests
    assert (probe["logprobs"], probe["max_tokens"], probe["temperature"]) == (200, 1, 0.0)


async def test_any_other_refusal_of_the_probe_is_raised(session):
    async with FakeOpenAIServer([Reply(status=404, error_message="The model `x` does not exist.")]) as server:
        with pytest.raises(ServerError, match="HTTP 404: The model `x` does not exist."):
            await logprobs_limit(ModelClient(session, "x", [server.url], FAST_LIMITS), 10)


@pytest.mark.parametrize(("key", "said"), [(None, "requires an API key"), ("wrong", "refused the API key sent")])
async def test_a_server_that_wants_another_key_is_refused_naming_the_role_s_key_flag(session, key, said):
    async with FakeOpenAIServer([], api_key="right") as server:
        with pytest.raises(UsageError) as caught:
            await check_server(session, server.url, "fake-model", role="big", api_key=key)
        assert await check_server(session, server.url, "fake-model", api_key="right") == ServedModel("fake-model", None)
    assert str(caught.value) == (
        f"{server.url}: HTTP 401: the big model's server {said}: give its key with --big_api_key or SPECTRA_BIG_API_KEY"
    )
    assert caught.value.exit_code == 2
