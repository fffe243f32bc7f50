"""The cost ledger: the union of busy intervals and every figure per role, by hand-computed cases;
its table, its comparison and its line in the viewer."""

import pytest

from engine.records import ProblemRecord, RequestCost, StepRecord, TrackRecord
from evaluators.compare import ProblemFigures, compare
from evaluators.ledger import busy_seconds, ledger_of, request_seconds
from evaluators.tables import ledger_table, render_text
from evaluators.viewer.payload import ledger_payload

BIG, SMALL, PRM = "http://big:8000", "http://small:8001", "http://prm:8002"


@pytest.mark.parametrize(
    ("intervals", "seconds"),
    [
        ([], 0.0),
        ([(0, 2)], 2.0),
        ([(0, 2), (1, 3)], 3.0),  # overlapping: the second counts from 2 on
        ([(0, 1), (2, 3)], 2.0),  # apart: both whole
        ([(0, 1), (1, 2)], 2.0),  # touching
        ([(0, 5), (1, 2), (3, 4)], 5.0),  # inside another: nothing more
        ([(4, 6), (0, 1), (0.5, 4.5)], 6.0),  # unsorted: [0, 6]
        ([(10, 12), (0, 3), (2, 4), (11, 15)], 9.0),  # [0, 4] and [10, 15]
        ([(3, 3), (1, 2)], 1.0),  # an empty interval adds nothing
    ],
)
def test_busy_seconds_are_the_union_of_the_intervals(intervals, seconds):
    assert busy_seconds(intervals) == seconds


def timed(role, server, started, ended, queue, prefill, generation, *, prompt=100, cached=None, **kw):
    return RequestCost(
        role=role, purpose="step", server=server, model=role, prompt_tokens=prompt, cached_prompt_tokens=cached,
        client_s=ended - started, started_at=started, ended_at=ended, queue_s=queue, prefill_s=prefill,
        generation_s=generation, **kw,
    )  # fmt: skip


def record(problem_id="p", *, step_costs=(), track_costs=(), own_costs=()):
    step = StepRecord(index=0, text="x", writer="small", tokens=1, costs=list(step_costs))
    track = TrackRecord(track_id=0, steps=[step], costs=list(track_costs))
    return ProblemRecord(
        run_id="r", dataset="toy", problem_id=problem_id, repeat_id=0, runner="spec", problem="q",
        reference_answer="1", tracks=[track], costs=list(own_costs),
    )  # fmt: skip


def sample_record():
    """Two small drafts batched together, a big score, a PRM pooling request and a cancelled draft."""
    drafts = [
        timed("small", SMALL, 100.0, 101.0, 0.1, 0.2, 0.6, prompt=200, cached=150),
        timed("small", SMALL, 100.5, 102.0, 0.3, 0.2, 0.9, prompt=100, cached=None),
    ]
    score = timed("big", BIG, 101.0, 101.5, 0.05, 0.25, 0.1, prompt=300, cached=300)
    prm = RequestCost("prm", "prm", PRM, "prm", prompt_tokens=50, client_s=0.4, started_at=102.0, ended_at=102.4)
    cancelled = RequestCost("small", "draft", None, "small", wasted=True, cancelled=True)
    return record(step_costs=[*drafts, score], track_costs=[cancelled], own_costs=[prm])


def test_every_figure_of_a_record_by_role_computed_by_hand():
    ledger = ledger_of([sample_record()])
    assert list(ledger) == ["small", "big", "prm"]
    small, big, prm = ledger["small"], ledger["big"], ledger["prm"]
    # small: 0.9 + 1.4 server seconds; the cancelled draft counts as a request with no seconds
    assert small.requests == 3 and small.request_s == pytest.approx(2.3) and small.client_timed == 0
    assert small.busy_s == {SMALL: pytest.approx(2.0)}  # [100, 101] and [100.5, 102] overlap: 2 s, not 2.5
    assert small.cached_share == 0.75  # 150 of 200: only the request that reported its cached tokens
    assert small.queue_share == pytest.approx(0.4 / 2.3)
    assert big.request_s == pytest.approx(0.4) and big.cached_share == 1.0 and big.busy_s == {BIG: 0.5}
    assert big.queue_share == pytest.approx(0.125)
    # the PRM's pooling request has no server timings: the client's 0.4 s stand in, counted as such
    assert prm.request_s == pytest.approx(0.4) and prm.client_timed == 1
    assert prm.cached_share is None and prm.queue_share is None
    assert request_seconds(sample_record()) == pytest.approx(3.1)


def test_records_without_entries_or_timings_give_an_empty_or_client_timed_ledger():
    assert ledger_of([record()]) == {}
    untimed = RequestCost("big", "step", BIG, "big", prompt_tokens=10, client_s=2.0, started_at=5.0, ended_at=7.0)
    (big,) = ledger_of([record(step_costs=[untimed])]).values()
    assert (big.request_s, big.client_timed, big.busy_s, big.queue_share) == (2.0, 1, {BIG: 2.0}, None)


def test_busy_seconds_are_unioned_across_records_and_shown_per_record_in_the_table(tmp_path):
    first = record("a", step_costs=[timed("big", BIG, 0.0, 2.0, 0.5, 0.5, 1.0)])
    second = record("b", step_costs=[timed("big", BIG, 1.0, 4.0, 0.0, 1.0, 2.0)])
    assert ledger_of([first, second])["big"].busy_s == {BIG: 4.0}

    class Summary:  # the fields the table reads
        name, records, ledger = "run", 2, ledger_of([first, second])

    table = ledger_table([Summary])
    assert table.rows == [["run", "big", "1.0", "2.50", "-", "big:8000 4.0", "-", "10.0%"]]
    assert "request-s/record" in render_text(table)


def test_two_runs_compare_in_request_seconds_over_their_common_problems():
    run = {"a": ProblemFigures(None, 1.0, 10, request_s=3.0), "b": ProblemFigures(None, 1.0, 10, request_s=1.0)}
    base = {"a": ProblemFigures(None, 1.0, 10, request_s=8.0), "c": ProblemFigures(None, 1.0, 10, request_s=99.0)}
    assert compare("run", run, "base", base).request_s_ratio == pytest.approx(3 / 8)
    zero = {"a": ProblemFigures(None, 1.0, 10)}
    assert compare("run", run, "base", zero).request_s_ratio is None


def test_the_viewer_carries_each_problem_s_ledger_leaving_out_what_nothing_reported():
    led = ledger_payload(sample_record())
    assert led["small"] == {"n": 3, "s": 2.3, "b": {SMALL: 2.0}, "ch": 0.75, "q": pytest.approx(0.4 / 2.3)}
    assert led["prm"] == {"n": 1, "s": 0.4, "c": 1, "b": {PRM: 0.4}}
