"""Admission under the shared limits, and which model's template counts the prompt."""

import pytest

from engine.api.contract import ChatRequest, RequestError
from engine.api.service import ReasoningService
from engine.data.problems import Problem
from engine.run.config import SchedulerLimits
from engine.serving.chat import Message
from tests.unit.api.conftest import api


def service(max_problems_in_flight: int, max_queued: int) -> ReasoningService:
    limits = SchedulerLimits(max_problems_in_flight=max_problems_in_flight)
    return ReasoningService(None, {}, {}, None, limits=limits, max_queued=max_queued)


def test_problems_past_the_slots_wait_and_past_the_queue_are_refused():
    busy = service(max_problems_in_flight=2, max_queued=1)
    with busy.admission("a", 2):
        assert (busy.admitted, busy.queued) == (2, 0)
        with busy.admission("b", 1):
            assert busy.queued == 1
            with pytest.raises(RequestError) as refused:
                with busy.admission("c", 1):
                    pass
            assert refused.value.status == 429
        with pytest.raises(RequestError) as twice:
            with busy.admission("a", 1):
                pass
        assert twice.value.status == 409
    assert (busy.admitted, busy.requests) == (0, set())


def test_a_request_of_more_choices_than_the_server_ever_holds_is_refused_even_when_idle():
    with pytest.raises(RequestError) as refused:
        with service(max_problems_in_flight=2, max_queued=1).admission("a", 4):
            pass
    assert refused.value.status == 400 and refused.value.param == "n"


async def test_the_prompt_is_counted_by_the_answer_models_template_with_the_context():
    async with api() as server:
        resolved = server.service.catalog.resolve(ChatRequest(model="spec", problem="What is 2 + 2?"))
        with_context = server.service.catalog.resolve(
            ChatRequest(model="spec", problem="What is 2 + 2?", context=(Message("system", "Be brief."),))
        )
        alone = Problem(id="a", problem="What is 2 + 2?", answer=None)
        told = Problem(id="b", problem="What is 2 + 2?", answer=None, context=(Message("system", "Be brief."),))
        chat = server.service.models["big"].chat
        expected = len(
            chat.tokenizer(chat.generation_prompt((Message("user", "What is 2 + 2?"),)), add_special_tokens=False)[
                "input_ids"
            ]
        )
        assert server.service.prompt_tokens(resolved, alone) == expected
        assert server.service.prompt_tokens(with_context, told) > expected
