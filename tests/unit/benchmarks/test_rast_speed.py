"""The bounds benchmarks/rast_speed.py prints beside its measured speedups."""

import pytest

from benchmarks.rast_speed import Scenario, chunk_tokens, speedup_bound, steady_state


def test_a_chunk_yields_its_kept_prefix_plus_one_token():
    assert chunk_tokens(1.0, 8) == 9 and chunk_tokens(0.0, 8) == 1
    assert chunk_tokens(0.5, 2) == pytest.approx(1 + 0.5 + 0.25)


def test_one_sequence_without_serial_cost_is_bounded_by_the_base_models_latency():
    # 65 ms a token against 295 ms a chunk of 9 tokens (README's derivation): about 2x at best
    latency = Scenario("latency", "", 1, 0.0, 1)
    assert speedup_bound(latency, 1.0, 8) == pytest.approx(9 * 0.065 / 0.295)


def test_a_serial_cost_lifts_the_bound_towards_the_tokens_a_chunk_when_many_sequences_wait():
    many = Scenario("throughput", "", 64, 0.005, 192)
    # token mode: 1 request per model per token, 200 tokens/s; speculative: 9 tokens per request
    assert speedup_bound(many, 1.0, 8) == pytest.approx(9.0)
    assert speedup_bound(Scenario("throughput", "", 64, 0.0, 192), 1.0, 8) == pytest.approx(9 * 0.065 / 0.295)


def test_steady_state_counts_only_what_finished_between_the_first_wave_and_the_last_start():
    # Two at once, five in all: starts at 0, 0, then as each finishes; the last starts at 3.
    starts = [0.0, 0.0, 1.0, 2.0, 3.0]
    finishes = [(1.0, 10), (2.0, 10), (2.5, 7), (3.0, 5), (4.0, 10)]
    # From the 2nd finish (t=2) to the last start (t=3): the finishes at 2.5 and 3.0.
    assert steady_state(starts, finishes, 2) == (12, 1.0)
    assert steady_state(starts[:2], finishes[:2], 2) is None
