"""DeepConf on the toy world (issue 22): 16 small-model traces per problem, majority against DeepConf
offline (the 10% most confident vote, weighted) and online (here a warm-up of 4 of the 16 traces, as
a budget of 16 leaves little after the default warm-up of 16; then pruning and the consensus stop);
and answer probing (Dynasor-CoT) on one stepwise small-model track against the same track run to the
end. `benchmarks.toy_world --rows confidence` runs these on `--problems`.
"""

from __future__ import annotations

from benchmarks.toy_speed import Mode

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


def confidence_rows(figures: dict, commands: dict[str, str]) -> list:
    """Majority of 16 against DeepConf offline and online: accuracy and tokens, beside the targets."""
    vote, offline, online, whole, probed = (figures[m.name] for m in CONFIDENCE_MODES)
    vote_tokens, online_tokens = sum(vote.tokens.values()), sum(online.tokens.values())
    saved = 1 - online_tokens / vote_tokens if vote_tokens else 0.0
    whole_tokens, probed_tokens = sum(whole.tokens.values()), sum(probed.tokens.values())
    return [
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
