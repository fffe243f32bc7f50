"""A streamed answer: each choice's leading track's reasoning as its steps are kept, and a problem
that fails after the stream started ending it with an error event the openai client raises."""

import json

import openai
import pytest

from engine.api.replies import Reply
from engine.api.streaming import LeadingTrack
from engine.records import StepRecord
from tests.fake_openai import Reply as FakeReply
from tests.unit.api.conftest import api


def events(chunks):
    return [json.loads(c.removeprefix(b"data: ")) for c in chunks]


def test_a_choices_stream_is_its_leading_tracks_reasoning_up_to_the_closed_thinking():
    sent = []
    leading = LeadingTrack(1, "\n\n", Reply("chatcmpl-1", "spec", 7, 12), sent.append)
    step = lambda i, text: StepRecord(index=i, text=text, writer="small", tokens=1)  # noqa: E731
    leading(2, step(0, "first"))
    leading(0, step(0, "another track's"))
    leading(2, step(1, "second"))
    leading(2, step(2, "last </think> \\boxed{4}"))
    leading(2, step(3, "after thinking"))
    chunks = events(sent)
    assert [c["choices"][0]["delta"]["reasoning"] for c in chunks] == ["first", "\n\nsecond", "\n\nlast"]
    assert all(c["choices"][0]["delta"]["reasoning_content"] == c["choices"][0]["delta"]["reasoning"] for c in chunks)
    assert {(c["choices"][0]["index"], c["spectra"]["track"]) for c in chunks} == {(1, 2)}


async def test_a_problem_failing_after_the_stream_started_ends_it_with_one_error_line():
    def refusing(body):
        if body["max_tokens"] == 1:
            return FakeReply(text="2")
        return FakeReply(status=400, error_message="This model's maximum context length is 64 tokens")

    async with api(small=refusing) as server:
        stream = await openai.AsyncOpenAI(
            base_url=f"{server.url}/v1", api_key="x", max_retries=0
        ).chat.completions.create(
            model="small+vote", messages=[{"role": "user", "content": "What is 2 + 2?"}], stream=True
        )
        roles = []
        with pytest.raises(openai.APIError, match="1 of 1 problems failed; first error: .*maximum context length"):
            async for chunk in stream:
                roles.append(chunk.choices[0].delta.role)
    assert roles == ["assistant"]  # the stream had started
