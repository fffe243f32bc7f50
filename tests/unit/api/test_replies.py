"""A record as the client reads it: the answer track's reasoning and content, usage, and `spectra`."""

import json

from engine.api.replies import Reply, answer_track, choice_of, step_joint
from engine.records import ModelUsage, ProblemRecord, StepRecord, TrackRecord
from engine.run.config import ModelConfig, RunConfig


def track(track_id, texts, answer=None, *, finish="answer", answer_text="", answer_tokens=0):
    steps = [StepRecord(index=i, text=t, writer="small", tokens=len(t.split())) for i, t in enumerate(texts)]
    return TrackRecord(
        track_id=track_id, steps=steps, answer=answer, finish_reason=finish, answer_text=answer_text,
        answer_tokens=answer_tokens, thinking_tokens=sum(s.tokens for s in steps),
        usage={"small": ModelUsage(10, 5, 2)}, wasted={"big": ModelUsage(3, 1, 1)} if track_id else {},
    )  # fmt: skip


def record(tracks, answer):
    return ProblemRecord(
        run_id="r", dataset="api", problem_id="chatcmpl-1", repeat_id=0, runner="spec", problem="p",
        reference_answer=None, tracks=tracks, answer=answer, usage={"small": ModelUsage(20, 10, 4)},
    )  # fmt: skip


def test_the_answer_track_is_the_first_with_the_problems_answer():
    tracks = [track(0, ["a"], "5"), track(1, ["b"], "4"), track(2, ["c"], "4")]
    assert answer_track(record(tracks, "4")).track_id == 1
    assert answer_track(record([track(0, []), track(1, ["b"])], None)).track_id == 1


def test_what_follows_the_closed_thinking_is_the_content():
    choice = choice_of(record([track(0, ["2 + 2 = 4", "</think>\n\\boxed{4}"], "4")], "4"), 0, "\n\n")
    assert (choice.reasoning, choice.content, choice.finish_reason) == ("2 + 2 = 4", "\\boxed{4}", "stop")
    assert (choice.reasoning_tokens, choice.completion_tokens) == (7, 7)  # the steps' tokens (a word each)


def test_an_answer_written_after_thinking_is_the_content():
    written = track(0, ["2 + 2 = 4"], "4", answer_text="So \\boxed{4}.", answer_tokens=3)
    choice = choice_of(record([written], "4"), 0, "\n\n")
    assert (choice.reasoning, choice.content, choice.completion_tokens) == ("2 + 2 = 4", "So \\boxed{4}.", 8)


def test_an_answer_read_from_the_steps_is_the_content_in_a_box():
    choice = choice_of(record([track(0, ["2 + 2 = 4", "so it is \\boxed{4}"], "4")], "4"), 0, "\n\n")
    assert (choice.reasoning, choice.content) == ("2 + 2 = 4\n\nso it is \\boxed{4}", "\\boxed{4}")


def test_a_track_out_of_tokens_with_no_answer_ends_its_choice_with_length():
    choice = choice_of(record([track(0, ["2 + 2 ="], finish="budget")], None), 0, "\n\n")
    assert (choice.content, choice.finish_reason) == ("", "length")
    assert choice_of(record([], None), 0, "\n\n").track_id is None


def test_the_steps_join_as_the_method_writes_them():
    config = RunConfig(runner="x", output_dir="", models={"big": ModelConfig("b"), "small": ModelConfig("s")})
    assert step_joint(config) == "\n\n"
    assert step_joint(RunConfig(runner="x", output_dir="", models={}, policy="random_switch")) == ""
    assert step_joint(RunConfig(runner="x", output_dir="", models={}, strategy="best_of_n")) == "\n\n"


def test_the_completion_counts_the_prompt_once_and_holds_every_spend_and_record():
    records = [record([track(0, ["2 + 2 = 4", "</think>\n\\boxed{4}"], "4"), track(1, ["x"], "5")], "4")]
    body = json.loads(Reply("chatcmpl-1", "spec", 7, prompt_tokens=12).completion(records, "\n\n"))
    message = body["choices"][0]["message"]
    assert message == {
        "role": "assistant", "content": "\\boxed{4}", "reasoning": "2 + 2 = 4", "reasoning_content": "2 + 2 = 4"
    }  # fmt: skip
    assert body["usage"] == {
        "prompt_tokens": 12, "completion_tokens": 7, "total_tokens": 19,
        "completion_tokens_details": {"reasoning_tokens": 7},
    }  # fmt: skip
    spectra = body["spectra"]
    assert (spectra["answer"], spectra["usage"], spectra["wasted"]) == (
        "4", {"small": {"prompt_tokens": 20, "completion_tokens": 10, "requests": 4}},
        {"big": {"prompt_tokens": 3, "completion_tokens": 1, "requests": 1}},
    )  # fmt: skip
    (choice,) = spectra["choices"]
    assert choice["answer_track"] == 0 and ProblemRecord.from_dict(choice["record"]) == records[0]
    assert (body["id"], body["object"], body["model"]) == ("chatcmpl-1", "chat.completion", "spec")


def events(chunks):
    return [json.loads(c.removeprefix(b"data: ")) for c in chunks]


def test_the_streams_ending_is_each_choices_content_then_spectra_and_the_usage_asked_for():
    records = [record([track(0, ["2 + 2 = 4", "</think>\n\\boxed{4}"], "4")], "4")] * 2
    reply = Reply("chatcmpl-1", "spec", 7, 12)
    first, second, last = events(reply.ending(records, "\n\n", include_usage=True))
    assert first["choices"] == [
        {"index": 0, "delta": {"content": "\\boxed{4}"}, "logprobs": None, "finish_reason": "stop"}
    ]
    assert second["choices"][0]["index"] == 1
    assert last["choices"] == [] and last["usage"]["completion_tokens"] == 14 and last["spectra"]["answer"] == "4"
    assert "usage" not in events(reply.ending(records, "\n\n", include_usage=False))[-1]
