"""What token confidence costs when a strategy asks for it (issue 22): the engine's CPU per step and
the record's size per token, against a step without it.

    python -m benchmarks.confidence_cost [--tokens 64] [--top_k 20] [--steps 2000]

A step of `--tokens` tokens with `--top_k` logprobs each, as vLLM sends them, is read into a
`Choice`, turned into a kept `StepRecord` (token confidences and sampled logprobs) and encoded as
its JSON line; the same without logprobs is the baseline. vLLM's own cost of computing top-k
logprobs is on the server and not measured here.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from dataclasses import asdict

from engine.reasoning.policies.base import kept_step
from engine.records import RequestCost, Role, StepOutcome
from engine.serving.client import Completion
from engine.serving.models import Purpose, Reply
from engine.serving.responses import Choice


def completion(tokens: int, top_k: int, rng: random.Random) -> Completion:
    words = [f"w{rng.randrange(2000)}" for _ in range(tokens)]
    choice = Choice(text=" ".join(words), finish_reason="stop", stop_reason="\n\n", tokens=words)
    if top_k:
        for word in words:
            top = {f"t{rng.randrange(50000)}": -rng.uniform(0.01, 12.0) for _ in range(top_k - 1)}
            top[word] = -rng.uniform(0.0, 1.0)
            choice.top_logprobs.append(top)
            choice.token_logprobs.append(top[word])
    return Completion([choice], "m", "u", 100, tokens, 0.0, None)


def measure(tokens: int, top_k: int, steps: int) -> tuple[float, float]:
    """Microseconds of engine CPU per kept step, and bytes of its JSON line per token."""
    rng = random.Random(0)
    # As the track's handle returns them: measured when the track asked for top-k logprobs.
    cost = RequestCost(Role.SMALL, Purpose.DRAFT, "u", "m", 100, tokens)
    replies = [Reply(completion(tokens, top_k, rng), cost, measured=bool(top_k)) for _ in range(steps)]
    started = time.process_time()
    written = StepOutcome.WRITTEN
    lines = [
        json.dumps(asdict(kept_step(r, Role.SMALL, 0, [r.cost], 0.0, delimiter="\n\n", outcome=written)))
        for r in replies
    ]
    cpu_us = 1e6 * (time.process_time() - started) / steps
    return cpu_us, sum(len(line) for line in lines) / (steps * tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m benchmarks.confidence_cost", description=__doc__.splitlines()[0]
    )
    parser.add_argument("--tokens", type=int, default=64)
    parser.add_argument("--top_k", type=int, default=20)
    parser.add_argument("--steps", type=int, default=2000)
    args = parser.parse_args(argv)
    base_us, base_bytes = measure(args.tokens, 0, args.steps)
    with_us, with_bytes = measure(args.tokens, args.top_k, args.steps)
    print(f"a step of {args.tokens} tokens, top-{args.top_k} logprobs, {args.steps} steps")
    extra_us = with_us - base_us
    print(f"engine CPU per kept step: {base_us:.1f} us without confidence, {with_us:.1f} us with (+{extra_us:.1f} us)")
    print(f"record bytes per token:   {base_bytes:.1f} without, {with_bytes:.1f} with (+{with_bytes - base_bytes:.1f})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
