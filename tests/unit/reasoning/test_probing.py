"""Dynasor-CoT's answer probing on a scripted fake server: when probes are sent, which count, when a
track stops, and what the probes cost, by hand."""

import pytest

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.errors import UsageError
from engine.reasoning.policies.single import SingleModelSettings
from engine.reasoning.probing import PROBE_SUFFIX, Probe, ProbeSettings, agreed, boxed_answer, probe
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies.base import SolveContext
from engine.reasoning.track import TrackSetup, new_track_record
from engine.records import ModelUsage
from tests.fake_openai import FakeOpenAIServer, Reply

PROBLEM = Problem(id="p", problem="What is 3 + 4?", answer="7")
PROMPTS = load_prompt_set("default")


def test_probes_agree_only_when_the_last_ones_all_count_and_say_the_same():
    usage = {}
    seven, hedged, open_box = Probe("7", False, usage), Probe("7", True, usage), Probe(None, False, usage)
    assert agreed([Probe("5", False, usage), seven, seven, seven], 3) == "7"
    assert agreed([seven, hedged, seven], 3) is None
    assert agreed([seven, open_box, seven], 3) is None
    assert agreed([seven, seven], 3) is None
    with pytest.raises(UsageError, match="--probe_every must be at least 1"):
        ProbeSettings(probe_every=0).validate()


class Reasoner:
    """Steps `s{i} a b c` (4 tokens) that never state an answer; the probe after step i answers
    probes[i] (its text after `\\boxed{`)."""

    probes = {0: "5}", 1: "7}", 2: "7} but", 3: "7}", 4: "7}", 5: "7}"}

    def __init__(self):
        self.probe_prompts, self.probe_bodies = [], []

    def __call__(self, body):
        probing = body["prompt"].endswith(PROBE_SUFFIX)
        _, found, reasoning = body["prompt"].removesuffix(PROBE_SUFFIX).rpartition("<think>")
        index = reasoning.count("\n\n") if found else 0
        if probing:
            self.probe_prompts.append(body["prompt"])
            self.probe_bodies.append(body)
            assert body["max_tokens"] == 20
            return Reply(text=self.probes[index - 1])  # a token a character
        return Reply(text=f"s{index} a b c", tokens=[f"s{index}", " a", " b", " c"], stop_reason="\n\n")


def test_probes_agree_as_dynasor_groups_them_equivalent_answers_agree():
    usage = {}
    half = [Probe("1/2", False, usage), Probe("\\frac{1}{2}", False, usage), Probe("0.5", False, usage)]
    assert agreed(half, 3) == "1/2"
    assert agreed([*half[:2], Probe("0.6", False, usage)], 3) is None


def test_a_probe_answer_runs_to_the_first_unpaired_brace():
    assert boxed_answer("3}\\] and \\boxed{4}") == "3"  # Dynasor's obtain_answer; the last box would say 4
    assert boxed_answer("\\frac{1}{2}} so") == "\\frac{1}{2}"
    assert boxed_answer("\\frac{1}{2") is None and boxed_answer(" }") is None


@pytest.mark.parametrize(
    ("text", "hedged"),
    [("204} \\]\n\n**Note:**", True), ("7}. I know this", True), ("7}. Now let", True), ("7}. That is 7.", False)],
)
async def test_hedging_words_match_inside_words_as_dynasor_matches_them(make_models, text, hedged):
    # "no" in "Note", "know", "Now": a whole-word rule would call these probes certain
    async with FakeOpenAIServer([Reply(text=text)]) as server:
        found = await probe(make_models(small=server)["small"], (), "s0\n\n", index=1)
    assert found.hedged is hedged and found.answer is not None


async def test_a_track_ends_once_three_probes_in_a_row_count_and_agree(make_models):
    # Probes 5, 7, 7 (hedged), 7, 7, 7: the last three count and agree only after the 6th step.
    reasoner = Reasoner()
    async with FakeOpenAIServer(reasoner) as server:
        models = make_models(small=server, big=server)
        ctx = SolveContext(
            models=models,
            prompts=PROMPTS,
            problem=PROBLEM,
            repeat_id=0,
            run_id="r",
            dataset="d",
            track_slots=None,
            strategy="vote",
            settings=None,
            policy="small",
            policy_settings=SingleModelSettings(stepwise=True),
            reasoning=ReasoningConfig(temperature=0.8, top_p=1.0),
            runner="test",
            config_digest="x",
            probing=ProbeSettings(probe_every=4, probe_agree=3),
        )
        setup = TrackSetup(track_id=0, policy="small", seed=1)
        record = await ctx.new_track(new_track_record(setup), setup).run()
    assert record.finish_reason == "probe" and record.answer == "7" and len(record.steps) == 6
    assert [s.detail["probe"] for s in record.steps] == ["5", "7", "7", "7", "7", "7"]
    assert [s.detail["probe_hedged"] for s in record.steps] == [False, False, True, False, False, False]
    # each step costs its own request (4 tokens) and its probe's (2 tokens: "5}")
    assert record.steps[0].usage == {"small": ModelUsage(10, 6, 2)}
    assert record.usage["small"].requests == 12 and len(reasoner.probe_prompts) == 6
    assert reasoner.probe_prompts[1].endswith("s0 a b c\n\ns1 a b c\n\n" + PROBE_SUFFIX)
    # Dynasor's fixed probe sampling, whatever the track's (0.6 / 0.95 by default, 0.8 / 1.0 here)
    assert {(b["temperature"], b["top_p"]) for b in reasoner.probe_bodies} == {(0.6, 0.95)}
