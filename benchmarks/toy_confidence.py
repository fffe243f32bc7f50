"""DeepConf on the toy world (issue 22): 16 small-model traces per problem, majority against DeepConf
offline (the 10% most confident vote, weighted) and online (here a warm-up of 4 of the 16 traces, as
a budget of 16 leaves little after the default warm-up of 16; then pruning and the consensus stop);
and answer probing (Dynasor-CoT) on one stepwise small-model track against the same track run to the
end. `benchmarks.toy_world --rows confidence` runs these on `--problems`.
"""

from __future__ import annotations

from benchmarks.toy_speed import Mode
from engine.data.answers import is_correct
from engine.reasoning.confidence import trace_confidence, trace_tokens
from engine.records import ProblemRecord

SMALL16 = ("--model", "small", "--stepwise")
CONFIDENCE_MODES = (
    Mode("vote16", "scale", ("--model", "small", "--tracks", "16", "--aggregation", "majority")),
    Mode("deepconf16_offline", "base", (*SMALL16, "--strategy", "deepconf", "--deepconf_traces", "16")),
    Mode(
        "deepconf16_online",
        "base",
        (*SMALL16, "--strategy", "deepconf", "--deepconf_traces", "16", "--deepconf_online", "--deepconf_warmup", "4"),
    ),
    Mode("small_stepwise", "base", SMALL16),
    # A toy solution is ~100 tokens of ~10-token steps: a probe every 16 tokens asks about every other step.
    Mode("small_probed", "base", (*SMALL16, "--probe_every", "16")),
)


def within_problem_auc(records: list[ProblemRecord], measure: str = "bottom10", window: int = 2048) -> tuple:
    """The chance that a right answered trace of a problem is more confident (DeepConf's `measure`)
    than a wrong answered one of the same problem (ties count half), and the number of such pairs:
    whether confidence can pick among a problem's traces, which is all DeepConf asks of it."""
    pairs = wins = 0.0
    for record in records:
        scored = [
            (trace_confidence(trace_tokens(t), measure, window), is_correct(t.answer, record.reference_answer))
            for t in record.tracks
            if t.answer is not None and trace_tokens(t)
        ]
        right = [c for c, ok in scored if ok]
        wrong = [c for c, ok in scored if not ok]
        pairs += len(right) * len(wrong)
        wins += sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return (wins / pairs if pairs else None), int(pairs)


def confidence_rows(figures: dict, records: dict[str, list[ProblemRecord]], commands: dict[str, str]) -> list:
    """Majority of 16 against DeepConf offline and online: accuracy and tokens, beside the targets;
    and how well the offline traces' confidence separates right from wrong within a problem."""
    vote, offline, online, whole, probed = (figures[m.name] for m in CONFIDENCE_MODES)
    auc, pairs = within_problem_auc(records["deepconf16_offline"])
    vote_tokens, online_tokens = sum(vote.tokens.values()), sum(online.tokens.values())
    saved = 1 - online_tokens / vote_tokens if vote_tokens else 0.0
    whole_tokens, probed_tokens = sum(whole.tokens.values()), sum(probed.tokens.values())
    return [
        (
            "within-problem AUC of trace confidence (bottom 10%)",
            "-" if auc is None else f"{auc:.3f} ({pairs} right-wrong pairs)",
            "for the record",
            "",
            commands["deepconf16_offline"],
        ),
        (
            "DeepConf offline (top 10%) vs majority of 16",
            f"{offline.accuracy:.1%} vs {vote.accuracy:.1%}",
            ">= majority",
            "PASS" if offline.accuracy >= vote.accuracy else "MISS",
            commands["deepconf16_offline"],
        ),
        (
            "DeepConf online vs majority of 16: tokens saved, accuracy",
            f"{saved:.0%} saved ({online_tokens:.0f} vs {vote_tokens:.0f} a problem), "
            f"{online.accuracy:.1%} vs {vote.accuracy:.1%}",
            ">= 50%, within 1 point",
            "PASS" if saved >= 0.5 and online.accuracy >= vote.accuracy - 0.01 else "MISS",
            commands["deepconf16_online"],
        ),
        (
            "probing (every 16 tokens, 3 agree) vs one track to the end",
            f"{1 - probed_tokens / whole_tokens if whole_tokens else 0.0:.0%} fewer tokens "
            f"({probed_tokens:.0f} vs {whole_tokens:.0f} a problem, probes included), "
            f"{probed.accuracy:.1%} vs {whole.accuracy:.1%}",
            "for the record",
            "",
            commands["small_probed"],
        ),
    ]
