"""Search on the toy world (issue 20): search-and-learn's strategies on the small model's steps, scored
step by step by the big model (`SEARCH_MODES`) or by the toy PRM (`benchmarks.toy_prm`), read as
search-and-learn subsamples one N = 256 run: naive@k, weighted@k, maj@k and pass@k over the first k
completions. `benchmarks.toy_world --rows search` (and `--rows prm`) runs these.
"""

from __future__ import annotations

from benchmarks.toy_speed import Mode
from engine.data.answers import is_correct
from engine.records import ProblemRecord
from evaluators.search import Completions, selections_at_k

SEARCH_FLAGS = ("--scorer", "judge", "--agg_strategy", "min", "--prm_split", "real_last", "--beam_width", "4")
SEARCH_MODES = (
    Mode("best_of_n16", "search", ("--approach", "best_of_n", "--n", "16", *SEARCH_FLAGS)),
    *(
        Mode(f"beam_search{n}", "search", ("--approach", "beam_search", "--n", str(n), *SEARCH_FLAGS))
        for n in (1, 4, 16)
    ),
    Mode("dvts16", "search", ("--approach", "dvts", "--n", "16", *SEARCH_FLAGS)),
)
SEARCH_KS = (1, 4, 16)
# What one sample scores: the first completion of best-of-N, a plain sample of the small model.
SEARCH_GAIN = 0.20


def search_accuracy(records: list[ProblemRecord], k: int) -> dict[str, float]:
    """naive@k, weighted@k, maj@k and pass@k over the first k completions of each record."""
    outcomes = []
    for r in records:
        answers = [t.answer for t in r.tracks]
        correct = [is_correct(a, r.reference_answer) for a in answers]
        completions = Completions(answers, [t.score or 0.0 for t in r.tracks], correct, multiple_choice=False)
        outcomes.append(selections_at_k(completions, k))
    return {s: sum(o[s] for o in outcomes) / len(outcomes) for s in ("naive", "weighted", "maj", "pass")}


def search_rows(
    records: dict[str, list[ProblemRecord]], problems: int, commands: dict[str, str], modes: tuple[Mode, ...]
) -> list:
    """Each search of `modes` at k completions against one sample (the first mode's, best-of-N), with
    the tokens it generated a problem and its command (`commands`: mode name -> runner command)."""
    one = search_accuracy(records[modes[0].name], 1)["naive"]
    rows = [(f"search: one sample ({modes[0].name}'s first)", f"{one:.1%}", "baseline", "", "")]
    for mode in modes:
        n = int(mode.flags[mode.flags.index("--n") + 1])
        ks = [n] if "beam_search" in mode.flags else [k for k in SEARCH_KS if k <= n]
        for k in ks:
            acc = search_accuracy(records[mode.name], k)
            figures = ", ".join(f"{s}@{k} {acc[s]:.1%}" for s in ("naive", "weighted", "maj", "pass"))
            target, verdict = "for the record", ""
            if k == 16:
                gain = min(acc["naive"], acc["weighted"]) - one
                target = f"naive, weighted >= {one + SEARCH_GAIN:.1%}"
                verdict = "PASS" if gain >= SEARCH_GAIN else "MISS"
            tokens = sum(u.completion_tokens for r in records[mode.name] for u in r.usage.values()) / problems
            rows.append(
                (
                    f"{mode.name} @{k}",
                    f"{figures} ({tokens:.0f} tokens/problem)",
                    target,
                    verdict,
                    commands[mode.name],
                )
            )
    return rows
