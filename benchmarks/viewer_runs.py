"""Run folders for the viewer's tests and `benchmarks.viewer_scale`, written with the record
dataclasses: one per kind of trace (step tracks with drafts, early stop and a failure; SplitReason's
marked text; beam search, a record from before pruned beams were kept and one with them; RAST), a
second step-track run that disagrees with the first on two problems, and texts that would run as
markup if the viewer ever placed them as HTML."""

from __future__ import annotations

import json
from pathlib import Path

from engine.reasoning.search.beams import LOWER_SCORE, SURPLUS, Beam, PrunedBeam, completion_tracks, pruned_details
from engine.records import ModelUsage, ProblemRecord, RequestCost, StepOutcome, StepRecord, TrackRecord
from engine.run.config import ModelConfig, RunConfig
from engine.run.execute import manifest_for
from engine.run.store import MANIFEST_FILE, RECORDS_FILE, append_record

# Each would run script if a viewer wrote it as markup; `window.__xss` is set by any of them.
HOSTILE = [
    "<script>window.__xss = 1</script>",
    "</script><script>window.__xss = 2</script>",
    '<img src=x onerror="window.__xss = 3">',
    '<a href="javascript:window.__xss = 4" id="evil">click me</a>',
    "\u2028 & <!-- --> <svg onload=window.__xss=5>",
]
HOSTILE_QUESTION = "What is 2 + 2? " + HOSTILE[0]


def usage(completion: int, requests: int = 1) -> ModelUsage:
    return ModelUsage(prompt_tokens=10, completion_tokens=completion, requests=requests)


def write_run(folder: Path, config: RunConfig, records: list[ProblemRecord]) -> Path:
    folder.mkdir(parents=True)
    manifest = manifest_for(config)
    (folder / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    for record in records:
        append_record(folder / RECORDS_FILE, record)
    return folder


def _config(folder: Path, runner: str, policy: str, strategy: str = "vote", **kwargs) -> RunConfig:
    names = {"big": "big-model <b>", "small": "small-model", "prm": "p", "base": "b", "positive": "+", "negative": "-"}
    models = {role: ModelConfig(name) for role, name in names.items()}
    return RunConfig(runner=runner, output_dir=str(folder), models=models, policy=policy, strategy=strategy, **kwargs)


def _record(
    pid: str, question: str, reference: str, answer: str | None, tracks: list[TrackRecord], **kw
) -> ProblemRecord:
    total: dict[str, ModelUsage] = {}
    for track in tracks:
        for role, u in track.usage.items():
            total.setdefault(role, ModelUsage()).add(u)
    return ProblemRecord(
        run_id="r", dataset="toy", problem_id=pid, repeat_id=0, runner="spec", problem=question,
        reference_answer=reference, tracks=tracks, answer=answer, usage=total, **kw,
    )  # fmt: skip


def _spec_track(track_id: int, texts: list[tuple[str, str, str]], answer: str | None, finish: str, **kw) -> TrackRecord:
    """`texts`: (writer, outcome, text) per step; a rewritten step gets a draft and a low score. Each
    step enters one request of its writer's, timed by its server (half a second, 60% of it cached)."""
    steps = []
    for i, (writer, outcome, text) in enumerate(texts):
        step = StepRecord(index=i, text=text, writer=writer, tokens=len(text.split()) + 1, outcome=outcome)
        start = 1000.0 + 10 * track_id + i
        step.charge([RequestCost(
            writer, "step", f"http://{writer}:8000", writer, prompt_tokens=100, completion_tokens=step.tokens,
            cached_prompt_tokens=60, client_s=0.5, started_at=start, ended_at=start + 0.5, queue_s=0.05,
            prefill_s=0.1, generation_s=0.35,
        )])  # fmt: skip
        if outcome == StepOutcome.ACCEPTED:
            step.score, step.score_distribution = 8.0, {"8": 0.7, "9": 0.3}
        if outcome == StepOutcome.REWRITTEN:
            step.score, step.score_distribution, step.draft = 2.0, {"1": 0.4, "2": 0.6}, f"wrong draft {i}"
        steps.append(step)
    small = sum(s.tokens for s in steps if s.writer == "small")
    big = sum(s.tokens for s in steps if s.writer == "big")
    return TrackRecord(
        track_id=track_id, policy="spec", role=f"role{track_id}", steps=steps, answer=answer,
        answer_model=steps[-1].writer if steps else None, finish_reason=finish,
        usage={"small": usage(small + 5), "big": usage(big + 3)}, **kw,
    )  # fmt: skip


def spec_run(folder: Path, *, flip: bool = False) -> Path:
    """Four problems of a 3-track speculative vote. `flip`: p0 wrong and p1 right (the other run)."""
    a0 = "5" if flip else "4"
    p0 = [
        _spec_track(
            0,
            [
                ("small", StepOutcome.ACCEPTED, "2 + 2 ="),
                ("big", StepOutcome.REWRITTEN, "= 4"),
                ("big", StepOutcome.TAKEN_OVER, f"\\boxed{{{a0}}}"),
            ],
            a0,
            "answer",
            latency_s=1.0,
        ),
        _spec_track(1, [("small", StepOutcome.ACCEPTED, f"so \\boxed{{{a0}}}")], a0, "answer"),
        _spec_track(2, [("small", StepOutcome.WRITTEN, "thinking")], None, "cancelled"),
    ]
    a1 = "7" if flip else "8"
    p1 = [
        _spec_track(
            0,
            [("small", StepOutcome.ACCEPTED, "3 + 4"), ("small", StepOutcome.ACCEPTED, f"\\boxed{{{a1}}}")],
            a1,
            "answer",
        ),
        _spec_track(1, [], None, "failed", error="ServerError: big model at http://x returned 500 <boom>"),
        _spec_track(2, [("big", StepOutcome.TAKEN_OVER, "out of budget")], None, "budget"),
    ]
    p2 = [_spec_track(i, [("small", StepOutcome.WRITTEN, "hmm")], None, "budget") for i in range(3)]
    hostile = [("small", StepOutcome.ACCEPTED, text) for text in HOSTILE] + [
        ("big", StepOutcome.REWRITTEN, "\\boxed{4}")
    ]
    p3 = [_spec_track(0, hostile, "4", "answer")]
    records = [
        _record("p0", "What is 2 + 2?", "4", a0, p0, early_stopped=True, cancelled_tracks=[2], votes={a0: 2.0},
                latency_s=3.0),
        _record("p1", "What is 3 + 4?", "7", a1, p1, votes={a1: 1.0}, latency_s=9.0),
        _record("p2", "What is 1 + 1?", "2", None, p2, latency_s=1.0),
        _record("p3", HOSTILE_QUESTION, "4", "4", p3, votes={"4": 1.0}, latency_s=5.0),
    ]  # fmt: skip
    return write_run(folder, _config(folder, "spec_scale", "spec"), records)


def split_run(folder: Path) -> Path:
    """SplitReason: the small model writes, opens a <bigmodel> span the big model writes and ends."""
    steps = [
        StepRecord(index=0, text="Let me add. <bigmodel>", writer="small", tokens=5, detail={"ended": "open_tag"}),
        StepRecord(
            index=1,
            text="2 + 2 = 4</bigmodel>",
            writer="big",
            tokens=6,
            outcome=StepOutcome.TAKEN_OVER,
            detail={"ended": "probe", "chunks": 2},
        ),  # fmt: skip
        StepRecord(
            index=2,
            text=" So \\boxed{4}",
            writer="small",
            tokens=4,
            detail={"phase": "select", "rounds": [{"scores": [-0.5, -1.25, -2.0], "kept": 1}]},
        ),  # fmt: skip
    ]
    track = TrackRecord(
        track_id=0, policy="spec_reason", steps=steps, answer="4", answer_model="small", finish_reason="answer",
        usage={"small": usage(9, 3), "big": usage(6, 2)},
    )  # fmt: skip
    record = _record("s0", "What is 2 + 2?", "4", "4", [track], votes={"4": 1.0})
    return write_run(folder, _config(folder, "split", "spec_reason"), [record])


def search_run(folder: Path) -> Path:
    """Beam search: four completions; the first two share their first step, the last two theirs."""
    shared = [("Start A.\n\n", 0.9), ("Start B.\n\n", 0.4)]
    ends = [("\\boxed{4}", 0.8, "4"), ("\\boxed{5}", 0.3, "5"), ("\\boxed{4}", 0.6, "4"), ("\\boxed{6}", 0.95, "6")]
    tracks = []
    for i, (text, score, answer) in enumerate(ends):
        first, first_score = shared[i // 2]
        steps = [
            StepRecord(index=0, text=first, writer="small", tokens=3, score=first_score),
            StepRecord(index=1, text=text, writer="small", tokens=4, score=score),
        ]
        tracks.append(
            TrackRecord(
                track_id=i,
                steps=steps,
                answer=answer,
                answer_model="small",
                finish_reason="eos",
                score=score,
                usage={},
            )  # fmt: skip
        )
    # Written before searches recorded the beams they prune: no details. The answer is naive's pick
    # (the top score, completion #3), wrong where weighted and maj are right.
    record = _record("b0", "What is 2 + 2?", "4", "6", tracks, strategy="beam_search", aggregation="single")
    record.usage = {"small": usage(28, 8), "prm": ModelUsage(prompt_tokens=80, requests=8)}
    return write_run(folder, _config(folder, "search", "small", "beam_search"), [record, _pruning_search()])


def _beam(*steps: tuple[str, float]) -> Beam:
    """A beam of (text, score) steps, each step one paragraph scored alone."""
    texts = [text for text, _ in steps]
    return Beam(
        steps=texts,
        scores=[score for _, score in steps],
        step_scores=[[score] for _, score in steps],
        step_tokens=[len(text.split()) + 1 for text in texts],
        ending="eos" if texts and "boxed" in texts[-1] else "delimiter",
    )


# The beam search of `_pruning_search`, step by step: (text, score).
A, B, C = ("Let x = 2.\n\n", 0.9), ("Guess 5.\n\n", 0.2), ("Add 2 and 2.\n\n", 0.7)
D = (HOSTILE[2] + "\n\n", 0.3)
A1, C1, WRONG = ("So x + 2 = 4.\n\n", 0.8), ("2 + 2 = 4.\n\n", 0.85), ("x is 3.\n\n", 0.1)
# Pruned beams, in pruning order (iteration from 0): how many the viewer greys, and where.
PRUNED = [((B,), 0, LOWER_SCORE), ((D,), 0, LOWER_SCORE), ((A, WRONG), 1, LOWER_SCORE)]
PRUNED += [((C, C1, ("\\boxed{8}", 0.2)), 2, SURPLUS)]


def _pruning_search() -> ProblemRecord:
    """Beam search, n 4, beam width 2, 3 iterations, that recorded what it pruned (iterations from 1,
    as the viewer shows them). Iteration 1 keeps A and C of A, B, C, D; iteration 2 completes
    C + "So \\boxed{4}" and keeps A A1 and C C1 of the rest; iteration 3 completes four, one more
    than the n = 4 completions kept."""
    completions = [
        _beam(C, ("So \\boxed{4}", 0.7)),
        _beam(A, A1, ("\\boxed{4}", 0.9)),
        _beam(C, C1, ("\\boxed{4}", 0.95)),
        _beam(A, A1, ("\\boxed{5}", 0.3)),
    ]
    pruned = [PrunedBeam(_beam(*steps), iteration, reason) for steps, iteration, reason in PRUNED]
    tracks = completion_tracks(completions, how="last")
    for track in tracks:
        track.usage = {"small": usage(track.thinking_tokens)}
    details = {"pruned": pruned_details(completions, pruned, how="last")}
    record = _record(
        "b1", "What is x + 2 when x = 2?", "4", "4", tracks, strategy="beam_search", aggregation="naive",
        details=details,
    )  # fmt: skip
    record.usage = {"small": usage(40, 12), "prm": ModelUsage(prompt_tokens=120, requests=12)}
    return record


def rast_run(folder: Path) -> Path:
    step = StepRecord(index=0, text="Thinking... \\boxed{4}", writer="base", tokens=12)
    track = TrackRecord(
        track_id=0, steps=[step], answer="4", answer_model="base", finish_reason="eos",
        usage={"base": usage(12, 5)},
    )  # fmt: skip
    details = {
        "tokens": 12, "finish_reason": "stop", "stop_reason": None, "acceptance": 0.75,
        "chunks": [[4, 4], [4, 2], [4, 3]], "requests_per_token": 0.42, "top_k_fills": 1, "positions": 12,
    }  # fmt: skip
    record = _record("r0", "What is 2 + 2?", "4", "4", [track], strategy="rast", aggregation="single", details=details)
    return write_run(folder, _config(folder, "rast", "big", "rast", prompt_set="rast"), [record])
