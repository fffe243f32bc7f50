"""Runner plans: what each runner script means, as data.

A `RunnerPlan` names the paper a runner follows, its policy and strategy, the defaults it gives the
flags a user left unset (SpecLRM's vote, SplitReason's budget, search-and-learn's sampling), the
seed's own flags it takes and `translate`, a pure function from the parsed flags to spectra's
(SplitReason's mode flags, search-and-learn's `--approach`, RAST's `--dataset`). The command line,
`--help`, `spectra methods` and the evaluators read these plans; none of them replays a parser.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

from engine.data.problems import PRESETS
from engine.errors import UsageError
from engine.reasoning.policies import POLICIES

# Parsed flag values by name (None: left unset); translations return a new dict, never mutate.
Flags = Mapping[str, Any]
SINGLE_MODELS = ("big", "small")

# How a runner's tracks use the models: BOTH (the speculative runners: --model is refused),
# SINGLE (SpecLRM's baselines: --model picks the one that reasons), ANY (the policy decides).
BOTH, SINGLE, ANY = "both", "single", "any"


@dataclass(frozen=True)
class OwnFlag:
    """A seed's flag that one runner takes (RAST's `--dataset`): `instead` says what other runners
    take in its place (`{value}`: the value given), `kind` its type (None: a switch), `group` the
    help group that lists it."""

    name: str
    help: str
    instead: str
    kind: type | None = str
    choices: tuple[str, ...] | None = None
    group: str = "method"
    # Listed by `--help`: False for a seed flag that is parsed only to be refused by name.
    listed: bool = True


def _unchanged(flags: Flags) -> dict[str, Any]:
    return dict(flags)


@dataclass(frozen=True)
class RunnerPlan:
    """One runner. `defaults`: values it gives unset flags; `alone_settings`: settings whose default
    is the model that reasons alone (the policy, when it is big or small); `policies_shown` and
    `strategies_shown`: whose flags its `--help` lists (the track flags listed when its strategy runs
    no policy are those the strategy reads, `StrategySpec.track_settings`); `models`: BOTH, SINGLE or ANY;
    `speclrm_repeat_id`: SpecLRM's scripts read `--repeat_id N` as N repeats, so a single number is
    refused as ambiguous; `policy_flags`: its own flags that choose the policy."""

    name: str
    description: str
    policy: str
    strategy: str
    policies_shown: tuple[str, ...]
    strategies_shown: tuple[str, ...]
    defaults: Mapping[str, Any] = field(default_factory=lambda: MappingProxyType({}))
    models: str = ANY
    alone_settings: tuple[str, ...] = ()
    speclrm_repeat_id: bool = False
    own_flags: tuple[OwnFlag, ...] = ()
    policy_flags: tuple[str, ...] = ()
    translate: Callable[[Flags], dict[str, Any]] = _unchanged


def plan_defaults(plan: RunnerPlan, policy: str) -> dict[str, Any]:
    """The values `plan` gives to unset flags when its tracks run `policy`: the policy's own track
    defaults (`PolicySpec.track_defaults`), then the plan's."""
    alone = {name: policy for name in plan.alone_settings} if policy in SINGLE_MODELS else {}
    return {**POLICIES[policy].track_defaults, **plan.defaults, **alone}


def _one_of(flags: Flags, name: str, seed_name: str, value: Any, runner: str) -> Any:
    """`value` of the seed's `--seed_name` for spectra's `--name`, refusing a clash of the two."""
    if flags.get(name) not in (None, value):
        raise UsageError(f"--{seed_name} is {runner}'s name for --{name}: give one of them")
    return value


def _single_model(flags: Flags) -> dict[str, Any]:
    """SpecLRM's baselines: `--model big|small` is the policy (the model that reasons alone)."""
    model = flags.get("model")
    if model is None:
        return dict(flags)
    if flags.get("policy") not in (None, model):
        raise UsageError(f"--model {model} and --policy {flags['policy']} both choose the policy: give one")
    return {**flags, "model": None, "policy": model}


# SplitReason's mode flags (its test_spec.py takes exactly one) -> the policy that runs the mode.
SPLIT_MODES = {
    "random_switch": "random_switch",
    "logprob_subselect": "logprob_subselect",
    "spec_reason": "spec_reason",
    "big_model_only": "big",
    "small_model_only": "small",
}


def _split_mode(flags: Flags) -> dict[str, Any]:
    chosen = [flag for flag in SPLIT_MODES if flags.get(flag)]
    if len(chosen) != 1:
        names = ", ".join(f"--{flag}" for flag in SPLIT_MODES)
        raise UsageError(f"runners.split takes exactly one mode flag of {names}; got {len(chosen)}")
    if flags.get("policy"):
        raise UsageError(f"runners.split runs the policy of its mode flag (--{chosen[0]}): drop --policy")
    translated = {**flags, **dict.fromkeys(SPLIT_MODES), "policy": SPLIT_MODES[chosen[0]], "max_tokens": None}
    if flags.get("max_tokens") is not None:
        # --max_tokens as a flag of its own belongs to RAST's settings.
        translated["token_budget"] = _one_of(flags, "token_budget", "max_tokens", flags["max_tokens"], "SplitReason")
    return translated


SEARCH_APPROACHES = ("best_of_n", "beam_search", "dvts")


def _search(flags: Flags) -> dict[str, Any]:
    """search-and-learn's `--approach` is the strategy, its `--max_tokens` (per request) spectra's
    `--max_step_tokens` (the flag `--max_tokens` itself belongs to RAST's settings)."""
    translated = {**flags, "approach": None, "max_tokens": None}
    if flags.get("approach") is not None:
        translated["strategy"] = _one_of(flags, "strategy", "approach", flags["approach"], "search-and-learn")
    if flags.get("max_tokens") is not None:
        tokens = _one_of(flags, "max_step_tokens", "max_tokens", flags["max_tokens"], "search-and-learn")
        translated["max_step_tokens"] = tokens
    return translated


def _one_track_per_method(flags: Flags) -> dict[str, Any]:
    """spec_scale_reason_2 runs one track per method: `--method_num N` means N tracks too."""
    if flags.get("method_num") is None or flags.get("tracks") is not None:
        return dict(flags)
    return {**flags, "tracks": flags["method_num"]}


# RAST's --dataset names (vllm/tests/RAST_decode/run.py) -> spectra's presets.
RAST_DATASETS = {"math": "math500", "aime": "aime24", "amc": "amc23", "gsm8k": "gsm8k"}
RAST_NAMES = ("MATH", "AIME", "AMC", "GSM8K")
RAST_DATASET_HELP = f"RAST's data set name: {', '.join(RAST_NAMES)} (or use --dataset_name)"
# RAST's second and third (positive, negative) pairs: its patched vLLM sums three pairs' deltas and
# weighs two pairs 0.4 and 0.1, ignoring alpha. spectra runs one pair; these are refused by name.
RAST_EXTRA_PAIRS = ("positive_model1", "negative_model1", "positive_model2", "negative_model2")
# RAST's runner samples every problem 10 times unless --num_runs says otherwise.
RAST_RUNS = 10


def _rast(flags: Flags) -> dict[str, Any]:
    """RAST's `--dataset` is `--dataset_name` (its preset), its `--num_runs N` `--repeat_id 0-(N-1)`,
    and with none of them the run samples RAST's 10 runs."""
    extra = next((name for name in RAST_EXTRA_PAIRS if flags.get(name) is not None), None)
    if extra is not None:
        raise UsageError(
            f"--{extra} names a second or third RAST pair, which spectra does not run (one pair: "
            "--positive_model, --negative_model); drop it"
        )
    translated = {**flags, "dataset": None, "num_runs": None}
    if flags.get("dataset") is not None:
        preset = RAST_DATASETS.get(flags["dataset"].lower())
        if preset is None or preset not in PRESETS:
            raise UsageError(
                f"--dataset {flags['dataset']} has no spectra preset ({', '.join(sorted(PRESETS))}); "
                "pass the data with --dataset_name FILE_OR_HUB_ID instead"
            )
        translated["dataset_name"] = _one_of(flags, "dataset_name", "dataset", preset, "RAST")
    runs = flags.get("num_runs")
    if runs is not None:
        if runs < 1:
            raise UsageError(f"--num_runs must be at least 1, not {runs}")
        if flags.get("repeat_id") is not None or flags.get("num_repeats") is not None:
            raise UsageError("--num_runs N means --repeat_id 0-(N-1): give one of them")
        translated["repeat_id"] = f"0-{runs - 1}"
    elif flags.get("repeat_id") is None and flags.get("num_repeats") is None:
        translated["repeat_id"] = f"0-{RAST_RUNS - 1}"
    return translated


# RSD's own PRM needs Skywork's vLLM plugin (for vLLM 0.6.4): a PRM stock vLLM serves stands in.
RSD_PRM = "Skywork/Skywork-o1-Open-PRM-Qwen-2.5-1.5B"
STOCK_PRM = "Qwen/Qwen2.5-Math-PRM-7B"


def _rsd(flags: Flags) -> dict[str, Any]:
    """RSD's `--step_word` is the step delimiter; its `--max_tokens_per_call` both each request's
    max_tokens and the length that ends a trace (`--max_step_tokens` and `--token_budget`). Its
    judge is a PRM that stock vLLM serves, named with `--prm_model`."""
    translated = {**flags, "step_word": None, "max_tokens_per_call": None}
    if flags.get("step_word") is not None:
        translated["step_delimiter"] = _one_of(flags, "step_delimiter", "step_word", flags["step_word"], "RSD")
    if flags.get("max_tokens_per_call") is not None:
        for name in ("max_step_tokens", "token_budget"):
            translated[name] = _one_of(flags, name, "max_tokens_per_call", flags["max_tokens_per_call"], "RSD")
    if flags.get("scorer") == "judge":
        raise UsageError("runners.rsd judges each draft with a PRM (RSD); for the big model's 0-9 use runners.spec")
    _refuse_rsd_prm(flags)
    return translated


def _refuse_rsd_prm(flags: Flags) -> None:
    """RSD's PRM (or any of Skywork's), or none with real models: refused, naming a PRM stock vLLM serves."""
    prm = flags.get("prm_model")
    if prm and "skywork" in prm.lower():
        which = f"--prm_model {prm}"
    elif not prm and flags.get("policy") in (None, "spec") and any(flags.get(f"{r}_model") for r in SINGLE_MODELS):
        which = f"runners.rsd needs --prm_model: RSD's PRM, {RSD_PRM},"
    else:
        return
    raise UsageError(
        f"{which} is served by Skywork's plugin for vLLM 0.6.4 (a value head stock vLLM does not load): "
        f"give a PRM stock vLLM serves, e.g. --prm_model {STOCK_PRM}"
    )


def _frozen(**values: Any) -> Mapping[str, Any]:
    return MappingProxyType(values)


# Both seeds show GPQA's right answer as (A).
SEEDS = {"gpqa_order": "seed"}
# SpecLRM's scripts send raw text through `LLM.generate`, with no chat template (engine.serving.raw).
SPECLRM = {**SEEDS, "prompt_format": "raw"}
SPECLRM_VOTE = {**SPECLRM, "tracks": 3, "aggregation": "speclrm"}
_SPEC = {"policy": "spec", "strategy": "vote", "policies_shown": ("spec",), "strategies_shown": ("vote",)}
_SINGLE = {
    "policy": "big",
    "strategy": "vote",
    "policies_shown": SINGLE_MODELS,
    "strategies_shown": ("vote",),
    "models": SINGLE,
    "alone_settings": ("answer_model", "selector_model"),
    "policy_flags": ("model",),
    "translate": _single_model,
}

PLANS = (
    RunnerPlan(
        "base",
        "SpecLRM's base_test: one model (--model big|small) reasons alone on one track",
        defaults=_frozen(**SPECLRM, tracks=1),
        speclrm_repeat_id=True,
        **_SINGLE,
    ),
    RunnerPlan("spec", "SpecReason: one speculative track", defaults=_frozen(**SEEDS, tracks=1), models=BOTH, **_SPEC),
    RunnerPlan(
        "scale",
        "SpecLRM's scale_reason: parallel tracks of one model, voted on as SpecLRM does",
        defaults=_frozen(**SPECLRM_VOTE),
        speclrm_repeat_id=True,
        **_SINGLE,
    ),
    RunnerPlan(
        "spec_scale",
        "SpecLRM's spec_scale_reason: parallel speculative tracks with its three role prompts, voted on",
        defaults=_frozen(**SPECLRM_VOTE, use_role_prompts=True),
        models=BOTH,
        speclrm_repeat_id=True,
        **_SPEC,
    ),
    RunnerPlan(
        "spec_scale_methods",
        "SpecLRM's spec_scale_reason_2: a selector picks --method_num methods, one speculative track each",
        defaults=_frozen(**SPECLRM_VOTE, method_num=3),
        models=BOTH,
        speclrm_repeat_id=True,
        translate=_one_track_per_method,
        **_SPEC,
    ),
    RunnerPlan(
        "search",
        "search-and-learn: best-of-N, beam search or DVTS (--approach) against a process reward model",
        policy="small",
        strategy="best_of_n",
        policies_shown=(),
        strategies_shown=SEARCH_APPROACHES,
        # search-and-learn: the small model writes (`model_path`), sampling at 0.8 / 1.0, its system
        # prompt, seed 0 as its recipes set it, 2048 tokens per request.
        defaults=_frozen(
            answer_model="small", temperature=0.8, top_p=1.0, seed=0, max_step_tokens=2048, prompt_set="search"
        ),
        own_flags=(
            OwnFlag(
                "approach", "search-and-learn's approach: the strategy", "--strategy {value}", choices=SEARCH_APPROACHES
            ),
        ),
        translate=_search,
    ),
    RunnerPlan(
        "rast",
        "RAST: the base model sampled from base + alpha * (positive - negative) over three vLLM servers",
        # RAST runs no tracks: the policy is unused; its prompt set is RAST's plain prompt.
        policy="big",
        strategy="rast",
        policies_shown=(),
        strategies_shown=("rast",),
        defaults=_frozen(prompt_set="rast"),
        own_flags=(
            OwnFlag("dataset", RAST_DATASET_HELP, "--dataset_name", group="data"),
            OwnFlag(
                "num_runs",
                f"RAST's runs: repeats 0 to N-1 (--repeat_id; default {RAST_RUNS}, as RAST's runner)",
                "--num_repeats {value}",
                int,
                group="data",
            ),
            *(
                OwnFlag(name, "RAST's extra pair: refused", "runners.rast, which runs one pair", listed=False)
                for name in RAST_EXTRA_PAIRS
            ),
        ),
        translate=_rast,
    ),
    RunnerPlan(
        "split",
        "SplitReason: one of its modes, chosen by exactly one mode flag; --max_tokens is the budget",
        policy="big",
        strategy="vote",
        policies_shown=tuple(dict.fromkeys(SPLIT_MODES.values())),
        strategies_shown=("vote",),
        # SplitReason's defaults: --max_tokens 16384 in all; it sends no top_p (vLLM's default is 1);
        # its user message ends with its terminating string (prompt set `splitreason`).
        defaults=_frozen(tracks=1, token_budget=16384, top_p=1.0, prompt_set="splitreason"),
        alone_settings=("answer_model",),
        own_flags=tuple(OwnFlag(f, f"SplitReason's mode: {p}", f"--policy {p}", None) for f, p in SPLIT_MODES.items()),
        policy_flags=tuple(SPLIT_MODES),
        translate=_split_mode,
    ),
    RunnerPlan(
        "rsd",
        "RSD: the small model drafts each step, a process reward model judges it, the big model rewrites it "
        "below --prm_threshold",
        # main_online.py's defaults: greedy (top_p 1), 2048 tokens per call and in all, at most 100
        # steps, a trace ends at a step that does not stop at the step word; its prompt is raw ChatML text.
        defaults=_frozen(
            tracks=1,
            scorer="prm",
            temperature=0.0,
            top_p=1.0,
            max_step_tokens=2048,
            token_budget=2048,
            max_steps=100,
            stop_rule="rsd",
            prompt_format="raw",
            prompt_set="rsd",
            thinking="off",
        ),
        models=BOTH,
        own_flags=(
            OwnFlag("step_word", "RSD's step delimiter (--step_delimiter)", "--step_delimiter"),
            OwnFlag(
                "max_tokens_per_call",
                "RSD's tokens per request and in all (--max_step_tokens and --token_budget)",
                "--max_step_tokens and --token_budget",
                int,
            ),
        ),
        translate=_rsd,
        **_SPEC,
    ),
)
RUNNERS: Mapping[str, RunnerPlan] = MappingProxyType({plan.name: plan for plan in PLANS})
OWN_FLAGS: Mapping[str, tuple[str, OwnFlag]] = MappingProxyType(
    {flag.name: (plan.name, flag) for plan in PLANS for flag in plan.own_flags}
)


def repeat_ids(plan: RunnerPlan, flags: Flags) -> str | None:
    """`--repeat_id` as spectra reads it (from `--num_repeats N` too); None: the config's default."""
    count, given = flags.get("num_repeats"), flags.get("repeat_id")
    if count is not None:
        if given is not None:
            raise UsageError("give --num_repeats or --repeat_id, not both")
        if count < 1:
            raise UsageError(f"--num_repeats must be at least 1, not {count}")
        return f"0-{count - 1}"
    text = (given or "").strip()
    if plan.speclrm_repeat_id and text.isascii() and text.isdigit():
        raise UsageError(
            f"--repeat_id {text} is ambiguous here (SpecLRM's scripts read it as {text} repeats): "
            f"use --num_repeats N for N repeats, or --repeat_id {text}-{text} for the repeat with id {text}"
        )
    return given
