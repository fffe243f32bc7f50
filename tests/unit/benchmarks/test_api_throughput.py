"""The figures of `benchmarks.api_throughput`: quantiles and rates, and the sim at the calibration."""

import pytest

from benchmarks.api_throughput import SIM, Side


def test_a_sides_quantiles_and_rate():
    side = Side("x", [float(i) for i in range(1, 101)], wall_s=20.0)
    assert side.quantile(0.5) == pytest.approx(50.5, abs=0.5) and side.quantile(0.95) == pytest.approx(95, abs=1)
    assert side.per_s == 5.0


def test_the_sim_runs_at_the_costly_toy_pairs_decode_ratio():
    small, big = SIM.models["small"], SIM.models["big"]
    assert big.token_s / small.token_s == pytest.approx(35.9 / 4.0)
    assert big.request_s / small.request_s == pytest.approx(big.token_s / small.token_s)
    assert min(small.capacity, big.capacity) >= 64  # every problem decodes at once: no queue at the sim
