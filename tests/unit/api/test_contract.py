"""The request contract: every field an OpenAI client sends mapped to a run setting or refused in one
line, the messages read as a problem and its context, and the README's table naming every field."""

import re

import pytest

from engine.api.contract import KNOWN_FIELDS, NEUTRAL, RequestError, read_messages, read_request
from engine.serving.chat import Message
from tests.paths import REPO_ROOT

USER = [{"role": "user", "content": "What is 2 + 2?"}]


def read(**body):
    return read_request({"model": "spec", "messages": USER, **body}, max_tokens_limit=1000)


def refusal(**body) -> RequestError:
    with pytest.raises(RequestError) as caught:
        read(**body)
    assert "\n" not in caught.value.message
    return caught.value


def test_sampling_fields_map_onto_the_run_flags_and_the_rest_onto_the_request():
    request = read(temperature=0.3, top_p=1, seed=7, max_tokens=64, n=2, user="me", spectra={"tracks": 4})
    assert request.flags == {"temperature": 0.3, "top_p": 1.0, "seed": 7}
    assert (request.max_tokens, request.n, request.user, request.stream) == (64, 2, "me", False)
    assert request.overrides == {"tracks": 4}
    assert (request.model, request.problem, request.context) == ("spec", "What is 2 + 2?", ())
    assert read(max_completion_tokens=64, max_tokens=64).max_tokens == 64


def test_fields_at_their_neutral_value_ask_nothing_and_are_taken():
    neutral = {name: values[-1] for name, values in NEUTRAL.items()}
    request = read(**neutral, n=1, stream=False)
    assert request == read()


@pytest.mark.parametrize(
    "field, value, says",
    [
        ("stop", ["\n"], "stop is not supported: spectra's methods end steps"),
        ("logprobs", True, "no token logprobs are returned"),
        ("tools", [{"type": "function"}], "not tool calls"),
        ("response_format", {"type": "json_object"}, "no format is enforced"),
        ("presence_penalty", 0.5, "take no penalties"),
        ("store", True, "--output_dir"),
        ("reasoning_effort", "high", "spectra.token_budget"),
    ],
)
def test_a_field_spectra_would_not_honour_is_refused_by_name(field, value, says):
    error = refusal(**{field: value})
    assert (error.status, error.param) == (400, field)
    assert error.message.startswith(f"{field} is not supported") and says in error.message


@pytest.mark.parametrize(
    "body, says",
    [
        ({"echo": True}, "unknown field 'echo'"),
        ({"temperature": -1}, "temperature must be 0 or more, not -1"),
        ({"top_p": 0}, "top_p must be in (0, 1], not 0"),
        ({"seed": 1.5}, "seed must be an integer, not 1.5"),
        ({"temperature": "hot"}, "temperature must be a number"),
        ({"n": 0}, "n must be at least 1, not 0"),
        ({"max_tokens": 2000}, "max_tokens 2000 is over this server's limit of 1000 (--max_request_tokens)"),
        ({"max_tokens": 10, "max_completion_tokens": 20}, "max_tokens and max_completion_tokens differ"),
        ({"stream_options": {"include_usage": True}}, "stream_options applies to streamed answers only"),
        ({"stream": "yes"}, "stream must be true or false"),
        ({"spectra": ["tracks"]}, "spectra must be an object of method flags"),
        ({"spectra": {"tracks": [4]}}, "spectra.tracks takes one value"),
        ({"model": ""}, "model must be a non-empty string"),
    ],
)
def test_bad_values_are_refused_in_one_line(body, says):
    assert says in refusal(**body).message


def test_a_stream_may_ask_for_its_usage():
    assert read(stream=True, stream_options={"include_usage": True}).include_usage
    assert not read(stream=True).include_usage


def test_the_last_user_message_is_the_problem_and_the_turns_before_it_its_context():
    problem, context = read_messages(
        [
            {"role": "developer", "content": "Be brief."},
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": [{"type": "text", "text": "Hello."}, {"type": "text", "text": "Ask."}]},
            {"role": "user", "content": "What is 2 + 2?"},
        ]
    )
    assert problem == "What is 2 + 2?"
    assert context == (Message("system", "Be brief."), Message("user", "Hi"), Message("assistant", "Hello.\nAsk."))


@pytest.mark.parametrize(
    "messages, says",
    [
        ([], "messages must be a non-empty list"),
        ([{"role": "system", "content": "Be brief."}], "no user message"),
        ([*USER, {"role": "assistant", "content": "4"}], "the last message is the assistant's"),
        ([{"role": "tool", "content": "x"}], "role 'tool' is not supported"),
        ([{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}], "only text parts"),
        ([{"role": "user", "content": "x", "name": "ann"}], "messages[0].name is not supported"),
        ([{"role": "user", "content": "  "}], "the last user message is empty"),
    ],
)
def test_messages_that_hold_no_problem_are_refused(messages, says):
    with pytest.raises(RequestError, match=re.escape(says)):
        read_messages(messages)


def test_a_body_that_is_not_an_object_is_refused():
    with pytest.raises(RequestError, match="the body must be a JSON object"):
        read_request([USER], max_tokens_limit=10)


def test_the_readme_table_names_every_field_of_the_contract():
    readme = (REPO_ROOT / "README.md").read_text()
    section = readme[readme.index("### The request contract") :]
    rows = {m for m in re.findall(r"^\| `([a-z_]+)`", section, flags=re.MULTILINE)}
    assert set(KNOWN_FIELDS) <= rows, sorted(set(KNOWN_FIELDS) - rows)
