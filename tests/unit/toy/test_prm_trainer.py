"""The toy PRM's trainer: labels meet their tags, the heads answer at the tags, a run fitted to its
time is reproduced by `--steps`, and the in-process figures are what the benchmark reports."""

import numpy as np
import pytest

from engine.toy.prm_trainer import FIT_AT, batches, fit_to_time, new_prm, separation, tag_losses
from engine.toy.tiny_prm import STEP_TAG
from engine.toy.trained import prm_tokenizer
from engine.toy.trained_prm import BAD_TOKEN, GOOD_TOKEN
from engine.toy.trainer import Schedule

TAG, PAD = 9, 0


def test_a_batch_gives_each_tag_its_own_label_in_order():
    data = [
        (np.array([5, 6, TAG, 7, TAG], dtype=np.int16), np.array([1, 0], dtype=np.uint8)),
        (np.array([5, TAG], dtype=np.int16), np.array([0], dtype=np.uint8)),
        (np.array([TAG, 3, 3, TAG, TAG, 4], dtype=np.int16), np.array([1, 1, 0], dtype=np.uint8)),
    ]
    seen = []
    for ids, mask, tags, labels in batches(data, 3, 2, 0, TAG, PAD, "cpu"):
        rows = [_row(ids[r], data) for r in range(3)]
        assert sorted(rows) == [0, 1, 2], "an epoch, in a seeded order"
        # Row-major: each row's labels in its tags' order, the rows in the batch's order.
        assert labels.tolist() == [v for r in rows for v in data[r][1].tolist()]
        assert tags.sum(1).tolist() == [len(data[r][1]) for r in rows]
        assert mask.sum(1).tolist() == [len(data[r][0]) for r in rows]
        seen.append(rows)
    assert len(seen) == 2


def _row(ids, data) -> int:
    return next(i for i, (row, _) in enumerate(data) if ids[: len(row)].tolist() == row.tolist())


def test_the_model_answers_two_labels_and_a_next_token_at_each_tag():
    import torch

    tokenizer = prm_tokenizer()
    prm = new_prm(1, tokenizer)
    tag = tokenizer.convert_tokens_to_ids(STEP_TAG)
    ids = torch.tensor([[5, 6, tag, 7, tag], [5, tag, 0, 0, 0]])
    mask = torch.tensor([[1, 1, 1, 1, 1], [1, 1, 0, 0, 0]])
    head, vocab = prm(ids, mask, ids == tag)
    assert head.shape == (3, 2) and vocab.shape == (3, len(tokenizer))
    signs = torch.tensor([tokenizer.convert_tokens_to_ids(t) for t in (BAD_TOKEN, GOOD_TOKEN)])
    head_loss, token_loss = tag_losses(prm, ids, mask, ids == tag, torch.tensor([1, 0, 1]), signs)
    head_loss.backward()
    assert head_loss > 0 and token_loss > 0 and prm.score[2].weight.grad is not None


def test_steps_fitted_to_the_time_change_no_warm_up_step_so_steps_reproduces_the_run():
    schedule = Schedule(1000, warmup=100)
    fit_to_time(schedule, step_seconds=0.5, seconds_left=200.0)
    assert schedule.steps == FIT_AT + int(0.97 * 200 / 0.5) < 1000
    rerun = Schedule(schedule.steps, warmup=100)
    assert [schedule(s) for s in range(schedule.steps)] == [rerun(s) for s in range(schedule.steps)]
    assert schedule(99) == 1.0 and schedule(schedule.steps) == pytest.approx(0.1)
    fit_to_time(schedule, step_seconds=0.001, seconds_left=200.0)  # never more steps than asked
    assert schedule.steps == rerun.steps


def test_separation_counts_within_problem_pairs_only_inside_a_problem():
    solutions = [(0, ["a", "b", "c"], [True, False, True]), (1, ["a", "b"], [True, True])]
    figures = separation([0.9, 0.2, 0.1, 0.05, 0.8], solutions)
    assert figures["auc"] == pytest.approx(2 / 4)  # right 0.9, 0.1, 0.05, 0.8 against wrong 0.2
    assert figures["within_problem_auc"] == pytest.approx(1 / 2)  # problem 0: 0.9 > 0.2, 0.1 < 0.2
    assert (figures["right_kept"], figures["wrong_caught"]) == (0.5, 1.0)
