"""DeepConf by hand: token and trace confidence, the kept traces and their weighted vote, the online
threshold, pruning and consensus stop, on a scripted fake server with chosen logprobs."""

import math
import random

import numpy
import pytest

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.reasoning.confidence import (
    group_confidences,
    keep_most_confident,
    percentile,
    token_confidence,
    trace_confidence,
)
from engine.reasoning.policies.single import SingleModelSettings
from engine.reasoning.seeds import track_seed
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies.deepconf import DeepConfSettings
from engine.run.config import ModelConfig, RunConfig, SchedulerLimits
from engine.run.scheduler import Scheduler, WorkItem
from engine.serving.models import SEED_STRIDE
from tests.fake_openai import FakeOpenAIServer, Reply

PROBLEM = Problem(id="0", problem="What is 3 + 4?", answer="7")


def test_token_group_and_trace_confidence():
    assert token_confidence({"a": -0.1, "b": -2.3, "c": -4.0}) == pytest.approx(6.4 / 3)
    tokens = [1.0, 2.0, 3.0, 4.0]
    assert group_confidences(tokens, 2) == [1.5, 2.5, 3.5]
    assert group_confidences(tokens, 8) == [2.5]  # fewer tokens than a window: one group of all
    assert trace_confidence(tokens, "mean", 2) == 2.5
    assert trace_confidence(tokens, "lowest", 2) == 1.5
    assert trace_confidence(tokens, "tail", 2) == 3.5
    assert trace_confidence(tokens, "bottom10", 2) == 1.5  # the lowest 10% of 3 groups: 1 group
    assert trace_confidence([], "mean", 2) is None


def test_the_most_confident_percent_is_kept_and_percentiles_interpolate():
    assert keep_most_confident({0: 1.0, 1: 3.0, 2: 2.0, 3: 3.0}, 50) == [1, 3]
    assert keep_most_confident({0: 1.0, 1: 3.0}, 10) == [1]
    assert percentile([1.0, 2.0, 3.0, 4.0], 90) == pytest.approx(3.7)
    # DeepConf's bar is np.percentile's, compared with >=: 90% keeps 14 of 16 (a ceil count kept 15)
    assert len(keep_most_confident({i: float(i) for i in range(16)}, 90)) == 14
    assert len(keep_most_confident({i: float(i) for i in range(512)}, 90)) == 460
    assert len(keep_most_confident({i: float(i) for i in range(512)}, 10)) == 52


def test_percentiles_are_numpys_to_the_bit():
    rng = random.Random(3)
    for size in (2, 5, 16, 17, 255):
        values = [rng.uniform(0.0, 20.0) for _ in range(size)]
        for q in (10, 33.3, 50, 90):
            assert percentile(values, q) == float(numpy.percentile(values, q))


def test_bottom10_averages_deepconfs_int_count_of_groups():
    # 19 windows: int(1.9) = 1 group, the lowest (a ceil count averaged the lowest two)
    tokens = [5.0] * 10 + [1.0] + [3.0] + [5.0] * 8
    assert trace_confidence(tokens, "bottom10", 2) == trace_confidence(tokens, "lowest", 2) == 2.0


def logprobs_of(confidence):
    """Two top-k alternatives whose mean logprob is -confidence."""
    return {
        "t": -(confidence - 0.5 if confidence > 1 else confidence / 2),
        "x": -(confidence + 0.5 if confidence > 1 else 1.5 * confidence),
    }


TRACK_OF_SEED = {track_seed(0, PROBLEM.id, 0, t): t for t in range(16)}


class Traces:
    """Track t (known by its seed, base seed 0) writes `steps` steps, the last stating answers[t] (None:
    a last step with no answer); every token of its steps has confidence confidences[t], or a pair's
    first value before its last step and the second in it (and, given `sampled`, that logprob as the
    sampled token's own, the one alternative making up the confidence)."""

    def __init__(self, answers, confidences, steps=1, sampled=None):
        self.answers, self.confidences, self.steps, self.sampled = answers, confidences, steps, sampled
        self.asked = []

    def top(self, track, token, last):
        confidence = self.confidences[track]
        if isinstance(confidence, tuple):
            confidence = confidence[1] if last else confidence[0]
        if self.sampled is None:
            pair = logprobs_of(confidence)
            return {token: pair["t"], "x": pair["x"]}
        own = self.sampled[track]
        return {token: own, "x": -2 * confidence - own}

    def __call__(self, body):
        track = TRACK_OF_SEED[body["seed"] // SEED_STRIDE]
        self.asked.append((track, body.get("logprobs")))
        _, found, reasoning = body["prompt"].rpartition("<think>")
        index = reasoning.count("\n\n") if found else 0  # a first step has no `<think>` yet
        last, answer = index == self.steps - 1, self.answers[track]
        text = ("so I stop" if answer is None else f"so \\boxed{{{answer}}}") if last else "let me think"
        tokens = text.split(" ")
        tokens = [w + " " for w in tokens[:-1]] + tokens[-1:]
        top = [self.top(track, tok, last) for tok in tokens]
        return Reply(text=text, tokens=tokens, top_logprobs=top, stop_reason="\n\n")


STEPWISE = SingleModelSettings(stepwise=True)
ONE_REQUEST = SingleModelSettings()


async def solve(make_models, traces, settings, policy="small", policy_settings=STEPWISE):
    config = RunConfig(
        runner="test",
        output_dir="unused",
        models={"small": ModelConfig("small"), "big": ModelConfig("big")},
        policy=policy,
        policy_settings=policy_settings,
        strategy="deepconf",
        strategy_settings=settings,
        reasoning=ReasoningConfig(seed=0),
        limits=SchedulerLimits(64, 1),
    )
    records = []
    async with FakeOpenAIServer(traces) as server:
        models = make_models(small=server, big=server)
        scheduler = Scheduler(
            config, models, load_prompt_set("default"), run_id="r", dataset="d", on_record=records.append
        )
        await scheduler.run([WorkItem(PROBLEM, 0)])
    return records[0]


async def test_offline_keeps_the_most_confident_traces_and_weighs_their_votes(make_models):
    # Three unsure "7" (confidence 1.0) against one sure "8" (2.5): majority says 7.
    traces = Traces({0: "7", 1: "7", 2: "8", 3: "7"}, {0: 1.0, 1: 1.0, 2: 2.5, 3: 1.0})
    top = await solve(make_models, traces, DeepConfSettings(deepconf_traces=4, deepconf_keep=25))
    assert top.answer == "8" and top.details["kept"] == [2] and top.votes == {"8": 2.5}
    assert all(k == 20 for _, k in traces.asked)  # the channel: every writer request asked for top-20
    assert top.tracks[0].steps[0].token_confidence == [1.0, 1.0]
    # Keeping 90% (all four, ceil 3.6) weighs 7 by 3 x 1.0 against 8 by 2.5.
    wide = await solve(
        make_models, Traces(traces.answers, traces.confidences), DeepConfSettings(deepconf_traces=4, deepconf_keep=90)
    )
    assert wide.answer == "7" and wide.votes == {"7": 3.0, "8": 2.5} and wide.details["kept"] == [0, 1, 2, 3]


async def test_offline_ranks_only_answered_traces(make_models):
    # The two most confident traces end without an answer (a budget-cut or looping trace is often the
    # most confident): DeepConf keeps the top half of the answered ones, not those two.
    traces = Traces({0: None, 1: None, 2: "7", 3: "8"}, {0: 5.0, 1: 5.0, 2: 2.0, 3: 1.0})
    record = await solve(
        make_models, traces, DeepConfSettings(deepconf_traces=4, deepconf_keep=50), policy_settings=ONE_REQUEST
    )
    assert record.details["confidence"] == {"2": 2.0, "3": 1.0} and record.details["kept"] == [2]
    assert record.answer == "7"


async def test_online_never_stops_a_trace_short_of_a_full_window_nor_stops_at_consensus(make_models):
    # Every trace is shorter than the 2048-token window: DeepConf's processor stops none. t2 (1.0)
    # ends with its answer but votes not (its one group is under the 3.0 bar, as DeepConf marks it
    # afterwards); with no --deepconf_consensus every trace of the budget runs.
    answers = {0: "7", 1: "8", 2: "7", 3: "8"}
    confidences = {0: 3.0, 1: 3.0, 2: 1.0, 3: (4.0, 2.0)}
    settings = DeepConfSettings(
        deepconf_traces=4, deepconf_keep=50, deepconf_online=True, deepconf_warmup=2, deepconf_measure="mean"
    )
    record = await solve(make_models, Traces(answers, confidences, steps=2), settings)
    assert record.details["stopped"] == [] and record.details["skipped"] == []
    assert [t.finish_reason for t in record.tracks] == ["answer"] * 4
    assert record.details["measure"] == "lowest" and record.details["kept"] == [0, 1, 3]
    # t3: the mean of its one group (3 tokens at 4.0, 2 at 2.0) is 3.2, and that group is its lowest
    assert record.votes == {"7": pytest.approx(3.0), "8": pytest.approx(6.2)} and record.answer == "8"


async def test_a_splitreason_policy_gives_deepconf_the_confidences_of_its_chunks(make_models):
    # SplitReason's requests once dropped the track's logprobs request: no trace had a confidence
    # and every DeepConf answer was None. The server answers logprobs only when asked for them.
    def chunk(body):
        text = "so \\boxed{7}"
        asked = body.get("logprobs")
        return Reply(text=text, top_logprobs=[{t: -0.5, "#": -1.5} for t in text] if asked else None)

    settings = DeepConfSettings(deepconf_traces=4, deepconf_keep=50)
    record = await solve(make_models, chunk, settings, policy="random_switch", policy_settings=None)
    # every trace is as confident as the others: all sit at the bar, and DeepConf keeps what ties it
    assert record.answer == "7" and record.votes == {"7": 4.0}
    steps = [s for t in record.tracks for s in t.steps]
    assert steps and all(s.token_confidence == [1.0] * s.tokens for s in steps)


async def test_the_sampled_tokens_logprobs_can_be_measured_instead_and_weigh_by_their_probability(make_models):
    # The sure "8" by top-k confidence (2.5) wrote tokens it gave logprob -2.0; the three "7" wrote
    # tokens of logprob -0.1, -0.2, -0.3 (confidences 1.0).
    answers, confidences = {0: "7", 1: "7", 2: "8", 3: "7"}, {0: 1.0, 1: 1.0, 2: 2.5, 3: 1.0}
    sampled = {0: -0.1, 1: -0.2, 2: -2.0, 3: -0.3}
    settings = DeepConfSettings(deepconf_traces=4, deepconf_keep=25, deepconf_token="logprob")
    top = await solve(make_models, Traces(answers, confidences, sampled=sampled), settings)
    assert top.tracks[2].steps[0].token_logprob == [-2.0, -2.0] and top.tracks[2].steps[0].token_confidence == [
        2.5,
        2.5,
    ]
    assert top.details["token_score"] == "logprob" and top.details["kept"] == [0]
    assert top.answer == "7" and top.details["confidence"]["2"] == pytest.approx(-2.0)
    assert top.votes == {"7": pytest.approx(math.exp(-0.1))}
    # Keeping 90%: the bar is the 10th percentile, -1.49, so the 8 (-2.0) falls under it, as under
    # DeepConf's filter_top_confidence (a count of ceil(90% of 4) kept it); each kept trace weighs the
    # geometric-mean probability of its tokens.
    wide = await solve(
        make_models,
        Traces(answers, confidences, sampled=sampled),
        DeepConfSettings(deepconf_traces=4, deepconf_keep=90, deepconf_token="logprob"),
    )
    assert wide.details["kept"] == [0, 1, 3]
    assert wide.votes == {"7": pytest.approx(math.exp(-0.1) + math.exp(-0.2) + math.exp(-0.3))}


async def test_online_sets_a_threshold_stops_weak_traces_and_stops_at_consensus(make_models):
    # Warm-up t0 ("7") and t1 ("8"), both at 3.0: threshold 3.0, a 50:50 vote. t2 (1.0) is stopped
    # after its first step (3 tokens: a full window of 2); t3 and t4 ("7", 3.0) bring 7 to 9/12 = 0.75
    # >= 0.7 (spectra's --deepconf_consensus): t5 never starts.
    # t4's lowest group is 3.0 (its mean 3.8): online votes weigh the lowest group, not the measure.
    answers = {0: "7", 1: "8", 2: "7", 3: "7", 4: "7", 5: "8"}
    confidences = {0: 3.0, 1: 3.0, 2: 1.0, 3: 3.0, 4: (3.0, 5.0), 5: 3.0}
    settings = DeepConfSettings(
        deepconf_traces=6,
        deepconf_keep=50,
        deepconf_online=True,
        deepconf_warmup=2,
        deepconf_consensus=0.7,
        deepconf_in_flight=1,
        deepconf_window=2,
        deepconf_measure="mean",
    )
    record = await solve(make_models, Traces(answers, confidences, steps=2), settings)
    assert record.details["threshold"] == pytest.approx(3.0) and record.details["warmup"] == [0, 1]
    assert record.details["stopped"] == [2] and record.details["skipped"] == [5]
    assert [t.finish_reason for t in record.tracks] == ["answer", "answer", "stopped", "answer", "answer", "skipped"]
    assert len(record.tracks[2].steps) == 1 and record.tracks[2].answer is None
    assert record.details["kept"] == [0, 1, 3, 4] and record.answer == "7"
    assert record.votes == {"7": pytest.approx(9.0), "8": pytest.approx(3.0)}


async def test_the_evaluator_replays_majority_and_every_variant_at_each_budget(make_models, tmp_path, capsys):
    from evaluators.deepconf import main
    from tests.unit.evaluators.test_evaluate import write_run

    traces = Traces({0: "7", 1: "7", 2: "8", 3: "7"}, {0: 1.0, 1: 1.0, 2: 2.5, 3: 1.0})
    record = await solve(make_models, traces, DeepConfSettings(deepconf_traces=4, deepconf_keep=25))
    run = write_run(tmp_path / "deepconf", [record], mode="test")
    assert main([str(run)]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    # budgets 1, 2, 4: the first one or two tracks say 7 (right); at 4 the sure "8" alone is kept at 10%
    assert rows["majority"] == ["100.0%", "100.0%", "100.0%"]
    assert rows["lowest@10%"] == ["100.0%", "100.0%", "0.0%"]
    assert rows["mean@90%"] == ["100.0%", "100.0%", "100.0%"]  # 3 x 1.0 outweigh 2.5
    # By the sampled tokens' logprobs (-0.5 each for the unsure 7s, -2.0 for the 8), a 7 is kept.
    assert main([str(run), "--token_score", "logprob"]) == 0
    rows = {line.split()[0]: line.split()[1:] for line in capsys.readouterr().out.splitlines()[2:]}
    assert rows["lowest@10%"] == ["100.0%", "100.0%", "100.0%"]
