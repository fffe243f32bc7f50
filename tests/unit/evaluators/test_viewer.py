"""The viewer's data and command line (the page itself is tested in a browser: tests/browser)."""

import asyncio
import json
import threading
from pathlib import Path

import pytest

from benchmarks import viewer_runs
from engine.reasoning.strategies import STRATEGIES
from engine.run.config import ModelConfig, RunConfig
from engine.run.execute import manifest_for
from engine.run.runner_plans import SPLIT_MODES
from evaluators import evaluate, summary, view
from evaluators.runs import load_run
from evaluators.viewer.build import VIEWER_FILE, disagreements
from evaluators.viewer.page import embedded_json
from evaluators.viewer.payload import run_payload
from evaluators.viewer.settings import changed_flags
from runners.spectra import main as spectra_main
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.paths import REPO_ROOT
from tests.unit.run.runner_commands import config_of

# A chat template found on disk: the fake server's model has none to download.
TOY_TOKENIZER = REPO_ROOT / "engine" / "toy" / "weights" / "tokenizer"


def payload_of(folder: Path) -> dict:
    run = load_run(folder)
    graded = summary.grade_run(run)
    return run_payload(run, graded, summary.summarize_run(run, graded), timeout_s=5)


def test_embedded_json_cannot_close_its_script_element_and_reads_back_the_same():
    data = {"texts": viewer_runs.HOSTILE, "key</script>": "\u2029"}
    text = embedded_json(data)
    assert "<" not in text and ">" not in text and "&" not in text and "\u2028" not in text
    assert json.loads(text) == data


def test_each_problem_gets_the_view_its_method_recorded(tmp_path):
    spec = payload_of(viewer_runs.spec_run(tmp_path / "spec"))
    assert [(p["id"], p["st"], p["es"], p["fail"]) for p in spec["problems"]] == [
        ("p0", "right", True, 0),
        ("p1", "wrong", False, 1),
        ("p2", "none", False, 0),
        ("p3", "right", False, 0),
    ]
    assert {p["view"] for p in spec["problems"]} == {"steps"}
    p0 = spec["problems"][0]
    assert [s["w"] for s in p0["tracks"][0]["steps"]] == ["small", "big", "big"]
    assert p0["tracks"][0]["steps"][1]["dr"] == "wrong draft 1" and p0["tracks"][0]["ok"] is True
    assert p0["tracks"][2]["fr"] == "cancelled" and p0["tracks"][2]["ok"] is None  # not graded: no sample
    assert spec["problems"][1]["tracks"][1]["err"].startswith("ServerError")
    assert spec["problems"][3]["q"] == viewer_runs.HOSTILE_QUESTION  # texts kept as written
    assert payload_of(viewer_runs.split_run(tmp_path / "split"))["problems"][0]["view"] == "text"
    assert payload_of(viewer_runs.rast_run(tmp_path / "rast"))["problems"][0]["view"] == "rast"
    search = payload_of(viewer_runs.search_run(tmp_path / "search"))["problems"][0]
    # naive: the top score (completion 3, answer 6); weighted: 4 (0.8 + 0.6); maj: 4 (two votes)
    assert search["view"] == "search" and search["pick"] == {"naive": 3, "weighted": 0, "maj": 0}


def test_a_search_problem_carries_its_pruned_beams_and_an_older_record_none(tmp_path):
    old, new = payload_of(viewer_runs.search_run(tmp_path / "search"))["problems"]
    assert "pruned" not in old and "details" not in old
    assert "details" not in new, "the pruned beams go with the traces, not with the problem table"
    assert [(b["at"], b["why"], b.get("from")) for b in new["pruned"]] == [
        (0, "score", None),
        (0, "score", None),
        (1, "score", ["track", 1, 1]),  # A is completion 1's first step
        (2, "surplus", ["track", 2, 2]),  # C C1 are completion 2's
    ]
    assert new["pruned"][1]["steps"] == [{"t": viewer_runs.HOSTILE[2] + "\n\n", "n": 6, "s": 0.3}]
    assert new["pick"] == {"naive": 2, "weighted": 0, "maj": 0}


def test_the_flags_shown_are_those_that_differ_from_the_runners_defaults(tmp_path):
    vote = STRATEGIES["vote"].settings
    models = {"big": ModelConfig("b"), "small": ModelConfig("s")}

    def config(**settings):
        strategy = vote(**{"tracks": 3, "use_role_prompts": True, "aggregation": "speclrm", **settings})
        return RunConfig(runner="spec_scale", output_dir=str(tmp_path), models=models, strategy_settings=strategy)

    assert changed_flags(manifest_for(config())) == []
    changed = changed_flags(manifest_for(config(tracks=5, early_stop=True)))
    assert changed == [("tracks", 5, 3), ("early_stop", True, False)]


@pytest.mark.parametrize(
    ("runner", "argv"),
    [
        ("base", []),
        ("base", ["--model", "small"]),
        ("scale", ["--model", "small"]),
        ("spec", []),
        ("spec_scale", []),
        ("spec_scale_methods", []),
        ("search", []),
        ("search", ["--approach", "dvts"]),
        ("rast", []),
        *(("split", [f"--{mode}"]) for mode in SPLIT_MODES),
    ],
)
def test_a_runner_s_own_command_shows_no_flag_changed(runner, argv):
    """The viewer reads the same plans the runners run: a runner's command with no setting of its
    own differs from its runner's defaults in nothing."""
    assert changed_flags(manifest_for(config_of(runner, *argv))) == []
    assert changed_flags(manifest_for(config_of(runner, *argv, "--seed", "5")))[0][:2] == ("seed", 5)


def test_two_runs_disagree_exactly_where_one_is_right_and_the_other_wrong(tmp_path):
    first = payload_of(viewer_runs.spec_run(tmp_path / "a"))["problems"]
    second = payload_of(viewer_runs.spec_run(tmp_path / "b", flip=True))["problems"]
    pairs, common = disagreements(first, second)
    assert [(first[i]["id"], second[j]["id"]) for i, j in pairs] == [("p0", "p0"), ("p1", "p1")]
    assert common == 4


def test_the_command_writes_one_file_that_fetches_nothing(tmp_path, capsys):
    folder = viewer_runs.spec_run(tmp_path / "spec")
    assert view.main([str(folder)]) == 0
    out = folder / VIEWER_FILE
    assert capsys.readouterr().out == f"viewer: {out.resolve()}\n"
    html = out.read_text(encoding="utf-8")
    for fetching in ("<script src", "<link", "@import", "url(", "<iframe"):
        assert fetching not in html
    assert html.count("<script") == 3  # the data, the traces and the page's own script, all inline


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["{missing}"], "no such run folder"),
        (["{run}", "--out", "{tmp}/viewer.txt"], "give a name ending in .html"),
        (["{run}", "--answer-timeout", "0"], "--answer-timeout must be positive"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, argv, message):
    folder = viewer_runs.spec_run(tmp_path / "spec")
    names = {"missing": tmp_path / "nope", "run": folder, "tmp": tmp_path}
    assert view.main([a.format(**names) for a in argv]) == 2
    errors = capsys.readouterr().err.strip().splitlines()
    assert len(errors) == 1 and errors[0].startswith("error: ") and message in errors[0]
    assert not (folder / VIEWER_FILE).exists() and not (tmp_path / "viewer.txt").exists()


def test_evaluate_report_writes_the_viewer_and_links_it(tmp_path, capsys):
    folder = viewer_runs.spec_run(tmp_path / "spec")
    assert evaluate.main([str(folder), "--report", str(tmp_path / "report")]) == 0
    assert (tmp_path / "report" / VIEWER_FILE).is_file()
    assert f"]({VIEWER_FILE})" in (tmp_path / "report" / "report.md").read_text()


def test_spectra_run_writes_the_viewer_into_the_run_folder_and_prints_where(tmp_path, capsys):
    problems = tmp_path / "problems.jsonl"
    problems.write_text(json.dumps({"id": "q1", "problem": "What is 2 + 2?", "answer": "4"}) + "\n")
    ready, stop, holder = threading.Event(), threading.Event(), {}

    def serve():  # the CLI runs its own event loop: the fake server lives in a thread of its own
        async def body():
            async with FakeOpenAIServer(lambda request: Reply("So \\boxed{4}", finish_reason="stop")) as server:
                holder["url"] = server.url
                ready.set()
                while not stop.is_set():
                    await asyncio.sleep(0.02)

        asyncio.run(body())

    thread = threading.Thread(target=serve)
    thread.start()
    try:
        assert ready.wait(10)
        out = tmp_path / "run"
        flags = ["--runner", "base", "--big_model", "fake-model", "--big_url", holder["url"]]
        flags += ["--big_tokenizer", str(TOY_TOKENIZER)]
        flags += ["--dataset_name", str(problems), "--output_dir", str(out), "--no_progress"]
        code = spectra_main(["run", *flags])
    finally:
        stop.set()
        thread.join()
    assert code == 0, capsys.readouterr().err
    lines = capsys.readouterr().out.splitlines()
    assert lines[-1] == f"viewer: {out / VIEWER_FILE} (open it in a browser)"
    assert '"id":"q1"' in (out / VIEWER_FILE).read_text()
