"""The beams beam search and DVTS drop, as their records keep them: which beam, at which
iteration, why, and its steps stored once (the scripted searches of tests/unit/reasoning/search/test_beams.py,
pruning worked out by hand)."""

import itertools

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.reasoning.search.beams import (
    DUPLICATE,
    LOWER_SCORE,
    STEP_DELIMITER,
    SURPLUS,
    Beam,
    PrunedBeam,
    SearchSettings,
    pruned_details,
)
from engine.reasoning.strategies.beam_search import beam_search
from engine.reasoning.strategies.dvts import dvts
from engine.records import ProblemRecord
from engine.run.config import ModelConfig, RunConfig
from engine.run.scheduler import Scheduler, WorkItem
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.reasoning.search.test_beams import World, last, search, step


def dropped(searcher):
    """(first words of the steps, iteration, reason) of each pruned beam, in pruning order."""
    return [([s.split(" ")[0].strip() for s in p.beam.steps], p.iteration, p.reason) for p in searcher.pruned]


async def test_beam_search_records_the_beams_it_prunes_by_score_and_the_completions_past_n():
    # The search of test_beam_search_prunes_to_n_over_width_and_keeps_first_n_completed.
    steps = {("beam", 0, i): step(f"a{i}") for i in range(4)}
    steps |= {("beam", 1, 0): step("b0"), ("beam", 1, 1): step("b1"), ("beam", 1, 2): last("b2")}
    steps |= {("beam", 1, 3): step("b3")}
    steps |= {("beam", 2, i): last(f"c{i}") for i in range(4)}
    scores = {"a0": 0.1, "a1": 0.7, "a2": 0.5, "a3": 0.9, "b0": 0.2, "b1": 0.8, "b2": 0.6, "b3": 0.4}
    scores |= {"c0": 0.3, "c1": 0.95, "c2": 0.5, "c3": 0.1}
    settings = SearchSettings(n=4, beam_width=2, num_iterations=3, prm_split="real_last")
    beams, searcher, _ = await search(World(steps, scores), settings, beam_search, steps)
    # Iteration 0 keeps a3 and a1: a0 (.1) and a2 (.5) are pruned. Iteration 1: a1+b2 completes;
    # of a1+b0 (.2), a3+b1 (.8), a3+b3 (.4) a1+b0 is pruned. Iteration 2 completes all four, so five
    # completed in all: the fifth, a3+b3+c3, is not among the first n = 4.
    assert dropped(searcher) == [
        (["a0"], 0, LOWER_SCORE),
        (["a2"], 0, LOWER_SCORE),
        (["a1", "b0"], 1, LOWER_SCORE),
        (["a3", "b3", "c3"], 2, SURPLUS),
    ]
    details = pruned_details(beams, searcher.pruned, how="last")
    # Completions (tracks): a1 b2 | a3 b1 c0 | a3 b3 c1 | a3 b1 c2. A pruned beam keeps the steps
    # no completion or earlier pruned beam holds, and where its first steps are.
    assert [(d.get("prefix"), [s["text"] for s in d["steps"]]) for d in details] == [
        (None, ["a0" + STEP_DELIMITER]),
        (None, ["a2" + STEP_DELIMITER]),
        ({"track": 0, "steps": 1}, ["b0" + STEP_DELIMITER]),
        ({"track": 2, "steps": 2}, ["c3 \\boxed{2}"]),
    ]
    assert [(d["iteration"], d["reason"], d["score"]) for d in details] == [
        (0, "score", 0.1),
        (0, "score", 0.5),
        (1, "score", 0.2),
        (2, "surplus", 0.1),
    ]
    b0 = details[2]["steps"][0]
    assert b0["index"] == 1 and b0["score"] == 0.2 and b0["tokens"] > 0 and "detail" not in b0


async def test_beam_search_records_duplicates_filtered_and_a_pruned_beam_may_hold_no_step_of_its_own():
    steps = {("beam", 0, 0): step("x"), ("beam", 0, 1): step("x"), ("beam", 0, 2): step("y")}
    steps |= {("beam", 0, 3): step("z")}
    steps |= {("beam", 1, i): last(f"c{i}") for i in range(4)}
    scores = {"x": 0.3, "y": 0.9, "z": 0.6, "c0": 0.5, "c1": 0.5, "c2": 0.5, "c3": 0.5}
    settings = SearchSettings(n=4, beam_width=2, num_iterations=2, filter_duplicates=True, prm_split="real_last")
    beams, searcher, _ = await search(World(steps, scores), settings, beam_search, steps)
    # The second x repeats the first: filtered. Of x (.3), y (.9), z (.6) the top 2 go on: x is pruned.
    assert dropped(searcher) == [(["x"], 0, DUPLICATE), (["x"], 0, LOWER_SCORE)]
    texts = [[s.split(" ")[0].strip() for s in b.steps] for b in beams]
    assert texts == [["y", "c0"], ["z", "c1"], ["y", "c2"], ["z", "c3"]]
    details = pruned_details(beams, searcher.pruned, how="last")
    # The first pruned x holds its step; the second's only step is the same text: a prefix, no step.
    assert [(d["reason"], d.get("prefix"), len(d["steps"])) for d in details] == [
        ("duplicate", None, 1),
        ("score", {"pruned": 0, "steps": 1}, 0),
    ]


async def test_dvts_records_the_siblings_a_subtree_drops_but_not_its_last_ones():
    # The search of test_dvts_keeps_each_subtrees_best_step_and_finishes_every_sibling.
    steps = {
        ("dvts", 0, 0, 0): step("t0i0j0"),
        ("dvts", 0, 0, 1): step("t0i0j1"),
        ("dvts", 1, 0, 0): last("t1i0j0"),
        ("dvts", 1, 0, 1): step("t1i0j1"),
        ("dvts", 0, 1, 0): ("t0i1j0 \\boxed{3}" + STEP_DELIMITER, "delimiter"),
        ("dvts", 0, 1, 1): step("t0i1j1"),
        ("dvts", 0, 2, 0): last("t0i2j0"),
        ("dvts", 0, 2, 1): last("t0i2j1"),
        ("dvts_finish", 1, 1): last("fin"),
    }
    scores = {"t0i0j0": 0.3, "t0i0j1": 0.6, "t1i0j0": 0.8, "t1i0j1": 0.4, "t0i1j0": 0.7, "t0i1j1": 0.9}
    scores |= {"t0i2j0": 0.2, "t0i2j1": 0.5, "fin": 0.65}
    settings = SearchSettings(n=4, beam_width=2, num_iterations=3, prm_split="real_last")
    beams, searcher, _ = await search(World(steps, scores), settings, dvts, steps)
    # Subtree 0 drops j0 at iterations 0 and 1 (it keeps j1); its last siblings are completions.
    # Subtree 1 was done after iteration 0 (it kept a step that ended): both siblings are completions.
    assert dropped(searcher) == [(["t0i0j0"], 0, LOWER_SCORE), (["t0i0j1", "t0i1j0"], 1, LOWER_SCORE)]
    details = pruned_details(beams, searcher.pruned, how="last")
    assert [(d.get("prefix"), [s["index"] for s in d["steps"]], d["score"]) for d in details] == [
        (None, [0], 0.3),
        ({"track": 0, "steps": 1}, [1], 0.7),
    ]


def test_paragraph_scores_of_a_pruned_step_stay_with_it():
    beam = Beam(steps=["a\n\n", "b\n\nc\n\n"], scores=[0.1, 0.2, 0.3], step_scores=[[0.1], [0.2, 0.3]])
    beam.step_tokens = [2, 4]
    (entry,) = pruned_details([], [PrunedBeam(beam, 1, LOWER_SCORE)], how="min")
    assert entry == {
        "iteration": 1,
        "reason": "score",
        "score": 0.1,
        "steps": [
            {"index": 0, "text": "a\n\n", "tokens": 2, "score": 0.1},
            {"index": 1, "text": "b\n\nc\n\n", "tokens": 4, "score": 0.3, "detail": {"paragraph_scores": [0.2, 0.3]}},
        ],
    }


async def test_a_beam_search_record_keeps_its_pruned_beams_in_details_and_reads_back(make_models, tmp_path):
    asked = itertools.count()

    def policy(body):
        final = body.get("stop") is None
        text = "x \\boxed{1}" if final else f"step {next(asked)}\n\n"
        return Reply(text=text, stop_reason=None if final else STEP_DELIMITER)

    (tmp_path / "config.json").write_text('{"model_type": "qwen2", "architectures": ["Qwen2ForProcessRewardModel"]}')
    records = []
    async with (
        FakeOpenAIServer(policy) as small,
        FakeOpenAIServer(pooler=lambda b: [[0.5, 0.5]] * b["input"].count("<extra_0>")) as prm,
    ):
        for strategy in ("beam_search", "best_of_n"):
            config = RunConfig(
                runner="search",
                output_dir="unused",
                models={"small": ModelConfig("small"), "prm": ModelConfig(str(tmp_path))},
                policy="small",
                strategy=strategy,
                strategy_settings=SearchSettings(n=4, beam_width=2, num_iterations=2),
            )
            models = make_models(small=small, prm=prm, sources={"prm": str(tmp_path)})
            scheduler = Scheduler(
                config, models, load_prompt_set("search"), run_id="r", dataset="d", on_record=records.append
            )
            await scheduler.run([WorkItem(Problem(id="0", problem="problem 0", answer="1"), 0)])
    beam, best = records
    # Iteration 0: four distinct first steps, two go on; iteration 1 completes four: 2 pruned.
    assert [(d["iteration"], d["reason"]) for d in beam.details["pruned"]] == [(0, "score"), (0, "score")]
    assert ProblemRecord.from_dict(beam.to_dict()).details == beam.details
    assert best.details is None, "best-of-N drops no beam"
