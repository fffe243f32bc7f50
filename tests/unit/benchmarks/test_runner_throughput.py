"""The arithmetic of `benchmarks.runner_throughput`: runner processes from steps per second."""

import pytest

from benchmarks.runner_throughput import runner_processes


@pytest.mark.parametrize(
    "fleet, sustained, processes",
    [(200, 961, 1), (961, 961, 1), (962, 961, 2), (1600, 961, 2), (8 * 200, 400, 4), (8 * 200 + 1, 400, 5)],
)
def test_runner_processes_is_the_ceiling_of_fleet_over_sustained(fleet, sustained, processes):
    assert runner_processes(fleet, sustained) == processes


@pytest.mark.parametrize("fleet, sustained", [(0, 961), (200, 0), (-1, 961)])
def test_runner_processes_refuses_a_rate_that_is_not_positive(fleet, sustained):
    with pytest.raises(ValueError, match="must be positive"):
        runner_processes(fleet, sustained)
