"""What a client gets back: the records of a request as an OpenAI chat completion, or as the
chunks of its stream.

Each choice is one record (a repeat of the problem). Its text is its answer track's: the first
track whose answer is the problem's (the vote's winner), else the first that wrote steps. The kept
reasoning (the steps up to `</think>`) goes in `reasoning` and `reasoning_content` (vLLM 0.32
renamed the field; clients read either); `content` is the text after thinking: the answer the
answer model wrote (`--answer_phase`), else what the steps wrote after `</think>`, else the answer
read from the steps as `\\boxed{...}` (the seeds' loop ends at the step that states it). `usage`
counts the prompt once and the answer tracks' kept tokens; everything spent, the extracted
answers and the records (tracks, steps with writer and outcome, votes, stop reasons, every
request's cost entry) go under `spectra`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from engine.reasoning.policies import POLICIES
from engine.reasoning.search.beams import STEP_DELIMITER as SEARCH_DELIMITER
from engine.reasoning.strategies import STRATEGIES
from engine.records import FinishReason, ProblemRecord, TrackRecord, sum_usage
from engine.run.config import RunConfig
from engine.serving.chat import THINK_CLOSE
from engine.serving.responses import encode_json

# Tracks that ended without an answer because they ran out of tokens: the choice ends "length".
OUT_OF_TOKENS = (FinishReason.BUDGET, FinishReason.LENGTH)


@dataclass(frozen=True)
class Choice:
    """One choice as the client reads it, from one record."""

    index: int
    track_id: int | None
    reasoning: str
    content: str
    finish_reason: str
    reasoning_tokens: int
    completion_tokens: int
    answer: str | None


def step_joint(config: RunConfig) -> str:
    """What joins a track's kept steps into its reasoning: the step delimiter; nothing for a
    continuous policy's chunks (SplitReason's); a search's own delimiter."""
    if not STRATEGIES[config.strategy].runs_policy:
        return SEARCH_DELIMITER
    return "" if POLICIES[config.policy].continuous else config.reasoning.step_delimiter


def answer_track(record: ProblemRecord) -> TrackRecord | None:
    """The track whose text answers: the first with the problem's answer, else the first with steps."""
    chosen = next((t for t in record.tracks if record.answer is not None and t.answer == record.answer), None)
    return chosen or next((t for t in record.tracks if t.steps), None)


def thinking_of(text: str) -> str:
    """Reasoning as the client is shown it: up to the first `</think>`."""
    return text.partition(THINK_CLOSE)[0]


def choice_of(record: ProblemRecord, index: int, joint: str) -> Choice:
    track = answer_track(record)
    if track is None:
        return Choice(index, None, "", "", "stop", 0, 0, record.answer)
    text = joint.join(step.text for step in track.steps)
    thought, closed, after = text.partition(THINK_CLOSE)
    if track.answer_tokens:  # written by the answer model after the closed thinking
        content = track.answer_text
    elif closed and after.strip():
        content = after.strip()
    else:
        content = f"\\boxed{{{record.answer}}}" if record.answer is not None else ""
    ran_out = record.answer is None and track.finish_reason in OUT_OF_TOKENS
    return Choice(
        index=index,
        track_id=track.track_id,
        reasoning=thought.rstrip(),
        content=content,
        finish_reason="length" if ran_out else "stop",
        reasoning_tokens=track.thinking_tokens,
        completion_tokens=track.thinking_tokens + track.answer_tokens,
        answer=record.answer,
    )


def usage_of(choices: Sequence[Choice], prompt_tokens: int) -> dict[str, Any]:
    """OpenAI's usage: the prompt counted once, the choices' kept tokens (their reasoning's among them)."""
    completion = sum(c.completion_tokens for c in choices)
    return {
        "prompt_tokens": prompt_tokens,
        "completion_tokens": completion,
        "total_tokens": prompt_tokens + completion,
        "completion_tokens_details": {"reasoning_tokens": sum(c.reasoning_tokens for c in choices)},
    }


def spectra_of(method: str, request_id: str, records: Sequence[ProblemRecord], choices: Sequence[Choice]) -> dict:
    """Everything spent and decided: per role the tokens and requests the records used and those
    they threw away, each choice's extracted answer, answer track and record."""
    wasted = sum_usage([t.wasted for r in records for t in r.tracks])
    return {
        "method": method,
        "request_id": request_id,
        "answer": choices[0].answer if choices else None,
        "usage": {role: dataclasses.asdict(u) for role, u in sum_usage([r.usage for r in records]).items()},
        "wasted": {role: dataclasses.asdict(u) for role, u in wasted.items()},
        "choices": [
            {"index": c.index, "answer": c.answer, "answer_track": c.track_id, "record": r.to_dict()}
            for c, r in zip(choices, records, strict=True)
        ],
    }


@dataclass(frozen=True)
class Reply:
    """The answer to one request: its id, method, creation time and the prompt's tokens."""

    request_id: str
    method: str
    created: int
    prompt_tokens: int

    def completion(self, records: Sequence[ProblemRecord], joint: str) -> bytes:
        """The whole answer, as `POST /v1/chat/completions` returns it without streaming."""
        choices = [choice_of(r, i, joint) for i, r in enumerate(records)]
        body = {
            **self._head("chat.completion"),
            "choices": [
                {
                    "index": c.index,
                    "message": {
                        "role": "assistant",
                        "content": c.content,
                        "reasoning": c.reasoning,
                        "reasoning_content": c.reasoning,
                    },
                    "logprobs": None,
                    "finish_reason": c.finish_reason,
                }
                for c in choices
            ],
            "usage": usage_of(choices, self.prompt_tokens),
            "spectra": spectra_of(self.method, self.request_id, records, choices),
        }
        return encode_json(body)

    def delta(self, index: int, delta: dict[str, Any], spectra: dict[str, Any] | None = None) -> bytes:
        """One chunk of a choice's stream (`spectra`: which track its reasoning comes from)."""
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": None}
        return event({**self._head("chat.completion.chunk"), "choices": [choice], **_named(spectra)})

    def reasoning_delta(self, index: int, text: str, track_id: int) -> bytes:
        delta = {"reasoning": text, "reasoning_content": text}
        return self.delta(index, delta, {"track": track_id})

    def ending(self, records: Sequence[ProblemRecord], joint: str, *, include_usage: bool) -> list[bytes]:
        """The stream's last chunks: each choice's content and finish reason, then one with no
        choice holding `spectra` (and `usage`, when the client asked for it)."""
        choices = [choice_of(r, i, joint) for i, r in enumerate(records)]
        chunks = []
        for c in choices:
            head = self._head("chat.completion.chunk")
            finish = {"index": c.index, "delta": {"content": c.content}, "logprobs": None}
            chunks.append(event({**head, "choices": [{**finish, "finish_reason": c.finish_reason}]}))
        last = {**self._head("chat.completion.chunk"), "choices": []}
        if include_usage:
            last["usage"] = usage_of(choices, self.prompt_tokens)
        last["spectra"] = spectra_of(self.method, self.request_id, records, choices)
        return [*chunks, event(last)]

    def _head(self, kind: str) -> dict[str, Any]:
        return {"id": self.request_id, "object": kind, "created": self.created, "model": self.method}


def _named(spectra: dict[str, Any] | None) -> dict[str, Any]:
    return {"spectra": spectra} if spectra else {}


def event(data: dict[str, Any]) -> bytes:
    """One server-sent event."""
    return b"data: " + encode_json(data) + b"\n\n"


DONE = b"data: [DONE]\n\n"


def error_body(status: int, message: str, param: str | None = None) -> dict[str, Any]:
    """OpenAI's error object: one line in `message`."""
    kind = "invalid_request_error" if status < 500 else "server_error"
    return {"error": {"message": message, "type": kind, "param": param, "code": status}}
