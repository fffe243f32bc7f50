"""The toy pair's training data: conversations rendered as vLLM sees them, built in seeded chunks.

Every conversation is rendered with the real chat template through `engine.serving.chat.ChatFormat`,
and the prompt and the model's part are tokenized separately, as vLLM sees them (prompt text, then
generated tokens). Examples: solutions under several wordings of the instruction (today's prompt
set, SpecReason's exact text, role and method instructions before the problem), ending as
SpecReason's loop expects (`</think>\\n\\boxed{N}` in the last chunk) and, for the answer request of
the older loop, `\\boxed{N}` after `</think>\\n\\n` or the answer prompt. The big model also learns
SpecReason's scoring conversation: one digit, 9 for a right last step, 0 for a wrong one (errors
like a weak model's: off by a little, a wrong digit, a miscopied operand). Seeded: the same chunks
for the same seed. `engine.toy.trainer` trains on them.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import random
from pathlib import Path

from engine.serving.chat import ChatFormat, Message
from engine.toy.task import (
    DEV_SEED,
    MAX_VALUE,
    TRAIN_SEED,
    ToyProblem,
    apply,
    format_step,
    held_out_problems,
    judge_label,
    problem_stream,
)

REPO = Path(__file__).resolve().parents[2]
SPECREASON_PROBLEM = (
    "\nSolve the following math problem efficiently and clearly. Please reason step by step, \n"
    "separate logical reasoning steps with two newline characters (\n\n), and put your final answer "
    "within \\boxed{}.\nProblem: {problem}\n"
)
ONE_LINE_PROBLEM = (
    "Solve the following math problem efficiently and clearly. Please reason step by step, separate logical "
    "reasoning steps with two newline characters (\n\n), and put your final answer within \\boxed{}."
)
SCORE_PARAPHRASE = "Is the last reasoning step correct? Rate it from 0 (wrong) to 9 (correct)."
RIGHT, WRONG = "9", "0"
# The served template's generation prompt ends with `<think>\n` (and it writes an earlier assistant
# turn's `<think>` that way); the seeds' continuation after steps is `<think>` + the steps.
GENERATION_THINK, SEED_THINK = "<think>\n", "<think>"
JUDGE_WEIGHT = 8.0
CHUNK = 4096


def load_texts(prompts_dir: Path) -> dict:
    """The prompt texts the models are trained on, read from a prompts folder (default, roles, methods)."""
    import yaml

    default = yaml.safe_load((prompts_dir / "default" / "templates.yaml").read_text())
    clean = yaml.safe_load((prompts_dir / "clean" / "templates.yaml").read_text())
    roles = yaml.safe_load((prompts_dir / "roles" / "roles.yaml").read_text())
    methods = yaml.safe_load((prompts_dir / "methods" / "methods.yaml").read_text())
    problem_templates = [
        default["problem"].replace("{{", "{").replace("}}", "}"),
        clean["problem"].replace("{{", "{").replace("}}", "}"),
        SPECREASON_PROBLEM,
        ONE_LINE_PROBLEM + "\nProblem: {problem}",
        ONE_LINE_PROBLEM + "\n\n{problem}",
        ONE_LINE_PROBLEM + " {problem}",
        "{problem}",
    ]
    instructions = [*roles.values(), *(m["instruction"] for m in methods.values())]
    return {
        "problem_templates": problem_templates,
        "instructions": instructions,
        "method_descriptions": [m["description"] for m in methods.values()],
        "score": [default["score"], "\n" + default["score"] + "\n", SCORE_PARAPHRASE],
        "score_prefix": [default["score_prefix"], default["score_prefix"].removeprefix("<think>")],
        "answer": default["answer"],
        "select_methods": default["select_methods"],
    }


def problem_message(problem: ToyProblem, texts: dict, rng: random.Random) -> str:
    templates, draw = texts["problem_templates"], rng.random()
    # The two prompt sets users run (`default`, the seeds' indented text, and `clean`) most often.
    template = templates[0] if draw < 0.35 else templates[1] if draw < 0.6 else rng.choice(templates)
    text = template.replace("{problem}", problem.text)
    if rng.random() < 0.3:
        text = f"{rng.choice(texts['instructions']).strip()}\n\n{text}"
    return text


def solution_example(
    problem: ToyProblem,
    chat: ChatFormat,
    texts: dict,
    rng: random.Random,
    slip_rate: float = 0.0,
    lost_after_slip: bool = False,
) -> list:
    """Segments (text, weight) of one solved problem, prompt first (weight 0). With `slip_rate`, each
    step's result has a slipped digit with that probability (the small model's training data)."""
    messages = [Message("user", problem_message(problem, texts, rng))]
    steps, answer = slipped_solution(problem, rng, slip_rate, lost_after_slip)
    chunks = [*steps, f"</think>\n\\boxed{{{answer}}}"]
    if rng.random() < 0.9:
        # As SpecReason's loop asks: the first step after the template's generation prompt
        # (`<think>\n`), a later one after `<think>` and the steps so far, each followed by "\n\n".
        done = 0 if rng.random() < 0.4 else rng.randrange(1, len(chunks))
        opening = GENERATION_THINK if done == 0 else SEED_THINK + "".join(c + "\n\n" for c in chunks[:done])
        return [(chat.render(messages, opening), 0.0), ("\n\n".join(chunks[done:]) + "<|im_end|>", 1.0)]
    # The answer request of `--answer_phase`: thinking closed (or the answer prompt), then \boxed{N}.
    reasoning = "".join(step + "\n\n" for step in steps)
    closing = rng.choice(["</think>\n\n", texts["answer"], "\n\n" + texts["answer"]])
    prompt = chat.render(messages, SEED_THINK + reasoning + closing)
    return [(prompt, 0.0), (f"\\boxed{{{answer}}}<|im_end|>", 1.0)]


def slipped_solution(
    problem: ToyProblem, rng: random.Random, slip_rate: float, lost_after_slip: bool = False
) -> tuple[list[str], int]:
    """The steps and the answer, where each step's result slips one digit with probability
    `slip_rate` and the steps after it go on from the value written.

    Slips are the small model's mistakes by design: they are random, so its samples disagree and
    voting helps (a model that errs by lack of capacity errs the same way every time), and they
    change the last digit, or sometimes the tens, by one, so they survive sampling at temperature
    0.6 with top-p 0.95 (the mass of the wrong digit sits on two tokens, not ten).

    With `lost_after_slip`, every result after the first slip is a random value: a model trained
    on it is unsure of everything it writes once its trace has gone wrong, as a reasoning model
    that has lost its way is (the variant of the task on which DeepConf's confidence can work)."""
    value, steps, slipped = problem.start, [], False
    for kind, operand in problem.operations:
        result = rng.randint(0, MAX_VALUE) if slipped and lost_after_slip else apply(kind, value, operand)
        if rng.random() < slip_rate:
            result, slipped = slip_digit(result, rng), True
        steps.append(format_step(value, kind, operand, result))
        value = result
    return steps, value


def slip_digit(value: int, rng: random.Random) -> int:
    """`value` with its last digit (in 70% of cases, else its tens digit when it has one) moved by
    one, without carrying: 139 -> 138 or 130; 139 -> 129 or 149."""
    digits = list(str(abs(value)))
    at = len(digits) - 2 if len(digits) > 1 and rng.random() >= 0.7 else len(digits) - 1
    digits[at] = str((int(digits[at]) + rng.choice((-1, 1))) % 10)
    slipped = int("".join(digits))
    return -slipped if value < 0 else slipped


def judge_example(problem: ToyProblem, chat: ChatFormat, texts: dict, rng: random.Random) -> list:
    """SpecReason's scoring conversation about one step, right or made wrong; the target is one digit.

    The steps before it are sometimes wrong too (then the right step continues from the value
    written, as `judge_label` says): the judge rates the last step only.
    """
    steps = written_steps(problem, rng)
    index = rng.randrange(len(steps))
    step = steps[index] if rng.random() < 0.5 else corrupt_step(problem, steps[:index], rng)
    right = judge_label(problem, steps[:index], step)
    reasoning = GENERATION_THINK + "\n\n".join([*steps[:index], step]) + ("\n\n" if rng.random() < 0.5 else "")
    messages = [
        Message("user", problem_message(problem, texts, rng)),
        Message("assistant", reasoning),
        Message("user", rng.choice(texts["score"])),
    ]
    prompt = chat.render(messages, rng.choice(texts["score_prefix"]))
    return [(prompt, 0.0), (RIGHT if right else WRONG, JUDGE_WEIGHT)]


def written_steps(problem: ToyProblem, rng: random.Random) -> list[str]:
    """The solution's steps and final chunk; in a quarter of cases one step has a wrong result and the
    steps after it continue from the wrong value."""
    if rng.random() >= 0.25:
        return [*problem.steps(), f"</think>\n\\boxed{{{problem.answer}}}"]
    wrong_at = rng.randrange(len(problem.operations))
    value, steps = problem.start, []
    for i, (kind, operand) in enumerate(problem.operations):
        if value < 0 or (kind == "div" and value % operand):
            return [*problem.steps(), f"</think>\n\\boxed{{{problem.answer}}}"]  # no valid continuation
        result = apply(kind, value, operand)
        if i == wrong_at:
            result = _wrong_number(result, rng)
        steps.append(format_step(value, kind, operand, result))
        value = result
    return [*steps, f"</think>\n\\boxed{{{value}}}"]


def corrupt_step(problem: ToyProblem, previous: list[str], rng: random.Random) -> str:
    """A wrong next step after `previous`, like a weak model's mistakes: a carry or digit error in the
    result, a miscopied number, the wrong operation, or an answer given too early or wrongly."""
    index = len(previous)
    written = [problem.start] + [int(step.rsplit("= ", 1)[1]) for step in previous]
    left = written[-1]
    if index == len(problem.operations):
        return f"</think>\n\\boxed{{{_wrong_number(left, rng)}}}"
    kind, operand = problem.operations[index]
    how = rng.random()
    if how < 0.08:
        return f"</think>\n\\boxed{{{left}}}"
    if how < 0.4:  # the small model's own kind of mistake
        return format_step(left, kind, operand, slip_digit(apply(kind, left, operand), rng))
    if how < 0.65:
        return format_step(left, kind, operand, _wrong_number(apply(kind, left, operand), rng))
    if how < 0.78 and kind != "div":
        other = max(1, operand + rng.choice([-2, -1, 1, 2, 10, -10]))
        return format_step(left, kind, other, apply(kind, left, other))
    if how < 0.9:
        other = max(1, _wrong_number(left, rng))
        result = apply(kind, other, operand) if rng.random() < 0.5 else apply(kind, left, operand)
        return format_step(other, kind, operand, result)
    wrong_kind = rng.choice([k for k in ("add", "sub", "mul") if k != kind])
    return format_step(left, wrong_kind, operand, apply(wrong_kind, left, operand))


def _wrong_number(value: int, rng: random.Random) -> int:
    if value < 0:
        return value + rng.choice([-1, 1])
    for _ in range(20):
        digits = list(str(value))
        how = rng.random()
        if how < 0.5:  # carry errors are the commonest
            wrong = value + rng.choice([-1, 1, -10, 10, -10, 10, -100, 100, -2, 2])
        elif how < 0.8:
            i = rng.randrange(len(digits))
            digits[i] = rng.choice([d for d in "0123456789" if d != digits[i]])
            wrong = int("".join(digits))
        elif how < 0.9 and len(digits) > 1:
            i = rng.randrange(len(digits) - 1)
            digits[i], digits[i + 1] = digits[i + 1], digits[i]
            wrong = int("".join(digits))
        else:
            i = rng.randrange(len(digits))
            wrong = int("".join(digits[:i] + [digits[i]] + digits[i:]))
        if wrong != value and wrong >= 0:
            return wrong
    return value + 1


# ---- data: built in seeded chunks by worker processes, tokenized the way vLLM sees it ----

_WORKER: dict = {}


def _init_worker(tokenizer_dir: str, prompts_dir: str) -> None:
    from transformers import PreTrainedTokenizerFast

    tokenizer = PreTrainedTokenizerFast.from_pretrained(tokenizer_dir)
    _WORKER.update(tokenizer=tokenizer, chat=ChatFormat(tokenizer, thinking=True), texts=load_texts(Path(prompts_dir)))


def _build_chunk(job: tuple) -> list:
    """Examples `chunk*CHUNK ...` of a seeded stream, as (token ids, weights) lists."""
    import numpy as np

    role, seed, chunk, judge_share, slip_rate, lost_after_slip, problem_offset, excluded = job
    rng = random.Random(f"{role}-{seed}-{chunk}")
    stream = problem_stream(TRAIN_SEED * 1000 + seed * 100_000 + chunk + problem_offset)
    chat, texts, tokenizer = _WORKER["chat"], _WORKER["texts"], _WORKER["tokenizer"]
    examples = []
    while len(examples) < CHUNK:
        problem = next(stream)
        if problem.text in excluded:
            continue
        if rng.random() < judge_share:
            examples.append(judge_example(problem, chat, texts, rng))
        else:
            examples.append(solution_example(problem, chat, texts, rng, slip_rate, lost_after_slip))
    flat = [text for segments in examples for text, _ in segments]
    encoded = iter(tokenizer(flat, add_special_tokens=False)["input_ids"])
    out = []
    for segments in examples:
        ids, weights = [], []
        for _, weight in segments:
            piece = next(encoded)
            ids += piece
            weights += [weight] * len(piece)
        # Compact: 2 bytes a token id (vocabulary < 32768) and 1 byte a weight.
        out.append((np.array(ids, dtype=np.int16), np.array(weights, dtype=np.uint8)))
    return out


def build_data(settings: dict, role: str, seed: int, tokenizer_dir: Path, prompts_dir: Path) -> list:
    excluded = frozenset(p.text for p in held_out_problems()) | frozenset(p.text for p in dev_problems())
    count = settings["examples"]
    shares = (
        settings["judge_share"],
        settings.get("slip_rate", 0.0),
        settings.get("lost_after_slip", False),
        settings.get("problem_offset", 0),
    )
    jobs = [(role, seed, c, *shares, excluded) for c in range(math.ceil(count / CHUNK))]
    ctx = multiprocessing.get_context("fork")
    with ctx.Pool(max(1, (os.cpu_count() or 2) // 2), _init_worker, (str(tokenizer_dir), str(prompts_dir))) as pool:
        chunks = pool.map(_build_chunk, jobs)
    return [example for chunk in chunks for example in chunk][:count]


def dev_problems(count: int = 256) -> list[ToyProblem]:
    stream, seen, problems = problem_stream(DEV_SEED), {p.text for p in held_out_problems()}, []
    while len(problems) < count:
        problem = next(stream)
        if problem.text not in seen:
            seen.add(problem.text)
            problems.append(problem)
    return problems
