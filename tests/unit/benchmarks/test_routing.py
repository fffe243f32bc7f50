"""The routing benchmark's pieces: the commands it runs (refused by nothing the runner checks), its
figures from records, and the choice of the best bound."""

import argparse

import pytest

from benchmarks.routing import Figures, Setting, argv, best_bound, bounds_flag, figures, settings
from engine.records import ProblemRecord, RequestCost, StepRecord, TrackRecord
from engine.run.configure import config_of_command

A, B = "http://127.0.0.1:1", "http://127.0.0.1:2"


def test_each_setting_is_a_runner_command_the_runner_takes(tmp_path):
    for setting in settings(("1", "none")):
        config = config_of_command("scale", argv(setting, [A, B], "toy-small", 4, 8, tmp_path))
        assert config.model("small").urls == (A, B)[: setting.replicas]
        assert config.limits.max_problems_in_flight == 8 and config.strategy_settings.tracks == 1
        assert config.policy_settings.stepwise and config.reasoning.seed == 1
    by_name = {s.name: config_of_command("scale", argv(s, [A, B], "m", 4, 8, tmp_path)) for s in settings(("2",))}
    assert by_name["least loaded"].client.routing == "least_loaded"
    assert by_name["affine, bound 2"].client.affinity_bound == 2


def test_figures_count_the_cached_share_and_the_requests_each_replica_took():
    def cost(server, prompt, cached):
        return RequestCost("small", "step", server, "m", prompt_tokens=prompt, cached_prompt_tokens=cached,
                           client_s=0.1, started_at=0.0, ended_at=0.1)  # fmt: skip

    step = StepRecord(index=0, text="x", writer="small", tokens=1, costs=[cost(A, 100, 80), cost(B, 100, 40)])
    record = ProblemRecord(run_id="r", dataset="toy", problem_id="0", repeat_id=0, runner="scale", problem="q",
                           reference_answer="1", tracks=[TrackRecord(0, steps=[step])], latency_s=2.0)  # fmt: skip
    result = figures([record], [A, B], wall_s=3.0)
    assert (result.cached_share, result.latency_s, result.requests_per_replica) == (0.6, 2.0, (1, 1))


def row(name, cached, latency):
    return Setting(name, 2), Figures(cached, latency, 0.0, (0, 0), 0.0), ""


def test_the_best_bound_is_the_fastest_within_five_points_of_one_replica_else_the_best_cached():
    single = row("one replica", 0.80, 1.0)
    rows = [
        single,
        row("least loaded", 0.70, 0.5),
        row("affine, bound 1", 0.74, 0.6),
        row("affine, bound 4", 0.79, 0.9),
    ]
    assert best_bound(rows) == (rows[3][0], True)  # bound 1 is faster, but 6 points below one replica
    rows = [single, row("affine, bound 1", 0.70, 0.6), row("affine, bound 4", 0.72, 0.9)]
    assert best_bound(rows) == (rows[2][0], False)


def test_bounds_are_numbers_or_none():
    assert bounds_flag("1, 8,none") == ("1", "8", "none")
    with pytest.raises(argparse.ArgumentTypeError):
        bounds_flag("1,-2")
