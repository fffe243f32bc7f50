"""The seed of every problem, track and search request: the run's `--seed`, the problem and the repeat.

The problem's id is folded in, so two problems never share a random stream: with `--seed 7` track k
of every problem would otherwise get the same vLLM seed and SplitReason's random switch the same
coins (the same writer pattern on every problem). Runs stay reproducible: a seed depends only on
the run's seed, the problem's id, the repeat and the track, never on the order of work.
"""

from __future__ import annotations

import hashlib

SEED_SPACE = 2**32


def problem_seed(base_seed: int | None, problem_id: str, repeat_id: int) -> int:
    """32 bits of sha256("base:problem:repeat"): RAST's per-sample seed, the base of every other."""
    digest = hashlib.sha256(f"{base_seed}:{problem_id}:{repeat_id}".encode()).digest()
    return int.from_bytes(digest[:4], "big")


def track_seed(base_seed: int | None, problem_id: str, repeat_id: int, track_id: int) -> int | None:
    """The seed of one track: distinct per problem, repeat and track; None leaves vLLM unseeded."""
    return None if base_seed is None else (problem_seed(base_seed, problem_id, repeat_id) + track_id) % SEED_SPACE
