"""Combine the tracks of one problem: group equivalent answers, vote, and decide early.

Answers are grouped with math-verify (`engine.data.answers.group_equivalent`), except by `speclrm`.
Four ways to vote, registered in `AGGREGATIONS`:
- `speclrm`: SpecLRM's `select_best_result`. Only tracks that finished with their own answer
  vote (a step stated it, finish reason "answer", or its probes agreed on it, "probe"); each votes
  SpecLRM's reading of its text (`engine.data.speclrm_answers`: the first box, integers as integers),
  compared as exact values ("1/2" and "0.5" are two answers, "042" and "42" one). An answer given at
  least twice wins, the first seen among tied ones (`Counter.most_common`); when all differ, the
  track that spent most tokens.
- `majority`: the group with most tracks, any track with an answer voting. Ties go to the group
  holding the track that spent most tokens (SpecLRM's tie-breaker).
- `weighted`: each track counts with its mean step score (1 for tracks that were not scored).
- `first`: the answer of the first track to finish with one.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

from engine.data.answers import group_equivalent
from engine.data.speclrm_answers import speclrm_answer, speclrm_identity
from engine.records import FinishReason, TrackRecord

# A track's weight is its mean step score, so it can never exceed the top score.
MAX_SCORE_WEIGHT = 9.0
# The tracks whose own stated answer SpecLRM's vote counts: a step stated it, or its probes agreed on it.
OWN_ANSWER = (FinishReason.ANSWER, FinishReason.PROBE)


@dataclass(frozen=True)
class AnswerGroup:
    answer: str
    track_ids: tuple[int, ...]
    weight: float
    most_tokens: int
    first_finished_at: float


@dataclass(frozen=True)
class Decision:
    answer: str | None
    votes: dict[str, float]


def track_weight(track: TrackRecord, aggregation: str) -> float:
    if aggregation == "weighted" and track.mean_score is not None:
        return track.mean_score
    return 1.0


def answer_groups(
    tracks: list[TrackRecord], aggregation: str, *, multiple_choice: bool, weights: dict[int, float] | None = None
) -> list[AnswerGroup]:
    """The voting tracks, grouped by equivalent answers (`speclrm`: equal strings), in order of
    first appearance. With `weights` (track id -> weight) only those tracks vote, with those weights."""
    answered = [t for t in tracks if t.answer is not None and (weights is None or t.track_id in weights)]
    if aggregation == "speclrm":
        voted = {t.track_id: speclrm_vote(t, multiple_choice=multiple_choice) for t in answered}
        answered = [t for t in answered if t.finish_reason in OWN_ANSWER and voted[t.track_id] is not None]
        by_value: dict[str, list[int]] = {}
        for i, t in enumerate(answered):
            by_value.setdefault(voted[t.track_id], []).append(i)
        partition, names = list(by_value.values()), list(by_value)
    else:
        partition = group_equivalent([t.answer for t in answered], multiple_choice=multiple_choice)
        names = [answered[members[0]].answer for members in partition]
    groups = []
    for members, name in zip(partition, names, strict=True):
        group = [answered[i] for i in members]
        groups.append(
            AnswerGroup(
                answer=name,
                track_ids=tuple(t.track_id for t in group),
                weight=sum(track_weight(t, aggregation) if weights is None else weights[t.track_id] for t in group),
                most_tokens=max(t.thinking_tokens + t.answer_tokens for t in group),
                first_finished_at=min(t.finished_at or float("inf") for t in group),
            )
        )
    return groups


def speclrm_vote(track: TrackRecord, *, multiple_choice: bool) -> str | None:
    """What a track votes under `speclrm`: SpecLRM's reading of its steps, or of its probed answer."""
    if track.finish_reason == FinishReason.PROBE and track.answer is not None:
        return speclrm_identity(track.answer, choices=multiple_choice)
    return speclrm_answer("\n\n".join(step.text for step in track.steps), choices=multiple_choice)


def _by_weight(groups: list[AnswerGroup]) -> AnswerGroup | None:
    return max(groups, key=lambda g: (g.weight, g.most_tokens), default=None)


def _by_speclrm(groups: list[AnswerGroup]) -> AnswerGroup | None:
    """SpecLRM's pick: the most common answer given at least twice, the first seen among tied ones;
    when every answer differs, the one of the track that spent most tokens (the first such)."""
    if any(g.weight > 1 for g in groups):
        return max(groups, key=lambda g: g.weight)
    return max(groups, key=lambda g: g.most_tokens, default=None)


def _by_first(groups: list[AnswerGroup]) -> AnswerGroup | None:
    return min(groups, key=lambda g: g.first_finished_at, default=None)


AGGREGATIONS: dict[str, Callable[[list[AnswerGroup]], AnswerGroup | None]] = {
    "speclrm": _by_speclrm,
    # Most votes, then the group holding the longest track.
    "majority": _by_weight,
    "weighted": _by_weight,
    "first": _by_first,
}


def decide(
    tracks: list[TrackRecord], aggregation: str, *, multiple_choice: bool, weights: dict[int, float] | None = None
) -> Decision:
    """The chosen answer of a problem and the votes each answer got (`weights`: see `answer_groups`)."""
    groups = answer_groups(tracks, aggregation, multiple_choice=multiple_choice, weights=weights)
    winner = AGGREGATIONS[aggregation](groups)
    votes = {g.answer: g.weight for g in groups}
    return Decision(answer=winner.answer if winner else None, votes=votes)


def leader_confidence(leader_votes: int, runner_up_votes: int) -> float:
    """Adaptive-Consistency's Beta stopping rule (Aggarwal et al. 2023): with a uniform prior on the
    shares of the two largest answers, P(p_leader > p_runner_up | votes) = 1 - I_0.5(v1 + 1, v2 + 1).
    For integers that is the chance of at most v1 heads in v1 + v2 + 1 fair coin flips."""
    flips = leader_votes + runner_up_votes + 1
    return sum(math.comb(flips, heads) for heads in range(leader_votes + 1)) / 2**flips


def outcome_settled(
    finished: list[TrackRecord],
    running: int,
    aggregation: str,
    *,
    multiple_choice: bool,
    share: float | None = None,
    confidence: float | None = None,
) -> bool:
    """True when the tracks still `running` (or not started) can no longer change the answer
    `finished` ones chose, or when the vote is likely enough settled.

    The leader must beat the runner-up by more than the most the running tracks could add
    (a tie could still flip on tokens). With `share`, it is enough that the leader already
    holds that share of the weight all tracks could cast; with `confidence`, that
    `leader_confidence` of the two largest groups' track counts (not weights) reaches it.
    """
    groups = answer_groups(finished, aggregation, multiple_choice=multiple_choice)
    if aggregation == "first":
        return bool(groups)
    if not groups:
        return running == 0
    per_track = MAX_SCORE_WEIGHT if aggregation == "weighted" else 1.0
    ranked = sorted((g.weight for g in groups), reverse=True)
    leader, runner_up = ranked[0], (ranked[1] if len(ranked) > 1 else 0.0)
    still_open = running * per_track
    if leader > runner_up + still_open:
        return True
    if share is not None and leader >= share * (sum(ranked) + still_open):
        return True
    if confidence is not None:
        counts = sorted((len(g.track_ids) for g in groups), reverse=True) + [0]
        return leader_confidence(counts[0], counts[1]) >= confidence
    return False
