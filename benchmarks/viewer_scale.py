"""How the trace viewer scales: a synthetic run of 500 problems x 16 tracks, its viewer file's size,
and how long Chromium takes to open it, to show a problem page and to filter the table.

The run is written with the record dataclasses: each track has `--steps` steps of `--step_chars`
characters, drafted by the small model, a fifth of them rejected and rewritten by the big model
(with the draft kept), as a speculative vote records them. Load time is measured in the page:
`performance.now()` when the problem table is on screen (from the start of navigation, so the file's
reading and parsing count), best of `--loads` fresh pages. Target: under 3 s.

Run from the repository root: `python -m benchmarks.viewer_scale` (about a minute on 2 cores;
needs Debian's chromium, as `bash .ci/install` installs it).
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.browser import chromium, watched_page
from benchmarks.viewer_runs import write_run
from engine.logging import configure_logging
from engine.reasoning.strategies import STRATEGIES
from engine.records import ModelUsage, ProblemRecord, StepOutcome, StepRecord, TrackRecord
from engine.run.config import ModelConfig, RunConfig
from evaluators.runs import load_runs
from evaluators.viewer.build import write_viewer

TARGET_LOAD_S = 3.0
WORDS = "so we add the two terms then divide by three which gives the next value of x and y".split()


def synthetic_run(folder: Path, problems: int, tracks: int, steps: int, step_chars: int, seed: int = 0) -> Path:
    rng = random.Random(seed)

    def text() -> str:
        words: list[str] = []
        while sum(len(w) + 1 for w in words) < step_chars:
            words.append(rng.choice(WORDS))
        return " ".join(words)

    records = []
    for p in range(problems):
        reference = str(p % 97)
        track_records = []
        for t in range(tracks):
            answer = reference if rng.random() < 0.6 else str(rng.randrange(100))
            kept = []
            for i in range(steps):
                rejected = rng.random() < 0.2
                step = StepRecord(
                    index=i, text=text() if i < steps - 1 else f"so \\boxed{{{answer}}}",
                    writer="big" if rejected else "small", tokens=step_chars // 4,
                    score=rng.choice([1.0, 2.0]) if rejected else 8.0, score_distribution={"8": 0.6, "9": 0.4},
                    draft=text() if rejected else None,
                    outcome=StepOutcome.REWRITTEN if rejected else StepOutcome.ACCEPTED,
                )  # fmt: skip
                kept.append(step)
            usage = {"small": ModelUsage(100, steps * step_chars // 4, steps), "big": ModelUsage(100, 20, steps)}
            track_records.append(
                TrackRecord(
                    track_id=t,
                    policy="spec",
                    steps=kept,
                    answer=answer,
                    answer_model="small",
                    finish_reason="answer",
                    usage=usage,
                    latency_s=rng.uniform(5, 60),
                )  # fmt: skip
            )
        records.append(
            ProblemRecord(
                run_id="bench",
                dataset="synthetic",
                problem_id=f"q{p}",
                repeat_id=0,
                runner="spec",
                problem=f"Problem {p}: {text()}",
                reference_answer=reference,
                tracks=track_records,
                answer=track_records[0].answer,
                usage={"small": ModelUsage(1000, 5000, 100)},
                latency_s=rng.uniform(5, 90),
            )  # fmt: skip
        )
    vote = STRATEGIES["vote"].settings(tracks=tracks)
    models = {"big": ModelConfig("big"), "small": ModelConfig("small")}
    config = RunConfig(runner="spec", output_dir=str(folder), models=models, strategy_settings=vote)
    return write_run(folder, config, records)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m benchmarks.viewer_scale", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--problems", type=int, default=500)
    parser.add_argument("--tracks", type=int, default=16)
    parser.add_argument("--steps", type=int, default=12)
    parser.add_argument("--step_chars", type=int, default=300)
    parser.add_argument("--loads", type=int, default=3, help="fresh page loads; the best is reported")
    args = parser.parse_args(argv)
    configure_logging()
    with tempfile.TemporaryDirectory() as tmp:
        started = time.monotonic()
        folder = synthetic_run(Path(tmp) / "run", args.problems, args.tracks, args.steps, args.step_chars)
        records_mb = (folder / "records.jsonl").stat().st_size / 1e6
        written = time.monotonic()
        out = Path(tmp) / "viewer.html"
        write_viewer(out, load_runs([folder]))
        build_s = time.monotonic() - written
        size_mb = out.stat().st_size / 1e6
        loads, problem_s, filter_s = [], [], []
        with chromium() as browser:
            for _ in range(args.loads):
                page = watched_page(browser)
                page.page.goto(out.as_uri())
                page.page.wait_for_selector("#problems tbody tr")
                loads.append(page.page.evaluate("performance.now()") / 1000)
                problem_s.append(_timed(page.page, "location.hash = 'run=0&p=0'", ".track"))
                page.page.evaluate("location.hash = ''")
                page.page.wait_for_selector("#filter")
                filter_s.append(_timed(page.page, _FILTER, "#problems tbody tr"))
                if page.errors:
                    raise RuntimeError(f"the page reported errors: {page.errors[:3]}")
                page.page.close()
    best = min(loads)
    verdict = "PASS" if best < TARGET_LOAD_S else "MISS"
    print(f"run: {args.problems} problems x {args.tracks} tracks x {args.steps} steps of {args.step_chars} chars")
    print(f"records.jsonl {records_mb:.1f} MB (written in {written - started:.1f} s)")
    print(f"viewer file   {size_mb:.1f} MB (built in {build_s:.1f} s: reading, grading, writing)")
    print(f"load to table {best:.2f} s best of {len(loads)} ({', '.join(f'{x:.2f}' for x in loads)}): {verdict} < 3 s")
    print(f"problem page  {min(problem_s) * 1000:.0f} ms ({args.tracks} tracks, {args.tracks * args.steps} steps)")
    print(f"filter table  {min(filter_s) * 1000:.0f} ms (status 'wrong')")
    return 0 if verdict == "PASS" else 1


_FILTER = "const s = document.getElementById('filter'); s.value = 'wrong'; s.dispatchEvent(new Event('change'))"


def _timed(page, action: str, selector: str) -> float:
    """Seconds from running `action` (JavaScript) in the page to `selector` being there, timed in the page
    (the page's policy allows no eval: the action is part of the evaluated function)."""
    return page.evaluate(
        f"""(selector) => new Promise((done) => {{
            const start = performance.now();
            {action};
            const check = () => document.querySelector(selector) ? done((performance.now() - start) / 1000)
                : requestAnimationFrame(check);
            check();
        }})""",
        selector,
    )


if __name__ == "__main__":
    sys.exit(main())
