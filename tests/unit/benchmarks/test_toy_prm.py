"""The toy PRM's rows in the toy world: figures from scored steps, verdicts against issue 32's targets."""

import pytest

from benchmarks.toy_prm import prm_rows, separation


def test_separation_pools_every_step_and_pairs_within_a_problem_only():
    # Problem 0 has two tracks; problem 1's right step scores below problem 0's wrong one.
    scored = [(0, [0.9, 0.6], [True, False]), (0, [0.95], [True]), (1, [0.5, 0.1], [True, False])]
    figures = separation(scored)
    assert (figures["right"], figures["wrong"]) == (3, 2)
    assert figures["auc"] == pytest.approx(5 / 6)  # 0.5 loses to 0.6
    assert (figures["within_auc"], figures["within_pairs"]) == (1.0, 3)
    assert figures["right_kept"] == pytest.approx(2 / 3) and figures["wrong_caught"] == 1.0


def test_rows_pass_only_where_both_threshold_figures_meet_their_targets():
    figures = {"right": 90, "wrong": 10, "auc": 0.97, "within_auc": None, "within_pairs": 0}
    rows = prm_rows({**figures, "right_kept": 0.96, "wrong_caught": 0.89}, "CMD")
    assert [row[3] for row in rows] == ["PASS", "", "MISS"]
    assert rows[1][1] == "- (0 right-wrong pairs)"
    rows = prm_rows({**figures, "auc": 0.9, "right_kept": 0.96, "wrong_caught": 0.9}, "CMD")
    assert [row[3] for row in rows] == ["MISS", "", "PASS"]
