"""The toy pair's training data: the small model's mistakes are random digit slips that the judge's
labels recognise, and the steps after a slip go on from the value written."""

import random

from engine.toy.task import STEP_PATTERN, held_out_problems, judge_label
from engine.toy.training_data import slip_digit, slipped_solution


def test_a_slip_moves_exactly_one_of_the_last_two_digits_by_one_without_carrying():
    rng = random.Random(0)
    for value in [0, 7, 9, 10, 139, 990, 999, -8, *range(100, 1000, 37)]:
        for _ in range(20):
            slipped = slip_digit(value, rng)
            a, b = str(abs(value)), str(abs(slipped)).zfill(len(str(abs(value))))
            changed = [i for i in range(len(a)) if a[i] != b[i]]
            assert len(changed) == 1 and changed[0] >= len(a) - 2, (value, slipped)
            assert (int(b[changed[0]]) - int(a[changed[0]])) % 10 in (1, 9)
            assert (slipped < 0) == (value < 0)


def test_slipped_solutions_go_on_from_the_value_written_and_slip_at_the_rate_asked():
    rng = random.Random(1)
    steps_seen = slips = 0
    for problem in held_out_problems(200):
        steps, answer = slipped_solution(problem, rng, 0.4)
        assert len(steps) == len(problem.operations)
        for i, step in enumerate(steps):
            # Each step applies the right operation to the value the previous step wrote...
            left = int(STEP_PATTERN.match(steps[i - 1])[4]) if i else problem.start
            assert int(STEP_PATTERN.match(step)[1]) == left
            # ...and is right or a slip, as the judge's labels say.
            slips += not judge_label(problem, steps[:i], step)
            steps_seen += 1
        assert answer == int(STEP_PATTERN.match(steps[-1])[4])
    assert 0.33 < slips / steps_seen < 0.47
    clean_steps, clean_answer = slipped_solution(held_out_problems(1)[0], rng, 0.0)
    assert clean_steps == held_out_problems(1)[0].steps() and clean_answer == held_out_problems(1)[0].answer


def test_lost_after_slip_keeps_every_result_before_the_first_slip_and_randomises_the_rest():
    rng = random.Random(2)
    lost_traces = 0
    for problem in held_out_problems(200):
        steps, answer = slipped_solution(problem, rng, 0.3, lost_after_slip=True)
        labels = [judge_label(problem, steps[:i], step) for i, step in enumerate(steps)]
        first_slip = labels.index(False) if False in labels else len(steps)
        # Right up to the first slip, as in the shipped data...
        assert all(labels[:first_slip])
        for i, step in enumerate(steps):
            left = int(STEP_PATTERN.match(steps[i - 1])[4]) if i else problem.start
            assert int(STEP_PATTERN.match(step)[1]) == left
        # ...and after it, results that mostly are not the operation applied (random values).
        after = labels[first_slip + 1 :]
        lost_traces += bool(after)
        assert sum(after) <= max(1, len(after) // 2), steps
        assert answer == int(STEP_PATTERN.match(steps[-1])[4])
    assert lost_traces > 50
