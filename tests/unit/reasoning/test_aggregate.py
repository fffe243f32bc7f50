"""Voting over tracks and the early-stop rule, on hand-made track records."""

import pytest

from engine.reasoning.aggregate import decide, leader_confidence, outcome_settled
from engine.records import StepRecord, TrackRecord


def track(track_id, answer, *, tokens=10, scores=(), finished_at=None, text=None):
    """A track that stated `answer`: its last step boxes it (`text`: that step's text instead)."""
    steps = [StepRecord(index=i, text="s", writer="small", tokens=1, score=s) for i, s in enumerate(scores)]
    if answer is not None or text is not None:
        boxed = f"So \\boxed{{{answer}}}." if text is None else text
        steps.append(StepRecord(index=len(steps), text=boxed, writer="small", tokens=1))
    return TrackRecord(
        track_id=track_id,
        policy="spec",
        answer=answer,
        thinking_tokens=tokens,
        steps=steps,
        finish_reason="answer",
        finished_at=float(track_id if finished_at is None else finished_at),
    )


def test_majority_groups_equivalent_answers():
    tracks = [track(0, "\\frac{1}{2}"), track(1, "0.5"), track(2, "3"), track(3, None)]
    decision = decide(tracks, "majority", multiple_choice=False)
    assert decision.answer == "\\frac{1}{2}"
    assert decision.votes == {"\\frac{1}{2}": 2.0, "3": 1.0}


def test_majority_tie_goes_to_the_group_with_the_longest_track():
    tracks = [track(0, "1", tokens=50), track(1, "2", tokens=80), track(2, "1", tokens=10), track(3, "2", tokens=5)]
    assert decide(tracks, "majority", multiple_choice=False).answer == "2"


def test_weighted_vote_uses_mean_step_scores():
    tracks = [track(0, "1", scores=(2, 2)), track(1, "1", scores=(3,)), track(2, "7", scores=(9, 8))]
    decision = decide(tracks, "weighted", multiple_choice=False)
    assert decision.votes == {"1": pytest.approx(5.0), "7": pytest.approx(8.5)}
    assert decision.answer == "7"


def test_first_finished_wins_under_first():
    tracks = [track(0, "5", finished_at=9.0), track(1, "6", finished_at=2.0), track(2, "5", finished_at=3.0)]
    assert decide(tracks, "first", multiple_choice=False).answer == "6"


def test_no_answers_means_no_decision():
    decision = decide([track(0, None), track(1, None)], "majority", multiple_choice=False)
    assert decision.answer is None and decision.votes == {}


def test_multiple_choice_groups_letters():
    decision = decide([track(0, "B"), track(1, "(B)"), track(2, "C")], "majority", multiple_choice=True)
    assert decision.answer == "B" and decision.votes == {"B": 2.0, "C": 1.0}


@pytest.mark.parametrize(
    ("answers", "running", "settled"),
    [
        (["4", "4", "4"], 2, True),  # 3 > 0 + 2
        (["4", "4"], 2, False),  # 2 > 0 + 2 fails: two running tracks could tie
        (["4", "4", "5"], 1, False),  # 2 > 1 + 1 fails: a tie could still flip on tokens
        (["4", "4", "5"], 0, True),
        ([], 3, False),
    ],
)
def test_majority_settles_only_when_the_leader_cannot_be_caught(answers, running, settled):
    finished = [track(i, a) for i, a in enumerate(answers)]
    assert outcome_settled(finished, running, "majority", multiple_choice=False) is settled


def test_share_settles_early_once_the_leader_holds_it():
    finished = [track(0, "4"), track(1, "4")]
    # 2 of (2 cast + 2 open) = 0.5 < 0.6; with 1 open 2/3 >= 0.6
    assert not outcome_settled(finished, 2, "majority", multiple_choice=False, share=0.6)
    assert outcome_settled(finished, 1, "majority", multiple_choice=False, share=0.6)


def test_weighted_counts_running_tracks_at_the_top_score():
    finished = [track(0, "4", scores=(9,)), track(1, "4", scores=(9,))]
    assert not outcome_settled(finished, 2, "weighted", multiple_choice=False)  # 18 > 18 fails
    assert outcome_settled(finished, 1, "weighted", multiple_choice=False)


def test_first_settles_at_the_first_answer():
    assert outcome_settled([track(0, "1")], 5, "first", multiple_choice=False)
    assert not outcome_settled([track(0, None)], 5, "first", multiple_choice=False)


def test_speclrm_votes_only_tracks_that_stated_their_answer_and_compares_exact_strings():
    budget = track(3, "0.5", tokens=500)
    budget.finish_reason = "budget"  # its answer was asked for after the budget ran out: no vote
    tracks = [track(0, "\\frac{1}{2}", tokens=10), track(1, "0.5", tokens=20), track(2, "0.5", tokens=5), budget]
    decision = decide(tracks, "speclrm", multiple_choice=False)
    assert decision.votes == {"\\frac{1}{2}": 1.0, "0.5": 2.0}
    assert decision.answer == "0.5"
    # math-verify's majority merges the equivalent answers and counts the budget track
    assert decide(tracks, "majority", multiple_choice=False).votes == {"\\frac{1}{2}": 4.0}


def test_speclrm_all_different_goes_to_the_track_with_most_tokens():
    different = [track(0, "1", tokens=30), track(1, "2", tokens=90), track(2, "3", tokens=60)]
    assert decide(different, "speclrm", multiple_choice=False).answer == "2"
    assert decide([track(0, "7", tokens=1)], "speclrm", multiple_choice=False).answer == "7"
    assert decide([], "speclrm", multiple_choice=False).answer is None


def test_speclrm_ties_go_to_the_first_seen_answer():
    # Counter.most_common: of two answers given twice, the first seen wins, whatever the tokens
    tied = [track(0, "1", tokens=10), track(1, "2", tokens=70), track(2, "1", tokens=40), track(3, "2", tokens=5)]
    assert decide(tied, "speclrm", multiple_choice=False).answer == "1"
    assert decide(tied, "majority", multiple_choice=False).answer == "2"  # spectra's: the longest track's group


def test_speclrm_votes_speclrms_reading_first_box_and_integers():
    # "042" and "42" are one answer (int()); a track votes its first box, not its last
    tracks = [track(0, "042"), track(1, "42", tokens=5), track(2, "7", text="\\boxed{41}, no: \\boxed{7}")]
    decision = decide(tracks, "speclrm", multiple_choice=False)
    assert decision.votes == {"42": 2.0, "41": 1.0} and decision.answer == "42"
    # an unclosed first box reads as no answer: that track does not vote
    unclosed = track(3, "5", text="\\boxed{\\frac{1}{2} and later \\boxed{5}")
    assert decide([unclosed], "speclrm", multiple_choice=False).answer is None
    letters = [track(0, "B", text="\\boxed{B) Argon}"), track(1, "B", text="Answer: B")]
    assert decide(letters, "speclrm", multiple_choice=True).votes == {"B": 2.0}


def test_probe_ended_tracks_vote_under_speclrm_and_settle_early_stop():
    probed = [track(i, "42", text="Six sevens.") for i in range(3)]
    for t in probed:
        t.finish_reason = "probe"  # Dynasor's probes agreed on 42; no step stated it
    assert decide(probed, "speclrm", multiple_choice=False).answer == "42"
    assert outcome_settled(probed[:2], 1, "speclrm", multiple_choice=False)


def test_speclrm_early_stop_counts_only_voting_tracks():
    failed = track(2, None)
    failed.finish_reason = "failed"
    budget = track(3, "5")
    budget.finish_reason = "budget"
    # two exact "5" votes against at most one more: settled; the budget track's "5" does not vote
    assert outcome_settled([track(0, "5"), track(1, "5"), failed], 1, "speclrm", multiple_choice=False)
    assert not outcome_settled([track(0, "5"), budget], 1, "speclrm", multiple_choice=False)
    # "5.0" is another answer under exact comparison: the open track could still decide
    assert not outcome_settled([track(0, "5"), track(1, "5.0")], 1, "speclrm", multiple_choice=False)
    assert outcome_settled([track(0, "5"), track(1, "5.0")], 1, "majority", multiple_choice=False)


@pytest.mark.parametrize(
    ("votes", "expected"),
    [
        # 1 - I_0.5(v1 + 1, v2 + 1), by hand: sum of C(v1 + v2 + 1, j) for j <= v1, over 2^(v1 + v2 + 1)
        ((0, 0), 1 / 2),
        ((1, 0), 3 / 4),
        ((3, 0), 15 / 16),  # 0.9375
        ((4, 0), 31 / 32),  # 0.96875
        ((4, 1), 57 / 64),  # 0.890625
        ((2, 2), 1 / 2),  # a tie is a coin toss
        ((5, 3), (1 + 9 + 36 + 84 + 126 + 126) / 512),
    ],
)
def test_leader_confidence_is_the_beta_posterior_probability(votes, expected):
    assert leader_confidence(*votes) == pytest.approx(expected, abs=1e-12)


def test_confidence_settles_on_track_counts_before_the_open_tracks_are_outvoted():
    three = [track(0, "4"), track(1, "4"), track(2, "4")]
    # 3 votes against 5 open tracks cannot be settled by count; P = 0.9375
    assert not outcome_settled(three, 5, "majority", multiple_choice=False)
    assert outcome_settled(three, 5, "majority", multiple_choice=False, confidence=0.9)
    assert not outcome_settled(three, 5, "majority", multiple_choice=False, confidence=0.95)
    split = [*three, track(3, "4"), track(4, "9")]
    assert outcome_settled(split, 3, "majority", multiple_choice=False, confidence=0.89)  # 0.890625
    assert not outcome_settled(split, 3, "majority", multiple_choice=False, confidence=0.9)


def test_confidence_counts_tracks_not_weights():
    # weights 9 vs 1, but one track each: P = 0.5, never >= a confidence above 0.5
    finished = [track(0, "4", scores=(9,)), track(1, "7", scores=(1,))]
    assert not outcome_settled(finished, 3, "weighted", multiple_choice=False, confidence=0.51)


def test_confidence_never_settles_without_an_answer():
    assert not outcome_settled([track(0, None)], 3, "majority", multiple_choice=False, confidence=0.51)
