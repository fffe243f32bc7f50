"""The cost ledger: what a run's requests cost in server time, per model role, from the cost entry
every request leaves in the records (`engine.records.RequestCost`).

Definitions (a record is one (problem, repeat); every entry counts, work thrown away included):

- request seconds: per request, the server's own time for it, queue + prefill + generation, as vLLM
  reports it with `--enable-per-request-metrics`; where the server reported none (a `/pooling`
  request, a server started without the flag) the client's seconds (`client_s`, the wait for the
  answer, retries included) stand in, and `client_timed` counts those requests. Summed over
  requests: a batch of 8 requests served in the same second is 8 request-seconds.
- busy seconds, per server: the length of the union of its requests' [started_at, ended_at]
  intervals (client wall clock), so a second in which it served several requests counts once.
- cached share: cached prompt tokens / prompt tokens, over the requests whose server reported
  `usage.prompt_tokens_details.cached_tokens` (None when none did).
- queue share: queue seconds / request seconds, over the requests the server timed (None when none).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from engine.records import ProblemRecord, RequestCost, Role
from evaluators import metrics


@dataclass
class RoleLedger:
    """What one model role's requests cost over some records; see the module docstring."""

    role: str
    requests: int = 0
    request_s: float = 0.0
    client_timed: int = 0
    busy_s: dict[str, float] = field(default_factory=dict)
    cached_share: float | None = None
    queue_share: float | None = None


def busy_seconds(intervals: Iterable[tuple[float, float]]) -> float:
    """The length of the union of [start, end] intervals: seconds covered by at least one."""
    total, covered_to = 0.0, float("-inf")
    for start, end in sorted(intervals):
        if end > covered_to:
            total += end - max(start, covered_to)
            covered_to = end
    return total


def server_seconds(cost: RequestCost) -> float | None:
    """The server's time for one request (queue + prefill + generation), None unless it reported all three."""
    parts = (cost.queue_s, cost.prefill_s, cost.generation_s)
    return None if None in parts else sum(parts)


def record_costs(record: ProblemRecord) -> Iterator[RequestCost]:
    """Every request of a record: the strategy's own, each track's own and each step's."""
    yield from record.costs
    for track in record.tracks:
        yield from track.costs
        for step in track.steps:
            yield from step.costs


def ledger_of(records: Iterable[ProblemRecord]) -> dict[str, RoleLedger]:
    """Per model role (the speculative pair first), what the records' requests cost."""
    by_role: dict[str, list[RequestCost]] = {}
    for record in records:
        for cost in record_costs(record):
            by_role.setdefault(cost.role, []).append(cost)
    roles = list(Role)
    order = sorted(by_role, key=lambda r: (roles.index(r) if r in roles else len(roles), r))
    return {role: _role_ledger(role, by_role[role]) for role in order}


def _role_ledger(role: str, costs: list[RequestCost]) -> RoleLedger:
    timed = [(cost, server_seconds(cost)) for cost in costs]
    on_server = [(cost, seconds) for cost, seconds in timed if seconds is not None]
    reported = [cost for cost in costs if cost.cached_prompt_tokens is not None]
    intervals: dict[str, list[tuple[float, float]]] = {}
    for cost in costs:
        if cost.server is not None and cost.started_at is not None and cost.ended_at is not None:
            intervals.setdefault(cost.server, []).append((cost.started_at, cost.ended_at))
    server_s = sum(seconds for _, seconds in on_server)
    return RoleLedger(
        role=role,
        requests=sum(cost.requests for cost in costs),
        request_s=server_s + sum(cost.client_s for cost, seconds in timed if seconds is None),
        client_timed=sum(cost.requests for cost, seconds in timed if seconds is None and cost.server is not None),
        busy_s={server: busy_seconds(spans) for server, spans in sorted(intervals.items())},
        cached_share=metrics.ratio(
            sum(cost.cached_prompt_tokens for cost in reported), sum(cost.prompt_tokens for cost in reported)
        ),
        queue_share=metrics.ratio(sum(cost.queue_s for cost, _ in on_server), server_s),
    )


def request_seconds(record: ProblemRecord) -> float:
    """A record's request seconds over every role."""
    return sum(ledger.request_s for ledger in ledger_of([record]).values())
