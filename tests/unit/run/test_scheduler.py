"""Scheduler limits, early stop with real cancellation, track planning and method selection."""

import asyncio
import dataclasses

from engine.data.problems import Problem
from engine.data.prompts import load_prompt_set
from engine.reasoning.method_selection import parse_codes, select_methods, selector_max_tokens
from engine.reasoning.seeds import track_seed
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies.track_group import plan_tracks
from engine.reasoning.strategies.vote import VoteSettings
from engine.run.config import ModelConfig, RunConfig, SchedulerLimits
from engine.run.scheduler import Scheduler, WorkItem
from engine.serving.models import SEED_STRIDE
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.unit.conftest import FAST_LIMITS

PROBLEMS = [Problem(id=str(i), problem=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(5)]


def config(max_tracks_in_flight=64, max_problems_in_flight=8, **vote):
    return RunConfig(
        runner="scale",
        output_dir="unused",
        models={"big": ModelConfig("big"), "small": ModelConfig("small")},
        policy="big",
        strategy_settings=VoteSettings(**vote),
        reasoning=ReasoningConfig(seed=0),
        limits=SchedulerLimits(max_tracks_in_flight, max_problems_in_flight),
        prompt_set="roles",
    )


def plan(cfg, prompts, methods=None, repeat_id=0, problem_id="0"):
    settings = cfg.strategy_settings
    return plan_tracks(
        settings.tracks,
        prompts,
        policy=cfg.policy,
        base_seed=0,
        problem_id=problem_id,
        repeat_id=repeat_id,
        use_role_prompts=settings.use_role_prompts,
        methods=methods,
    )


# Every track seed of the test problems (run seed 0), to read a request's track back from its seed.
TRACK_OF_SEED = {track_seed(0, str(p), r, t): t for p in range(30) for r in range(2) for t in range(16)}


def track_of(body):
    return TRACK_OF_SEED[body["seed"] // SEED_STRIDE]


def scripted_tracks(answers, holds=None):
    """Track t writes its whole reasoning in one request (SpecLRM's scale_reason), answering
    answers[t]; with `holds`, track t answers only once the event holds[t] is set (None: at once)."""

    def respond(body):
        t = track_of(body)
        assert "stop" not in body, "the single-model policy makes one request with no step stops"
        after = holds[t] if holds else None
        return Reply(text=f"thinking</think>\\boxed{{{answers[t]}}}", after=after)

    return respond


def never():
    """An event nobody sets: a track that holds until it is cancelled."""
    return asyncio.Event()


async def run_scheduler(make_models, responder, cfg, problems, gate_in_flight=None):
    records = []
    async with FakeOpenAIServer(responder, gate_in_flight=gate_in_flight) as big:
        models = make_models(big=big)
        scheduler = Scheduler(
            cfg, models, load_prompt_set(cfg.prompt_set), run_id="r", dataset="d", on_record=records.append
        )
        await scheduler.run([WorkItem(p, 0) for p in problems])
        await big.quiet()  # the server has seen every closed connection
    return records, big


async def test_tracks_in_flight_never_exceed_the_limit(make_models):
    cfg = config(tracks=4, max_tracks_in_flight=3, max_problems_in_flight=2)
    records, big = await run_scheduler(make_models, scripted_tracks(["1"] * 4), cfg, PROBLEMS, gate_in_flight=3)
    assert big.peak_in_flight == 3
    assert sorted(r.problem_id for r in records) == [p.id for p in PROBLEMS]
    assert all(len(r.tracks) == 4 and r.answer == "1" and not r.early_stopped for r in records)


async def test_thirty_problems_of_eight_tracks_never_open_more_requests_than_configured(make_models):
    problems = [Problem(id=str(i), problem=f"What is {i} + {i}?", answer=str(2 * i)) for i in range(30)]
    cfg = config(tracks=8, max_tracks_in_flight=12, max_problems_in_flight=4)
    limits = dataclasses.replace(FAST_LIMITS, max_in_flight_per_endpoint=5)
    records = []
    async with FakeOpenAIServer(scripted_tracks(["1"] * 8), gate_in_flight=5) as big:
        scheduler = Scheduler(
            cfg,
            make_models(big=big, limits=limits),
            load_prompt_set("roles"),
            run_id="r",
            dataset="d",
            on_record=records.append,
        )
        await scheduler.run([WorkItem(p, 0) for p in problems])
    assert big.peak_in_flight == 5
    assert len(records) == 30 and all(len(r.tracks) == 8 for r in records)
    assert len(big.requests) == 30 * 8  # one request per track


async def test_problems_start_in_order(make_models):
    cfg = config(tracks=1, max_problems_in_flight=1)
    records, big = await run_scheduler(make_models, scripted_tracks(["1"]), cfg, PROBLEMS)
    first_prompt_of = [
        next(i for i, b in enumerate(big.requests) if f"What is {p.id} + " in b["prompt"]) for p in PROBLEMS
    ]
    assert first_prompt_of == sorted(first_prompt_of)
    assert [r.problem_id for r in records] == [p.id for p in PROBLEMS]


async def test_early_stop_cancels_the_tracks_that_cannot_change_the_answer(make_models):
    cfg = config(tracks=5, early_stop=True)
    # Tracks 0-2 answer once all five requests are at the server; tracks 3 and 4 hold until cancelled.
    hold = [None, None, None, never(), never()]
    records, big = await run_scheduler(
        make_models, scripted_tracks(["7", "7", "7", "8", "8"], hold), cfg, PROBLEMS[:1], gate_in_flight=5
    )
    (record,) = records
    assert record.answer == "7" and record.early_stopped
    assert record.cancelled_tracks == [3, 4]
    assert [t.finish_reason for t in record.tracks] == ["answer"] * 3 + ["cancelled"] * 2
    assert big.disconnects == 2 and big.in_flight == 0
    assert record.tokens_saved > 0
    leftover = [t for t in asyncio.all_tasks() if t.get_coro().__name__ == "one"]
    assert leftover == []


async def test_without_early_stop_every_track_finishes(make_models):
    cfg = config(tracks=3)
    records, big = await run_scheduler(make_models, scripted_tracks(["7", "7", "8"]), cfg, PROBLEMS[:1])
    assert records[0].cancelled_tracks == [] and records[0].votes == {"7": 2.0, "8": 1.0}
    assert big.disconnects == 0


async def test_tracks_in_flight_bounds_the_tracks_of_each_problem_and_starts_them_in_order(make_models):
    cfg = config(tracks=5, tracks_in_flight=2)
    records, big = await run_scheduler(make_models, scripted_tracks(["7"] * 5), cfg, PROBLEMS[:1], gate_in_flight=2)
    assert big.peak_in_flight == 2
    assert [track_of(b) for b in big.requests] == [0, 1, 2, 3, 4]
    assert [t.finish_reason for t in records[0].tracks] == ["answer"] * 5 and not records[0].early_stopped
    # the window is per problem: two problems at once have four tracks in flight
    records, big = await run_scheduler(make_models, scripted_tracks(["7"] * 5), cfg, PROBLEMS[:2], gate_in_flight=4)
    assert big.peak_in_flight == 4 and len(records) == 2


def chained_tracks(answer):
    """Track t > 0 answers once track t + 1's request has arrived, so the window has started
    every track up to the last one before the third answer; the last track holds until cancelled."""
    arrived: dict[int, asyncio.Event] = {}

    def respond(body):
        t = track_of(body)
        arrived.setdefault(t, asyncio.Event()).set()
        if t == 0:
            return Reply(text=f"thinking</think>\\boxed{{{answer}}}")
        if t == 3:
            return Reply(text="never sent", after=never())
        return Reply(text=f"thinking</think>\\boxed{{{answer}}}", after=arrived.setdefault(t + 1, asyncio.Event()))

    return respond


async def test_early_stop_skips_the_tracks_the_window_has_not_started(make_models):
    cfg = config(tracks=5, tracks_in_flight=2, early_stop=True)
    responder = chained_tracks("7")
    records, big = await run_scheduler(make_models, responder, cfg, PROBLEMS[:1])
    (record,) = records
    # three "7" against the two open tracks settle it: track 3 was running, track 4 never started
    assert record.answer == "7" and record.early_stopped and record.cancelled_tracks == [3, 4]
    assert [t.finish_reason for t in record.tracks] == ["answer"] * 3 + ["cancelled", "skipped"]
    assert sorted(track_of(b) for b in big.requests) == [0, 1, 2, 3]
    assert big.disconnects == 1 and big.in_flight == 0
    skipped = record.tracks[4]
    assert skipped.usage == {} and skipped.steps == [] and skipped.answer is None
    finished_mean = sum(sum(u.completion_tokens for u in t.usage.values()) for t in record.tracks[:3]) / 3
    assert record.tokens_saved == int(2 * finished_mean)  # the cancelled track had no tokens yet either


async def test_confident_early_stop_sends_no_request_for_later_tracks(make_models):
    cfg = config(tracks=8, tracks_in_flight=1, early_stop=True, early_stop_confidence=0.9)
    records, big = await run_scheduler(make_models, scripted_tracks(["7"] * 8), cfg, PROBLEMS[:1])
    (record,) = records
    # P(leader ahead) after 1, 2, 3 agreeing votes: 0.75, 0.875, 0.9375: the fourth track never starts
    assert [track_of(b) for b in big.requests] == [0, 1, 2]
    assert record.cancelled_tracks == [3, 4, 5, 6, 7] and record.votes == {"7": 3.0}
    assert {t.finish_reason for t in record.tracks[3:]} == {"skipped"} and big.disconnects == 0


async def test_confidence_waits_while_the_answers_disagree(make_models):
    cfg = config(tracks=4, tracks_in_flight=1, early_stop=True, early_stop_confidence=0.9)
    responder = scripted_tracks(["7", "8", "7", "7"])
    records, big = await run_scheduler(make_models, responder, cfg, PROBLEMS[:1])
    # (1, 1), (2, 1) = 0.6875: not confident; then three "7" against one "8" and no open track
    assert len(big.requests) == 4 and records[0].cancelled_tracks == [] and records[0].answer == "7"


def test_roles_are_assigned_round_robin_and_seeds_differ():
    prompts = load_prompt_set("roles")
    setups = plan(config(tracks=7, use_role_prompts=True), prompts, repeat_id=2)
    roles = list(prompts.roles)
    assert [s.role for s in setups] == [roles[i % len(roles)] for i in range(7)]
    assert [s.instruction for s in setups] == [prompts.roles[s.role] for s in setups]
    assert len({s.seed for s in setups}) == 7


def test_track_seeds_fold_in_the_problem_and_the_repeat():
    seeds = {
        (problem, repeat): [s.seed for s in plan(config(tracks=3), load_prompt_set("roles"), None, repeat, problem)]
        for problem in ("0", "1")
        for repeat in (0, 1)
    }
    # Track k of two problems (or two repeats) never shares a seed: each draws its own randomness.
    assert len({seed for track_seeds in seeds.values() for seed in track_seeds}) == 12
    assert seeds[("1", 0)] == [s.seed for s in plan(config(tracks=3), load_prompt_set("roles"), None, 0, "1")]


def test_plain_tracks_have_no_instruction():
    setups = plan(config(tracks=3), load_prompt_set("roles"))
    assert [(s.role, s.instruction) for s in setups] == [(None, None)] * 3


def test_methods_take_precedence_and_cycle():
    prompts = load_prompt_set("methods")
    setups = plan(config(tracks=3), prompts, methods=["casework", "symmetry"])
    assert [s.method for s in setups] == ["casework", "symmetry", "casework"]
    assert setups[1].instruction == prompts.methods["symmetry"].instruction


CODES = list("ABCDEFGHIJKLM")


def test_parse_codes_reads_letters_in_order_with_repeats_and_cuts_to_the_count():
    assert parse_codes("B,E,F", CODES, 3) == ["B", "E", "F"]
    assert parse_codes(" M, M", CODES, 2) == ["M", "M"]
    assert parse_codes("B, E, F, A", CODES, 3) == ["B", "E", "F"]
    # letters past the list's last code (here M) are not codes
    assert parse_codes("Z, N, C", CODES, 3) == ["C"]


def test_selector_asks_for_2n_minus_1_tokens():
    assert [selector_max_tokens(n) for n in (1, 3, 5)] == [1, 5, 9]


A_PROBLEM = Problem(id="p", problem="a problem", answer="1")


async def test_select_methods_sends_the_letter_list_after_a_fixed_prefix_and_reads_codes(make_models):
    prompts = load_prompt_set("default")
    async with FakeOpenAIServer([Reply(text="B,E,F")]) as big:
        choice = await select_methods(A_PROBLEM, prompts, make_models(big=big)["big"], 3)
    body = big.requests[0]
    assert body["max_tokens"] == 5 and body["temperature"] == 0.0
    assert body["prompt"].endswith("<|im_start|>assistant\n<think></think>I think the best 3 methods are: ")
    for method in prompts.methods.values():
        assert f"\n{method.code}. {method.description}" in body["prompt"]
    assert "a problem" in body["prompt"] and "(by their codes, e.g. B,E,F)" in body["prompt"]
    assert choice.codes == ["B", "E", "F"] and not choice.fallback
    assert choice.methods == [list(prompts.methods)[i] for i in (1, 4, 5)]
    assert choice.usage["big"].requests == 1


async def test_select_methods_fills_a_short_answer_with_the_unknown_choice(make_models):
    prompts = load_prompt_set("methods")
    async with FakeOpenAIServer([Reply(text="no idea")]) as big:
        choice = await select_methods(A_PROBLEM, prompts, make_models(big=big)["big"], 3)
    # "no idea" holds no capital letter of the list: every track takes the last entry, "unknown"
    assert choice.fallback and choice.raw == "no idea"
    assert choice.methods == ["unknown"] * 3 and choice.codes == ["M"] * 3
    assert prompts.methods["unknown"].instruction == ""


async def test_select_methods_keeps_a_repeated_code(make_models):
    prompts = load_prompt_set("methods")
    async with FakeOpenAIServer([Reply(text="C,C")]) as big:
        choice = await select_methods(A_PROBLEM, prompts, make_models(big=big)["big"], 2)
    assert choice.methods == [list(prompts.methods)[2]] * 2 and not choice.fallback


async def test_a_selector_that_fails_for_good_falls_back_and_records_the_error(make_models):
    prompts = load_prompt_set("methods")
    async with FakeOpenAIServer([Reply(status=400, error_message="prompt too long")]) as big:
        choice = await select_methods(A_PROBLEM, prompts, make_models(big=big)["big"], 2)
    assert choice.fallback and choice.methods == ["unknown", "unknown"]
    assert "prompt too long" in choice.error and choice.usage == {}


async def test_a_track_that_raises_fails_alone_and_the_problem_is_still_voted(make_models, monkeypatch):
    from engine.reasoning.strategies.base import SolveContext

    made = []
    real = SolveContext.new_policy

    class Broken:
        async def step(self, ctx):
            raise ZeroDivisionError("a bug in one track")

        def close(self):
            return []

    def new_policy(self, models):
        made.append(1)
        return Broken() if len(made) == 2 else real(self, models)

    monkeypatch.setattr(SolveContext, "new_policy", new_policy)
    cfg = config(tracks=3)
    records, _ = await run_scheduler(make_models, scripted_tracks(["7", "7", "7"]), cfg, PROBLEMS[:1])
    (record,) = records
    assert [t.finish_reason for t in record.tracks] == ["answer", "failed", "answer"]
    assert record.tracks[1].error == "ZeroDivisionError: a bug in one track"
    assert record.answer == "7" and record.votes == {"7": 2.0}
