"""Speculative Thinking (`--policy takeover`) on scripted fake servers, against its authors' code
(uservan/speculative_thinking, speculative/speculative_vllm.py, config/1b_32b.yml): the small model's
peek after a paragraph break is discarded, the big model writes that position on a cue word found as
the reference finds it, its verify turn and the recap; every text, token and cost computed by hand."""

import re

import pytest

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.errors import UsageError
from engine.reasoning.policies.takeover import RECAP_TOKENS, CueWords, TakeoverSettings
from engine.reasoning.settings import ReasoningConfig
from engine.records import ModelUsage, StepOutcome
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import run_one_track

PROBLEM = Problem(id="p1", problem="What is 6 * 7?", answer="42", choices=None)
PROMPTS = load_prompt_set("default")
WORDS = CueWords(
    negative=PROMPTS.takeover_words("negative"),
    verify=PROMPTS.takeover_words("verify"),
    positive=PROMPTS.takeover_words("positive"),
    recap=PROMPTS.render_takeover_recap(),
)
WRITTEN, TAKEN_OVER = StepOutcome.WRITTEN, StepOutcome.TAKEN_OVER


def words(text, **reply):
    """A reply whose tokens are the text's words, each with the space before it."""
    return Reply(text=text, tokens=re.findall(r" ?\S+", text), **reply)


def paragraph(text):
    return words(text, stop_reason="\n\n")


def eos(text):
    return words(text)  # finish "stop" without a stop string: the end of the sequence


def cut(text):
    return words(text, finish_reason="length")


def test_the_prompt_sets_cue_words_are_the_reference_s_three_lists():
    # config/1b_32b.yml TARGET_VALIDATION_KEYWORDS, and its help_recap_words.
    assert WORDS.negative == ("wait", "alternatively", "hold on", "another")
    assert WORDS.verify == ("verify", "think again", "recap", "check")
    assert WORDS.positive == ("yeah", "yes", "final answer", "confident")
    assert WORDS.recap == "Let me check whether there are some wrong steps:"


@pytest.mark.parametrize(
    ("peek", "found", "leaning"),
    [
        # spe_utils.py: lower-cased, anywhere in the peek, inside words too.
        ("so x = 3. Wait, no", ["wait"], -1),
        ("Another way: 6 * 7", ["another"], -1),
        ("We checked it twice", ["check"], -1),
        ("HOLD ON, let me think again", ["hold on", "think again"], -1),
        ("Yes, I am confident", ["yes", "confident"], 1),
        # one positive, one negative: as many and some counts as negative
        ("yes, but wait", ["wait", "yes"], -1),
        # two positives against one verify word: positive
        ("Yeah, yes, let me verify", ["verify", "yeah", "yes"], 1),
        # "Hmm" and "But wait ..." at the start are no cue unless a listed word is in them
        ("Hmm, 6 * 7 = 42", [], 0),
        ("so the product is 42", [], 0),
    ],
)
def test_cue_words_are_found_and_weighed_as_the_reference_does(peek, found, leaning):
    assert WORDS.found(peek) == found
    assert WORDS.leaning(peek) == leaning


class Script:
    """Replies by purpose, in order, recording every request body."""

    def __init__(self, peeks, drafts, rewrites):
        self.replies = {"peek": list(peeks), "draft": list(drafts), "rewrite": list(rewrites)}
        self.bodies = {"peek": [], "draft": [], "rewrite": []}

    def responder(self, purpose):
        def reply(body):
            self.bodies[purpose].append(body)
            return self.replies[purpose].pop(0)

        return reply


async def run(make_models, script, settings=None, config=ReasoningConfig()):
    small = FakeOpenAIServer(by_purpose={p: script.responder(p) for p in ("peek", "draft")})
    big = FakeOpenAIServer(by_purpose={"rewrite": script.responder("rewrite")})
    async with small as s, big as b:
        models = make_models(big=b, small=s)
        return await run_one_track(models, PROBLEM, PROMPTS, config, policy="takeover", settings=settings, seed=5)


def reasoning(record):
    return "".join(step.text for step in record.steps)


async def test_on_a_cue_the_peek_is_discarded_and_the_big_model_writes_that_position(make_models):
    script = Script(
        # after paragraph 0: a cue ("Wait") in the peek; after paragraph 2: none
        peeks=[words("Wait, 6 * 7 is not 48"), words("So the answer is 42")],
        drafts=[paragraph("We multiply 6 by 7 to get 48."), paragraph(" as 7 sixes make 42."), eos("So \\boxed{42}.")],
        rewrites=[cut("Let us redo it: 6 * 7 = 42,")],
    )
    record = await run(make_models, script)
    steps = record.steps
    assert [(s.writer, s.outcome) for s in steps] == [
        ("small", WRITTEN),
        ("big", TAKEN_OVER),
        ("small", WRITTEN),
        ("small", WRITTEN),
    ]
    # The small model's reflective opening is gone: the big model wrote that position, and the
    # small model went on from the big model's words.
    assert reasoning(record) == (
        "We multiply 6 by 7 to get 48.\n\nLet us redo it: 6 * 7 = 42, as 7 sixes make 42.\n\nSo \\boxed{42}."
    )
    assert "Wait" not in reasoning(record)
    assert steps[1].detail == {"why": "cue", "cues": ["wait"], "peek": "Wait, 6 * 7 is not 48"}
    assert steps[0].detail is steps[2].detail is steps[3].detail is None
    assert record.finish_reason == "answer" and record.answer == "42"
    # The peek and the big model's opening: 20 tokens from the same place, no stop, top_k 50.
    (first_peek, second_peek), (opening,) = script.bodies["peek"], script.bodies["rewrite"]
    after_first = "We multiply 6 by 7 to get 48.\n\n"
    assert first_peek["prompt"].endswith(after_first) and opening["prompt"] == first_peek["prompt"]
    assert first_peek["max_tokens"] == opening["max_tokens"] == 20 and "stop" not in opening
    assert first_peek["top_k"] == opening["top_k"] == 50
    assert [b["stop"] for b in script.bodies["draft"]] == [["\n\n"]] * 3
    assert script.bodies["draft"][1]["prompt"].endswith(after_first + "Let us redo it: 6 * 7 = 42,")
    # Without a cue the peek is discarded too, and the small model writes the paragraph anew.
    assert second_peek["prompt"] == script.bodies["draft"][2]["prompt"]
    # Costs (the fake's 5 prompt tokens a request): each peek is wasted on the step it was made for
    # (7 and 5 tokens); only kept tokens count towards the budget.
    assert steps[1].usage == {"big": ModelUsage(5, 9, 1)} and steps[1].wasted == {"small": ModelUsage(5, 7, 1)}
    assert steps[3].usage == {"small": ModelUsage(5, 2, 1)} and steps[3].wasted == {"small": ModelUsage(5, 5, 1)}
    assert [s.tokens for s in steps] == [8, 9, 5, 2] and record.thinking_tokens == 24
    assert record.wasted == {"small": ModelUsage(10, 12, 2)}


async def test_the_big_model_verifies_for_125_tokens_more_and_recaps_after_15_negative_openings(make_models):
    # Every peek holds a cue word; every big opening leans negative ("wait, no"); the first also holds
    # "check" (a verify word), so the big model writes 125 tokens more before the small model goes on.
    # Any listed word anywhere in a peek is a cue: a positive one, or one inside a word.
    peeks = [words("so 6 * 7 = 42, yes")] + [words("or another way")] * 14
    openings = [cut("Let me check: wait, no")] + [cut("wait, no")] * 14
    verify_turn = cut("6 * 7 = 42")
    recap = cut("all steps hold")
    drafts = [paragraph(f"p{i}") for i in range(16)] + [eos("So \\boxed{42}.")]
    script = Script(peeks, drafts, [openings[0], verify_turn, *openings[1:], recap])
    record = await run(make_models, script)
    big = [s for s in record.steps if s.writer == "big"]
    assert [s.detail["why"] for s in big] == ["cue", "verify"] + ["cue"] * 14 + ["recap"]
    rewrites = script.bodies["rewrite"]
    assert [b["max_tokens"] for b in rewrites] == [20, RECAP_TOKENS] + [20] * 14 + [125]
    assert rewrites[1]["prompt"].endswith("p0\n\nLet me check: wait, no")
    # After the 15th negative opening, the next break gets the recap words, then the big model's
    # recap, with no peek; the small model then writes on.
    assert rewrites[-1]["prompt"].endswith("p15\n\nLet me check whether there are some wrong steps:")
    assert big[-1].text == "Let me check whether there are some wrong steps:all steps hold"
    assert len(script.bodies["peek"]) == 15
    assert record.steps[-1].writer == "small" and record.answer == "42"


async def test_takeover_every_hands_every_nth_opening_to_the_big_model_without_a_peek(make_models):
    script = Script(
        peeks=[words("so far so good")] * 2,
        drafts=[paragraph("a"), paragraph("b"), paragraph(" c"), eos("So \\boxed{42}.")],
        rewrites=[cut("B")],
    )
    record = await run(make_models, script, TakeoverSettings(takeover_every=2))
    assert [(s.writer, s.detail) for s in record.steps] == [
        ("small", None),  # break 1 follows: peeked, no cue
        ("small", None),  # break 2 follows: the big model's, no peek
        ("big", {"why": "every"}),
        ("small", None),  # break 3 follows: peeked, no cue
        ("small", None),
    ]
    assert reasoning(record) == "a\n\nb\n\nB c\n\nSo \\boxed{42}."
    assert len(script.bodies["peek"]) == 2


async def test_the_big_model_s_turn_stops_at_the_budget(make_models):
    script = Script(peeks=[words("wait")], drafts=[paragraph("one two three")], rewrites=[cut("B C")])
    record = await run(make_models, script, config=ReasoningConfig(token_budget=5))
    assert script.bodies["rewrite"][0]["max_tokens"] == 2  # 20 asked, 2 left in the budget
    assert record.finish_reason == "budget" and record.thinking_tokens == 5


def test_takeover_settings_refuse_what_cannot_work():
    with pytest.raises(UsageError, match="--takeover_every must be at least 1"):
        TakeoverSettings(takeover_every=0).validate()
    with pytest.raises(UsageError, match="--takeover_peek_tokens must be at least 1"):
        TakeoverSettings(takeover_peek_tokens=0).validate()
