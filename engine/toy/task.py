"""A synthetic multi-step arithmetic task that small trained models can really solve (issue 13).

A problem is a chain of 3 to 6 operations on small integers ("Start with 57. Add 33. Multiply
by 2. Subtract 15. What is the result?"); its solution is one step per operation ("57 + 33 = 90"),
the steps separated by "\\n\\n" as the seeds expect, then `</think>` and `\\boxed{N}` in the same
chunk, so SpecReason's step loop (a step ends only at "\\n\\n"; thinking ends at a step with
"boxed") stops on it. Problems come from a seed; train and test use different seeds and the test
problems are removed from the training stream by text, so the two never overlap.

Pure Python with no spectra imports beyond the standard library: the training script runs it on a
machine that has only torch and transformers.
"""

from __future__ import annotations

import random
import re
from collections.abc import Iterator
from dataclasses import dataclass

TEST_SEED = 13_000
TRAIN_SEED = 13_001
DEV_SEED = 13_002
TEST_SIZE = 500
MIN_OPS, MAX_OPS = 3, 6
MAX_VALUE = 999
FINAL_CHUNK = "</think>\n\\boxed{{{answer}}}"

# (verb in the problem, symbol in the step)
OPERATIONS = {"add": ("Add", "+"), "sub": ("Subtract", "-"), "mul": ("Multiply by", "*"), "div": ("Divide by", "/")}
STEP_PATTERN = re.compile(r"^(-?\d+) ([-+*/]) (\d+) = (-?\d+)$")


@dataclass(frozen=True)
class ToyProblem:
    """A start value and the operations applied to it, in order, as (kind, operand)."""

    start: int
    operations: tuple[tuple[str, int], ...]

    @property
    def text(self) -> str:
        said = " ".join(f"{OPERATIONS[kind][0]} {operand}." for kind, operand in self.operations)
        return f"Start with {self.start}. {said} What is the result?"

    def values(self) -> list[int]:
        """The running value after each operation (the last is the answer)."""
        value, values = self.start, []
        for kind, operand in self.operations:
            value = apply(kind, value, operand)
            values.append(value)
        return values

    @property
    def answer(self) -> int:
        return self.values()[-1]

    def steps(self) -> list[str]:
        """The reasoning steps, one per operation: "57 + 33 = 90"."""
        before = [self.start, *self.values()]
        return [
            format_step(before[i], kind, operand, before[i + 1]) for i, (kind, operand) in enumerate(self.operations)
        ]

    def solution(self) -> str:
        """The assistant's reasoning after `<think>\\n`: the steps, then the chunk that closes thinking."""
        return "\n\n".join([*self.steps(), FINAL_CHUNK.format(answer=self.answer)])


def apply(kind: str, value: int, operand: int) -> int:
    if kind == "add":
        return value + operand
    if kind == "sub":
        return value - operand
    if kind == "mul":
        return value * operand
    if kind == "div":
        return value // operand
    raise ValueError(f"unknown operation {kind!r}")


def format_step(left: int, kind: str, operand: int, result: int) -> str:
    return f"{left} {OPERATIONS[kind][1]} {operand} = {result}"


def step_is_correct(step: str) -> bool:
    """Whether a step of the form "a op b = c" states a true equation (exact division only)."""
    match = STEP_PATTERN.match(step.strip())
    if match is None:
        return False
    left, symbol, operand, result = int(match[1]), match[2], int(match[3]), int(match[4])
    kind = next(k for k, (_, s) in OPERATIONS.items() if s == symbol)
    if kind == "div" and (operand == 0 or left % operand):
        return False
    return apply(kind, left, operand) == result


def random_problem(rng: random.Random) -> ToyProblem:
    """One problem; every running value stays in 0..MAX_VALUE and every division is exact."""
    value = rng.randint(2, 99)
    start, operations = value, []
    for _ in range(rng.randint(MIN_OPS, MAX_OPS)):
        kind, operand = _random_operation(rng, value)
        operations.append((kind, operand))
        value = apply(kind, value, operand)
    return ToyProblem(start=start, operations=tuple(operations))


def _random_operation(rng: random.Random, value: int) -> tuple[str, int]:
    while True:
        kind = rng.choice(("add", "sub", "mul", "div"))
        if kind == "add" and value + 1 <= MAX_VALUE:
            return kind, rng.randint(1, min(99, MAX_VALUE - value))
        if kind == "sub" and value >= 2:
            return kind, rng.randint(1, min(99, value - 1))
        if kind == "mul" and 2 <= value <= MAX_VALUE // 2:
            return kind, rng.randint(2, min(9, MAX_VALUE // value))
        if kind == "div":
            divisors = [d for d in range(2, 10) if value % d == 0 and value > d]
            if divisors:
                return kind, rng.choice(divisors)


def judge_label(problem: ToyProblem, previous: list[str], step: str) -> bool:
    """Whether `step` is the right next step after the steps `previous` (as written, right or wrong):
    the operation the problem names next, applied to the last value written, computed exactly; or,
    after the last operation, the last value written in `\\boxed{}`."""
    written = _last_value(previous, problem.start)
    index = len(previous)
    if index == len(problem.operations):
        boxed = re.search(r"\\boxed\{(-?\d+)\}", step)
        return boxed is not None and written is not None and int(boxed[1]) == written
    if index > len(problem.operations) or written is None:
        return False
    kind, operand = problem.operations[index]
    return step.strip() == format_step(written, kind, operand, apply(kind, written, operand))


def _last_value(previous: list[str], start: int) -> int | None:
    if not previous:
        return start
    match = STEP_PATTERN.match(previous[-1].strip())
    return int(match[4]) if match else None


def problem_stream(seed: int) -> Iterator[ToyProblem]:
    rng = random.Random(seed)
    while True:
        yield random_problem(rng)


def held_out_problems(count: int = TEST_SIZE) -> list[ToyProblem]:
    """The held-out problems: the first `count` distinct problems of the test seed."""
    return _distinct(problem_stream(TEST_SEED), count, exclude=set())


def train_problems(count: int, *, seed: int = TRAIN_SEED, exclude: set[str] | None = None) -> list[ToyProblem]:
    """`count` distinct problems of `seed`, none of whose texts is in `exclude` (the test set by default)."""
    excluded = {p.text for p in held_out_problems()} if exclude is None else exclude
    return _distinct(problem_stream(seed), count, exclude=excluded)


def _distinct(stream: Iterator[ToyProblem], count: int, *, exclude: set[str]) -> list[ToyProblem]:
    seen = set(exclude)
    problems = []
    for problem in stream:
        if len(problems) == count:
            break
        if problem.text not in seen:
            seen.add(problem.text)
            problems.append(problem)
    return problems
