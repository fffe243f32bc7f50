"""Best-of-N, beam search and DVTS on scripted fake servers with chosen step scores: the expected
beams, pruning and completions are worked out by hand in each test.

The policy's fake server writes a step named after the request (which beam slot, iteration and
subtree asked, recovered from the request's seed); the PRM's fake `/pooling` scores each step by
its first word from a table.
"""

import aiohttp
import pytest

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.errors import UsageError
from engine.reasoning.beams import STEP_DELIMITER, Sampling, Searcher, SearchSettings, completion_tracks, split_steps
from engine.reasoning.prm import PRMScorer
from engine.reasoning.strategies.beam_search import beam_search
from engine.reasoning.strategies.best_of_n import best_of_n
from engine.reasoning.strategies.dvts import dvts
from engine.run.config import ModelConfig, RunConfig
from engine.run.scheduler import Scheduler, WorkItem
from engine.serving.chat import ChatFormat, Message
from engine.serving.client import ModelClient
from engine.serving.models import Model
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
            return Reply(text=self.lookahead, stop_reason=STEP_DELIMITER, delay_s=0.02)
        key = self.seeds[body["seed"]]
        self.generated.append((key, body.get("stop")))
        text, ending = self.steps[key]
        stop_reason = STEP_DELIMITER if ending == "delimiter" else None
        return Reply(text=text, stop_reason=stop_reason, delay_s=0.02)

    def pooler(self, body: dict) -> list:
        solution = assistant_text(body["input"])
        bodies = solution.split(TAG)[:-1]
        self.scored.append(bodies)
        values = [self.scores.get(b.split(" ")[0], 0.5) for b in bodies]
        return [[1 - v, v] for v in values]


async def search(world: World, settings: SearchSettings, strategy, keys):
    async with (
        FakeOpenAIServer(world.policy) as policy,
        FakeOpenAIServer(pooler=world.pooler) as prm,
        aiohttp.ClientSession() as session,
    ):
        chat = ChatFormat(chatml_tokenizer(), thinking=False)
        scorer = PRMScorer(Model("prm", ModelClient(session, "prm", [prm.url], FAST_LIMITS), chat))
        searcher = Searcher(
            client=ModelClient(session, "policy", [policy.url], FAST_LIMITS),
            chat=chat,
            scorer=scorer,
            messages=MESSAGES,
            problem="What is 1 + 1?",
            settings=settings,
            sampling=Sampling(seed=0),
        )
        world.seeds = {searcher.request_seed((*key, 0)): key for key in keys}
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
    settings = SearchSettings(n=4, beam_width=2, num_iterations=3)
    beams, searcher, peak = await search(world, settings, beam_search, steps)
    # Iteration 0 keeps a3 (.9) and a1 (.7), in their own order: iteration 1 runs [a1, a3, a1, a3];
    # a1+b2 ends; of a1+b0 (.2), a3+b1 (.8), a3+b3 (.4) the top two go on: [a3b1, a3b3, a3b1, a3b3].
    texts = [[s.split(" ")[0].strip() for s in b.steps] for b in beams]
    assert texts == [["a1", "b2"], ["a3", "b1", "c0"], ["a3", "b3", "c1"], ["a3", "b1", "c2"]]
    assert [b.scores for b in beams][2] == [0.9, 0.4, 0.95]
    tracks = completion_tracks(beams, mode="beam_search", how="last")
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
    settings = SearchSettings(n=2, beam_width=2, num_iterations=3, agg_strategy="min")
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
    assert ["a0\n\npeek", "a1\n\npeek"] == sorted(s[0] for s in world.scored if len(s) == 1)
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
    settings = SearchSettings(n=4, beam_width=2, num_iterations=3)
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


async def test_best_of_n_scores_whole_solutions_step_by_step_in_sampling_order():
    steps = {("best_of_n", i): (f"s{i} x\n\nr{i} \\boxed{{{i}}}", "eos") for i in range(3)}
    world = World(steps, {"r0": 0.2, "r1": 0.9, "r2": 0.4, "s0": 0.1, "s1": 0.3, "s2": 0.99})
    beams, searcher, _ = await search(world, SearchSettings(n=3), best_of_n, steps)
    assert [b.steps for b in beams][1] == ["s1 x\n\n", "r1 \\boxed{1}"]
    assert [b.scores for b in beams] == [[0.1, 0.2], [0.3, 0.9], [0.99, 0.4]]
    tracks = completion_tracks(beams, mode="best_of_n", how="last")
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


def test_beam_search_and_dvts_need_n_to_be_a_multiple_of_the_width():
    with pytest.raises(UsageError, match=r"--n \(6\) must be a multiple of --beam_width \(4\)"):
        SearchSettings(n=6, beam_width=4).check_width()
    SearchSettings(n=8, beam_width=4).check_width()


async def test_beam_search_runs_the_candidates_of_all_problems_in_flight_together(make_models, tmp_path):
    def policy(body):
        final = body.get("stop") is None
        text = "x \\boxed{1}" if final else "step\n\n"
        return Reply(text=text, stop_reason=None if final else STEP_DELIMITER, delay_s=0.05)

    (tmp_path / "config.json").write_text('{"model_type": "qwen2", "architectures": ["Qwen2ForProcessRewardModel"]}')
    records = []
    async with (
        FakeOpenAIServer(policy) as small,
        FakeOpenAIServer(pooler=lambda b: [[0.5, 0.5]] * b["input"].count("<extra_0>")) as prm,
    ):
        models = make_models(small=small, prm=prm)
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
