"""Best-of-N, beam search and DVTS on scripted fake servers with chosen step scores: the expected
beams, pruning and completions are worked out by hand in each test.

The policy's fake server writes a step named after the request (which beam slot, iteration and
subtree asked, recovered from the request's seed); the PRM's fake `/pooling` scores each step by
its first word from a table.
"""

import json

import aiohttp
import pytest

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.errors import UsageError
from engine.reasoning.judges.prm import PRMScorer
from engine.reasoning.search.beams import (
    STEP_DELIMITER,
    Beam,
    Searcher,
    SearchSettings,
    completion_tracks,
    paragraphs,
    scores_by_step,
    split_steps,
)
from engine.reasoning.strategies import STRATEGIES
from engine.reasoning.strategies.beam_search import beam_search, first_of_each_text, top_in_order
from engine.reasoning.strategies.best_of_n import best_of_n
from engine.reasoning.strategies.dvts import dvts
from engine.run.config import DataConfig, ModelConfig, RunConfig
from engine.run.execute import execute
from engine.run.scheduler import Scheduler, WorkItem
from engine.serving.chat import ChatFormat, Message
from engine.serving.client import ModelClient
from engine.serving.models import Model, Purpose, request_seed
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import FAST_LIMITS, chatml_tokenizer

MESSAGES = (Message("system", "Solve it."), Message("user", "What is 1 + 1?"))
TAG = "<extra_0>"


def assistant_text(prompt: str) -> str:
    return prompt.rsplit("<|im_start|>assistant\n", 1)[1]


class World:
    """Scripted policy and PRM. `steps[key]` is (text, ending) of the step the request with that
    key writes; `scores[first word]` the PRM's P(good) of a step."""

    def __init__(self, steps: dict[tuple, tuple[str, str]], scores: dict[str, float], lookahead: str = ""):
        self.steps, self.scores, self.lookahead = steps, scores, lookahead
        self.seeds: dict[int, tuple] = {}
        self.generated: list[tuple] = []
        self.scored: list[list[str]] = []

    def policy(self, body: dict) -> Reply:
        if body["temperature"] == 0.0:  # a greedy lookahead step
            self.generated.append(("lookahead", assistant_text(body["prompt"])))
            return Reply(text=self.lookahead, stop_reason=STEP_DELIMITER)
        key = self.seeds[body["seed"]]
        self.generated.append((key, body.get("stop")))
        text, ending = self.steps[key]
        stop_reason = STEP_DELIMITER if ending == "delimiter" else None
        return Reply(text=text, stop_reason=stop_reason)

    def pooler(self, body: dict) -> list:
        solution = assistant_text(body["input"])
        bodies = solution.split(TAG)[:-1]
        self.scored.append(bodies)
        values = [self.scores.get(b.split(" ")[0], 0.5) for b in bodies]
        return [[1 - v, v] for v in values]


async def search(world: World, settings: SearchSettings, strategy, keys, gate_in_flight=None):
    async with (
        FakeOpenAIServer(world.policy, gate_in_flight=gate_in_flight) as policy,
        FakeOpenAIServer(pooler=world.pooler) as prm,
        aiohttp.ClientSession() as session,
    ):
        chat = ChatFormat(chatml_tokenizer(), thinking=False)
        scorer = PRMScorer(Model("prm", ModelClient(session, "prm", [prm.url], FAST_LIMITS), chat))
        writer = Model("small", ModelClient(session, "policy", [policy.url], FAST_LIMITS), chat)
        searcher = Searcher(
            writer=writer.for_track(seed=0),
            scorer=scorer,
            messages=MESSAGES,
            problem="What is 1 + 1?",
            settings=settings,
        )
        world.seeds = {request_seed(0, Purpose.SEARCH, key=(*key, 0)): key for key in keys}
        beams = await strategy(searcher)
        return beams, searcher, policy.peak_in_flight


def step(name: str) -> tuple[str, str]:
    return (name + STEP_DELIMITER, "delimiter")


def last(name: str) -> tuple[str, str]:
    return (name + " \\boxed{2}", "eos")


async def test_beam_search_prunes_to_n_over_width_and_keeps_first_n_completed():
    # n 4, beam width 2: the top 2 of each iteration go on, cycled back to 4.
    steps = {("beam", 0, i): step(f"a{i}") for i in range(4)}
    steps |= {("beam", 1, 0): step("b0"), ("beam", 1, 1): step("b1"), ("beam", 1, 2): last("b2")}
    steps |= {("beam", 1, 3): step("b3")}
    steps |= {("beam", 2, i): last(f"c{i}") for i in range(4)}
    scores = {"a0": 0.1, "a1": 0.7, "a2": 0.5, "a3": 0.9, "b0": 0.2, "b1": 0.8, "b2": 0.6, "b3": 0.4}
    scores |= {"c0": 0.3, "c1": 0.95, "c2": 0.5, "c3": 0.1}
    world = World(steps, scores)
    settings = SearchSettings(n=4, beam_width=2, num_iterations=3, prm_split="real_last")
    beams, searcher, peak = await search(world, settings, beam_search, steps, gate_in_flight=4)
    # Iteration 0 keeps a3 (.9) and a1 (.7), in their own order: iteration 1 runs [a1, a3, a1, a3];
    # a1+b2 ends; of a1+b0 (.2), a3+b1 (.8), a3+b3 (.4) the top two go on: [a3b1, a3b3, a3b1, a3b3].
    texts = [[s.split(" ")[0].strip() for s in b.steps] for b in beams]
    assert texts == [["a1", "b2"], ["a3", "b1", "c0"], ["a3", "b3", "c1"], ["a3", "b1", "c2"]]
    assert [b.scores for b in beams][2] == [0.9, 0.4, 0.95]
    tracks = completion_tracks(beams, how="last")
    assert [t.score for t in tracks] == [0.6, 0.3, 0.95, 0.5]
    # Only the last iteration runs to the end of the sequence; the others stop at the delimiter.
    stops = {key[1]: stop for key, stop in world.generated}
    assert stops == {0: [STEP_DELIMITER], 1: [STEP_DELIMITER], 2: None}
    assert peak == 4, "the 4 candidates of an iteration go to the server together"
    assert searcher.usage["small"].requests == 12 and searcher.usage["prm"].requests == 12


async def test_beam_search_with_min_aggregation_prunes_on_the_weakest_step():
    steps = {("beam", 0, i): step(f"a{i}") for i in range(2)}
    steps |= {("beam", 1, 0): step("b0"), ("beam", 1, 1): step("b1")}
    steps |= {("beam", 2, i): last(f"c{i}") for i in range(2)}
    scores = {"a0": 0.2, "a1": 0.9, "b0": 0.3, "b1": 0.35, "c0": 0.9, "c1": 0.1}
    world = World(steps, scores)
    settings = SearchSettings(n=2, beam_width=2, num_iterations=3, agg_strategy="min", prm_split="real_last")
    beams, _, _ = await search(world, settings, beam_search, steps)
    # Keep 1: a1; then [a1, a1] -> b0 (min .3) vs b1 (min .35): b1; then [a1b1, a1b1] -> c0, c1.
    texts = [[s.split(" ")[0].strip() for s in b.steps] for b in beams]
    assert texts == [["a1", "b1", "c0"], ["a1", "b1", "c1"]]
    assert [b.score("min") for b in beams] == [0.35, 0.1]


async def test_beam_search_scores_the_lookahead_but_does_not_keep_it():
    steps = {("beam", 0, i): step(f"a{i}") for i in range(2)}
    steps |= {("beam", 1, i): last(f"c{i}") for i in range(2)}
    world = World(steps, {"a0": 0.4, "a1": 0.6, "c0": 0.5, "c1": 0.5}, lookahead="peek\n\n")
    settings = SearchSettings(n=2, beam_width=2, num_iterations=2, lookahead=1)
    beams, searcher, _ = await search(world, settings, beam_search, steps)
    assert all("peek" not in b.text for b in beams)
    # The step and its lookahead are scored as one text split at "\n\n"; the lookahead's kept
    # "\n\n" leaves an empty last paragraph, scored too (--prm_split reference).
    assert [["a0", "peek", ""], ["a1", "peek", ""]] == sorted(s for s in world.scored if "peek" in s)
    lookaheads = [g for g in world.generated if g[0] == "lookahead"]
    assert len(lookaheads) == 2, "greedy lookahead after every non-final step, none on the final one"
    # Every generated token is counted, lookahead included: 2 + 2 lookahead + 2 final requests.
    assert searcher.usage["small"].requests == 6


async def test_dvts_keeps_each_subtrees_best_step_and_finishes_every_sibling():
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
    world = World(steps, scores)
    settings = SearchSettings(n=4, beam_width=2, num_iterations=3, prm_split="real_last")
    beams, _, _ = await search(world, settings, dvts, steps)
    # Subtree 0 keeps j1 (.6 > .3), then j1 (.9 > .7, although j0 wrote an answer), then its last
    # siblings end. Subtree 1 keeps j0 (.8), which ended; its sibling j1 is finished afterwards.
    texts = [[s.split(" ")[0].strip() for s in b.steps] for b in beams]
    assert texts == [
        ["t0i0j1", "t0i1j1", "t0i2j0"],
        ["t0i0j1", "t0i1j1", "t0i2j1"],
        ["t1i0j0"],
        ["t1i0j1", "fin"],
    ]
    assert [b.scores for b in beams] == [[0.6, 0.9, 0.2], [0.6, 0.9, 0.5], [0.8], [0.4, 0.65]]
    assert all(b.ended for b in beams)
    # Subtree 1 ended after iteration 0: nothing more was asked of it but the finishing step.
    asked = [key for key, _ in world.generated]
    assert not any(k[0] == "dvts" and k[1] == 1 and k[2] > 0 for k in asked)


def words(beams):
    return [[s.split(" ")[0].strip() for s in b.steps] for b in beams]


# The empty paragraph a kept "\n\n" leaves at the end of the text: its fake PRM score.
EMPTY = 0.5


@pytest.mark.parametrize(
    ("split", "kept", "final_scores"),
    [
        # reference: every beam's last score is the empty step's 0.5, a four-way tie; as np.argsort
        # breaks it, the later beams a2 and a3 go on although a0 scored best.
        ("reference", ["a2", "a3", "a2", "a3"], [[0.2, 0.6, 0.3], [0.3, 0.7, 0.4], [0.2, 0.8, 0.1], [0.3, 0.9, 0.2]]),
        # real_last: a0 (.9) and a3 (.3) go on, in their own order.
        ("real_last", ["a0", "a3", "a0", "a3"], [[0.9, 0.6, 0.3], [0.3, 0.7, 0.4], [0.9, 0.8, 0.1], [0.3, 0.9, 0.2]]),
    ],
)
async def test_beam_search_scores_the_whole_text_by_paragraph_and_the_reference_prunes_on_the_empty_step(
    split, kept, final_scores
):
    steps = {("beam", 0, i): step(f"a{i}") for i in range(4)}
    # The last iteration writes to the end: two paragraphs each, scored one by one.
    steps |= {("beam", 1, i): (f"c{i} x\n\nd{i} \\boxed{{2}}", "eos") for i in range(4)}
    scores = {"a0": 0.9, "a1": 0.1, "a2": 0.2, "a3": 0.3, "": EMPTY}
    scores |= {"c0": 0.6, "c1": 0.7, "c2": 0.8, "c3": 0.9, "d0": 0.3, "d1": 0.4, "d2": 0.1, "d3": 0.2}
    world = World(steps, scores)
    settings = SearchSettings(n=4, beam_width=2, num_iterations=2, prm_split=split)
    beams, _, _ = await search(world, settings, beam_search, steps)
    assert [w[0] for w in words(beams)] == kept
    if split == "reference":
        assert ["a0", ""] in world.scored, "iteration 0 scored each step and the empty paragraph after it"
    assert [b.scores for b in beams] == final_scores
    assert [b.step_scores for b in beams][0] == [[final_scores[0][0]], final_scores[0][1:]]
    tracks = completion_tracks(beams, how="min")
    second = tracks[0].steps[1]
    assert second.score == final_scores[0][2] and second.detail == {"paragraph_scores": final_scores[0][1:]}
    assert [t.score for t in tracks] == [min(f) for f in final_scores]


async def test_dvts_reference_split_scores_finished_siblings_and_the_empty_step():
    steps = {
        ("dvts", 0, 0, 0): step("x0"),
        ("dvts", 0, 0, 1): step("x1"),
        ("dvts", 0, 1, 0): ("y0 \\boxed{2}" + STEP_DELIMITER, "delimiter"),
        ("dvts", 0, 1, 1): step("y1"),
        ("dvts_finish", 0, 1): ("f1 a\n\nf2 \\boxed{5}", "eos"),
    }
    scores = {"x0": 0.2, "x1": 0.9, "y0": 0.7, "y1": 0.4, "f1": 0.6, "f2": 0.3, "": EMPTY}
    world = World(steps, scores)
    settings = SearchSettings(n=2, beam_width=2, num_iterations=3)
    beams, _, _ = await search(world, settings, dvts, steps)
    # Iteration 0: x0 and x1 both score the empty step's 0.5 last; np.argmax keeps the first, x0
    # (real_last would keep x1). Iteration 1: again a tie, y0 is kept and holds "boxed{": done.
    # Sibling y1 is not whole: it is written to the end and its whole text scored by paragraph.
    assert words(beams) == [["x0", "y0"], ["x0", "y1", "f1"]]
    assert [b.scores for b in beams] == [[0.2, 0.7, EMPTY], [0.2, 0.4, 0.6, 0.3]]
    assert [b.step_scores for b in beams] == [[[0.2], [0.7, EMPTY]], [[0.2], [0.4], [0.6, 0.3]]]
    assert ["x0", "y1", "f1 a", "f2 \\boxed{5}"] in world.scored


async def test_dvts_scores_a_candidate_with_its_lookahead_by_paragraph_and_keeps_the_step_alone():
    steps = {("dvts", 0, 0, j): step(f"x{j}") for j in range(2)}
    steps |= {("dvts", 0, 1, j): last(f"z{j}") for j in range(2)}
    world = World(steps, {"x0": 0.2, "x1": 0.9, "z0": 0.5, "z1": 0.5, "": EMPTY}, lookahead="peek\n\n")
    settings = SearchSettings(
        n=2, beam_width=2, num_iterations=2, lookahead=1, prm_split="real_last", agg_strategy="min"
    )
    beams, _, _ = await search(world, settings, dvts, steps)
    # Each candidate is scored as step + lookahead split at "\n\n" (real_last: without the empty
    # end): x0 [.2, .5] (min .2), x1 [.9, .5] (min .5): x1 is kept, without its lookahead.
    assert ["x0", "peek"] in world.scored and ["x1", "peek"] in world.scored
    assert all("peek" not in b.text for b in beams)
    assert words(beams) == [["x1", "z0"], ["x1", "z1"]]


def test_paragraph_scores_go_to_the_step_that_wrote_them_and_the_rest_to_the_last_step():
    steps = ["a\n\n", "b\n\nc\n\n"]
    # "b\n\nc\n\n" wrote two paragraphs and the empty one after it; a lookahead's come last too.
    assert paragraphs("".join(steps), "reference") == ["a", "b", "c", ""]
    assert paragraphs("".join(steps), "real_last") == ["a", "b", "c"]
    assert scores_by_step(steps, ["a", "b", "c", ""], [1, 2, 3, 4]) == [[1], [2, 3, 4]]
    assert scores_by_step([*steps, ""], ["a", "b", "c", ""], [1, 2, 3, 4]) == [[1], [2, 3], [4]]
    assert scores_by_step(steps, ["a", "b", "c", "peek", ""], [1, 2, 3, 4, 5]) == [[1], [2, 3, 4, 5]]


async def test_best_of_n_scores_whole_solutions_step_by_step_in_sampling_order():
    steps = {("best_of_n", i): (f"s{i} x\n\nr{i} \\boxed{{{i}}}", "eos") for i in range(3)}
    world = World(steps, {"r0": 0.2, "r1": 0.9, "r2": 0.4, "s0": 0.1, "s1": 0.3, "s2": 0.99})
    beams, searcher, _ = await search(world, SearchSettings(n=3), best_of_n, steps)
    assert [b.steps for b in beams][1] == ["s1 x\n\n", "r1 \\boxed{1}"]
    assert [b.scores for b in beams] == [[0.1, 0.2], [0.3, 0.9], [0.99, 0.4]]
    tracks = completion_tracks(beams, how="last")
    assert [t.answer for t in tracks] == ["0", "1", "2"]
    assert max(tracks, key=lambda t: t.score).answer == "1"
    assert all(stop is None for _, stop in world.generated), "one request per solution, to the end"
    assert searcher.usage["prm"].requests == 3


@pytest.mark.parametrize(
    ("text", "expected"),
    [("a\n\nb", ["a\n\n", "b"]), ("a\n\n", ["a\n\n"]), ("", [""]), ("a\n\n\n\nb", ["a\n\n", "\n\n", "b"])],
)
def test_split_steps_keeps_the_delimiter(text, expected):
    assert split_steps(text) == expected
    assert "".join(split_steps(text)) == text


@pytest.mark.parametrize(
    ("settings", "message"),
    [
        (SearchSettings(n=0), "--n must be at least 1, not 0"),
        (SearchSettings(lookahead=-1), "--lookahead must be at least 0, not -1"),
        (SearchSettings(num_iterations=0), "--num_iterations must be at least 1, not 0"),
    ],
)
def test_bad_settings_are_refused_with_the_flag_named(settings, message):
    with pytest.raises(UsageError, match=message):
        settings.validate()


def test_only_dvts_needs_n_to_be_a_multiple_of_the_width():
    settings = SearchSettings(n=6, beam_width=4)
    with pytest.raises(UsageError, match=r"--n \(6\) must be a multiple of --beam_width \(4\)"):
        STRATEGIES["dvts"].check_prompts(settings, None)
    STRATEGIES["beam_search"].check_prompts(settings, None)
    STRATEGIES["dvts"].check_prompts(SearchSettings(n=8, beam_width=4), None)


def scored_beams(*pairs):
    return [Beam(steps=[text], scores=[score]) for text, score in pairs]


def test_beam_search_keeps_n_over_width_later_of_equals_in_order_and_first_of_each_text():
    beams = scored_beams(("a", 0.5), ("b", 0.9), ("c", 0.5), ("d", 0.1), ("e", 0.5), ("f", 0.2))
    # n 6, width 4: keep 1; n 6, width 2: keep 3: b (.9), then of the three at .5 the later two.
    assert [b.text for b in top_in_order(beams, 6 // 4, "last")] == ["b"]
    assert [b.text for b in top_in_order(beams, 6 // 2, "last")] == ["b", "c", "e"]
    # n 3 < width 4: n // width is 0 and the reference's slice [-0:] keeps every beam.
    assert [b.text for b in top_in_order(beams, 3 // 4, "last")] == list("abcdef")
    twins = scored_beams(("x", 0.1), ("y", 0.2), ("x", 0.3), ("z", 0.4), ("y", 0.5))
    kept = first_of_each_text(twins)
    assert [(b.text, b.scores) for b in kept] == [("x", [0.1]), ("y", [0.2]), ("z", [0.4])]


async def test_beam_search_with_n_not_a_multiple_of_the_width_keeps_n_over_width():
    steps = {("beam", 0, i): step(f"a{i}") for i in range(3)}
    steps |= {("beam", 1, i): last(f"c{i}") for i in range(3)}
    world = World(steps, {"a0": 0.3, "a1": 0.8, "a2": 0.5, "c0": 0.1, "c1": 0.2, "c2": 0.3})
    settings = SearchSettings(n=3, beam_width=2, num_iterations=2, prm_split="real_last")
    beams, _, _ = await search(world, settings, beam_search, steps)
    # 3 // 2 = 1 beam goes on (a1), cycled to 3.
    assert words(beams) == [["a1", "c0"], ["a1", "c1"], ["a1", "c2"]]


async def test_beam_search_runs_the_candidates_of_all_problems_in_flight_together(make_models, tmp_path):
    def policy(body):
        final = body.get("stop") is None
        text = "x \\boxed{1}" if final else "step\n\n"
        return Reply(text=text, stop_reason=None if final else STEP_DELIMITER)

    (tmp_path / "config.json").write_text('{"model_type": "qwen2", "architectures": ["Qwen2ForProcessRewardModel"]}')
    records = []
    async with (
        FakeOpenAIServer(policy, gate_in_flight=8) as small,
        FakeOpenAIServer(pooler=lambda b: [[0.5, 0.5]] * b["input"].count("<extra_0>")) as prm,
    ):
        models = make_models(small=small, prm=prm, sources={"prm": str(tmp_path)})
        config = RunConfig(
            runner="search",
            output_dir="unused",
            models={"small": ModelConfig("small"), "prm": ModelConfig(str(tmp_path))},
            policy="small",
            strategy="beam_search",
            strategy_settings=SearchSettings(n=4, beam_width=2, num_iterations=3),
        )
        problems = [Problem(id=str(i), problem=f"problem {i}", answer="1") for i in range(2)]
        scheduler = Scheduler(
            config, models, load_prompt_set("search"), run_id="r", dataset="d", on_record=records.append
        )
        await scheduler.run([WorkItem(p, 0) for p in problems])
        peak = small.peak_in_flight
    assert peak == 8, "4 candidates of each of the 2 problems at the server together"
    assert sorted(r.problem_id for r in records) == ["0", "1"] and all(r.answer == "1" for r in records)


class Flaky:
    """The policy server: problem `doomed` fails for good (HTTP 400) until `healed`."""

    def __init__(self, doomed: str):
        self.doomed, self.healed, self.asked = doomed, False, []

    def __call__(self, body):
        problem = body["prompt"].split("task ")[1][0]
        self.asked.append(problem)
        if problem == self.doomed and not self.healed:
            return Reply(status=400, error_message="this prompt is refused")
        return Reply(text=f"s\n\nso \\boxed{{{problem}}}")


def prm_folder(tmp_path):
    """A tokenizer folder whose config names a pooling PRM, served by name by the fake PRM server."""
    folder = tmp_path / "tokenizer"
    chatml_tokenizer().save_pretrained(folder)
    (folder / "config.json").write_text('{"model_type": "qwen2", "architectures": ["Qwen2ForProcessRewardModel"]}')
    return str(folder)


def search_run(tmp_path, policy_url, prm_url, approach="best_of_n"):
    problems = tmp_path / "problems.jsonl"
    rows = [{"id": str(i), "problem": f"What is task {i}?", "answer": str(i)} for i in range(3)]
    problems.write_text("".join(json.dumps(row) + "\n" for row in rows))
    folder = str(tmp_path / "tokenizer")
    return RunConfig(
        runner="search",
        output_dir=str(tmp_path / "run"),
        models={
            "small": ModelConfig("fake-model", (policy_url,), tokenizer=folder),
            "prm": ModelConfig(folder, (prm_url,), tokenizer=folder),
        },
        policy="small",
        strategy=approach,
        strategy_settings=SearchSettings(n=2),
        prompt_set="search",
        data=DataConfig(dataset_name=str(problems)),
    )


def pooled(body):
    return [[0.5, 0.5]] * body["input"].count("<extra_0>")


async def test_a_server_that_fails_for_good_on_one_problem_fails_that_problem_alone_and_a_rerun_redoes_it(tmp_path):
    flaky = Flaky(doomed="1")
    prm_model = prm_folder(tmp_path)
    async with FakeOpenAIServer(flaky) as small, FakeOpenAIServer(pooler=pooled, served_model=prm_model) as prm:
        config = search_run(tmp_path, small.url, prm.url)
        first = await execute(config, progress=False)
        by_problem = {r.problem_id: r for r in first.records}
        assert by_problem["0"].answer == "0" and by_problem["2"].answer == "2"
        failure = by_problem["1"].failure
        assert failure["kind"] == "ServerError" and "this prompt is refused" in failure["message"]
        assert by_problem["1"].answer is None and by_problem["1"].failed and not by_problem["0"].failed
        flaky.healed, flaky.asked = True, []
        second = await execute(config, progress=False)
    assert set(flaky.asked) == {"1"}, "the rerun redoes the failed problem only"
    latest = {r.problem_id: r for r in second.records}
    assert [(p, r.answer, r.failure) for p, r in sorted(latest.items())] == [
        ("0", "0", None),
        ("1", "1", None),
        ("2", "2", None),
    ]


async def test_a_scorer_that_raises_fails_its_problem_and_the_run_goes_on(tmp_path, monkeypatch):
    from engine.reasoning.search import solve as search_module

    real = search_module.build_scorer

    class Raising:
        name = "prm"

        async def score(self, query):
            raise ZeroDivisionError("a bug in the scorer")

    def build(ctx):
        return Raising() if ctx.problem.id == "2" else real(ctx)

    monkeypatch.setattr(search_module, "build_scorer", build)
    prm_model = prm_folder(tmp_path)
    async with (
        FakeOpenAIServer(Flaky(doomed="none")) as small,
        FakeOpenAIServer(pooler=pooled, served_model=prm_model) as prm,
    ):
        outcome = await execute(search_run(tmp_path, small.url, prm.url, "beam_search"), progress=False)
    by_problem = {r.problem_id: r for r in outcome.records}
    assert by_problem["2"].failure == {"kind": "ZeroDivisionError", "message": "a bug in the scorer"}
    assert by_problem["0"].answer == "0" and by_problem["1"].answer == "1"


async def test_tag_token_scores_each_paragraph_by_one_generated_token_after_its_tag(tmp_path):
    import dataclasses
    import math

    prm_model = prm_folder(tmp_path)
    prompts = []

    def token_prm(body):
        if not body["prompt"].endswith(TAG):  # the preflight's probe of the server's logprobs limit
            return Reply(text="+", tokens=["+"], top_logprobs=[{"+": 0.0}])
        prompts.append(body["prompt"])
        assert body["max_tokens"] == 1 and body["logprobs"] == 20 and body["prompt"].endswith(TAG)
        return Reply(text="+", tokens=["+"], top_logprobs=[{"+": math.log(0.8), "-": math.log(0.2)}])

    async with (
        FakeOpenAIServer(Flaky(doomed="none")) as small,
        FakeOpenAIServer(token_prm, served_model=prm_model) as prm,
    ):
        config = search_run(tmp_path, small.url, prm.url)
        settings = dataclasses.replace(config.strategy_settings, prm_kind="tag_token")
        outcome = await execute(dataclasses.replace(config, strategy_settings=settings), progress=False)
    assert sorted(r.answer for r in outcome.records) == ["0", "1", "2"]
    # Each completion "s\n\nso \boxed{N}" is two paragraphs, each scored by the token after its tag.
    assert len(set(prompts)) == 3 * 2
    for record in outcome.records:
        assert [t.score for t in record.tracks] == pytest.approx([0.8, 0.8])
        asked = [p for p in prompts if f"task {record.problem_id}?" in p]
        assert record.usage["prm"].requests == record.usage["prm"].completion_tokens == len(asked)
