"""The trained toy process reward model (issue 32): what it reads, what it is taught, and its folders.

It reads what spectra's `PRMScorer` sends a Qwen2.5-Math-PRM (search-and-learn's format): a system
turn, the problem as the user turn, and the assistant turn holding the steps, each followed by the
step tag `<extra_0>`; at every tag it answers [P(bad), P(good)] through the two-layer head of vLLM's
`Qwen2ForProcessRewardModel` (`prm_input`, `engine.toy.tiny_prm`). The same body's language-model
head (tied to the embeddings) was taught to write "+" or "-" after each tag, as Math-Shepherd's
token PRM does, so the body also serves as a causal LM (`prm-token`): one generated token after the
last tag, read from its top logprobs, scores the last step through the prefix cache.

Labels (`labelled_solution`): a step is right when its own computation is right given the steps
before it as written (PRM800K's per-step rating; the toy task's `judge_label`, which the big model's
judge was taught and the benchmarks grade by), so a right step after a slip is right, and the
weakest step (`--agg_strategy min`) says whether a solution slipped anywhere. An empty step (what
the reference's split leaves after a kept "\\n\\n") computes nothing of its own: it is labelled by the
solution it closes, right when every step before it is, so search-and-learn's default `last` score
of a partial solution says whether it slipped anywhere.
"""

from __future__ import annotations

import random

from engine.serving.chat import ChatFormat, Message
from engine.toy.task import ToyProblem, apply, format_step, judge_label
from engine.toy.tiny_prm import STEP_TAG
from engine.toy.training_data import corrupt_step, slip_digit

# search-and-learn's system prompt for Qwen2.5-Math-PRM, as `engine.reasoning.judges.prm` sends it
# (a unit test holds the two renderings equal; the toy layer cannot import the reasoning one).
PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
GOOD_TOKEN, BAD_TOKEN = "+", "-"
# The small model's own mistake (a slipped digit) and the other corruptions of `corrupt_step`,
# a step each; about a third of the steps taught are wrong (a quarter slips, as the small model's).
SLIP_RATE, CORRUPT_RATE = 0.22, 0.12
EMPTY_LAST_SHARE = 0.2


def prm_input(chat: ChatFormat, problem: str, steps: list[str]) -> str:
    """The text the PRM reads: the system turn, the problem, the steps each followed by the tag."""
    messages = [Message("system", PRM_SYSTEM), Message("user", problem)]
    return chat.render(messages, "".join(step + STEP_TAG for step in steps))


def labelled_solution(problem: ToyProblem, rng: random.Random) -> list[tuple[str, bool]]:
    """A solution the small model might write, each step with its label: a step slips a digit at
    `SLIP_RATE`, is corrupted otherwise (`corrupt_step`) at `CORRUPT_RATE`, and the steps after go
    on from the value written; an early answer ends it; sometimes it stops early with an empty step
    (`EMPTY_LAST_SHARE`)."""
    steps: list[str] = []
    labelled = []
    value = problem.start
    for kind, operand in problem.operations:
        draw = rng.random()
        if draw < SLIP_RATE:
            step = format_step(value, kind, operand, slip_digit(apply(kind, value, operand), rng))
        elif draw < SLIP_RATE + CORRUPT_RATE:
            step = corrupt_step(problem, steps, rng)
        else:
            step = format_step(value, kind, operand, apply(kind, value, operand))
        labelled.append((step, judge_label(problem, steps, step)))
        steps.append(step)
        if step.startswith("</think>"):
            return labelled
        value = int(step.rsplit("= ", 1)[1])
    if rng.random() < EMPTY_LAST_SHARE:  # a partial solution as the reference splits it: "...\n\n" -> ""
        cut = rng.randint(1, len(labelled))
        return [*labelled[:cut], ("", all(right for _, right in labelled[:cut]))]
    answer = corrupt_step(problem, steps, rng) if rng.random() < CORRUPT_RATE else f"</think>\n\\boxed{{{value}}}"
    return [*labelled, (answer, judge_label(problem, steps, answer))]
