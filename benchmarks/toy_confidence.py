"""DeepConf on the toy world (issue 22): 16 small-model traces per problem, majority against DeepConf
offline (the 10% most confident vote, weighted) and online (a warm-up of 6 of the 16 traces, then
pruning and the consensus stop), each measuring the paper's token confidence and, beside it,
the sampled tokens' logprobs (`--deepconf_token logprob`);
and answer probing (Dynasor-CoT) on one stepwise small-model track against the same track run to the
end. `benchmarks.toy_world --rows confidence` runs these on `--problems`.
"""

from __future__ import annotations

from benchmarks.toy_speed import Mode
from engine.data.answers import is_correct
from engine.reasoning.confidence import trace_confidence, trace_tokens
from engine.records import ProblemRecord
from evaluators.metrics import within_group_auc

SMALL16 = ("--model", "small", "--stepwise")
DEEPCONF16 = (*SMALL16, "--strategy", "deepconf", "--deepconf_traces", "16")
# A budget of 16 leaves little after DeepConf's default warm-up of 16: here 6 of the 16 warm up. Toy
# traces are far shorter than a 2048-token window, so DeepConf's own online stop never fires on them:
# these rows measure spectra's consensus stop (the paper's), named.
ONLINE = ("--deepconf_online", "--deepconf_warmup", "6", "--deepconf_consensus", "0.95")
LOGPROB = ("--deepconf_token", "logprob")
CONFIDENCE_MODES = (
    Mode("vote16", "scale", ("--model", "small", "--tracks", "16", "--aggregation", "majority")),
    Mode("deepconf16_offline", "base", DEEPCONF16),
    Mode("deepconf16_online", "base", (*DEEPCONF16, *ONLINE)),
    Mode("deepconf16_offline_logprob", "base", (*DEEPCONF16, *LOGPROB)),
    Mode("deepconf16_online_logprob", "base", (*DEEPCONF16, *ONLINE, *LOGPROB)),
    Mode("small_stepwise", "base", SMALL16),
    # A toy solution is ~100 tokens of ~10-token steps: a probe every 16 tokens asks about every other step.
    Mode("small_probed", "base", (*SMALL16, "--probe_every", "16")),
)


def within_problem_auc(
    records: list[ProblemRecord], measure: str = "bottom10", window: int = 2048, token_score: str = "confidence"
) -> tuple:
    """The chance that a right answered trace of a problem is more confident (DeepConf's `measure`)
    than a wrong answered one of the same problem (ties count half), and the number of such pairs:
    whether confidence can pick among a problem's traces, which is all DeepConf asks of it."""
    groups = []
    for record in records:
        right, wrong = [], []
        for track in record.tracks:
            tokens = trace_tokens(track, token_score)
            if track.answer is not None and tokens:
                right_answer = is_correct(track.answer, record.reference_answer)
                (right if right_answer else wrong).append(trace_confidence(tokens, measure, window))
        groups.append((right, wrong))
    return within_group_auc(groups)


def confidence_rows(figures: dict, records: dict[str, list[ProblemRecord]], commands: dict[str, str]) -> list:
    """Majority of 16 against DeepConf offline and online, with the paper's token confidence and with
    the sampled tokens' logprobs: accuracy and tokens, beside the targets; how well each separates
    right from wrong traces within a problem; and probing against running to the end."""
    vote = figures["vote16"]
    vote_tokens = sum(vote.tokens.values())
    rows = []
    for token_score, suffix in (("confidence", ""), ("logprob", "_logprob")):
        offline, online = figures[f"deepconf16_offline{suffix}"], figures[f"deepconf16_online{suffix}"]
        auc_value, pairs = within_problem_auc(records[f"deepconf16_offline{suffix}"], token_score=token_score)
        online_tokens = sum(online.tokens.values())
        saved = 1 - online_tokens / vote_tokens if vote_tokens else 0.0
        rows += [
            (
                f"within-problem AUC of trace {token_score} (bottom 10%)",
                "-" if auc_value is None else f"{auc_value:.3f} ({pairs} right-wrong pairs)",
                "for the record",
                "",
                commands[f"deepconf16_offline{suffix}"],
            ),
            (
                f"DeepConf offline (top 10%, token {token_score}) vs majority of 16",
                f"{offline.accuracy:.1%} vs {vote.accuracy:.1%}",
                ">= majority",
                "PASS" if offline.accuracy >= vote.accuracy else "MISS",
                commands[f"deepconf16_offline{suffix}"],
            ),
            (
                f"DeepConf online (token {token_score}) vs majority of 16: tokens saved, accuracy",
                f"{saved:.0%} saved ({online_tokens:.0f} vs {vote_tokens:.0f} a problem), "
                f"{online.accuracy:.1%} vs {vote.accuracy:.1%}",
                ">= 50%, within 1 point",
                "PASS" if saved >= 0.5 and online.accuracy >= vote.accuracy - 0.01 else "MISS",
                commands[f"deepconf16_online{suffix}"],
            ),
        ]
    whole, probed = figures["small_stepwise"], figures["small_probed"]
    whole_tokens, probed_tokens = sum(whole.tokens.values()), sum(probed.tokens.values())
    rows.append(
        (
            "probing (every 16 tokens, 3 agree) vs one track to the end",
            f"{1 - probed_tokens / whole_tokens if whole_tokens else 0.0:.0%} fewer tokens "
            f"({probed_tokens:.0f} vs {whole_tokens:.0f} a problem, probes included), "
            f"{probed.accuracy:.1%} vs {whole.accuracy:.1%}",
            "for the record",
            "",
            commands["small_probed"],
        )
    )
    return rows
