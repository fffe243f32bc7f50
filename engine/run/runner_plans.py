"""Runner plans: what each runner script means in policies, strategies and default settings.

A runner is one function in `RUNNERS` that turns its own flags into the policy, the strategy
and the defaults it gives the flags a user left unset (SpecLRM's vote in its runners, SplitReason's
budget, search-and-learn's sampling). The command line (`engine.run.cli`) applies them.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from typing import Any

from engine.errors import UsageError


def or_default(value: Any, default: Any) -> Any:
    """`value`, or `default` when the flag was left unset (None)."""
    return default if value is None else value


def _single_model(args: argparse.Namespace, default_tracks: int) -> dict[str, Any]:
    model = or_default(args.model, "big")
    return {"policy": model, "answer_model": model, "selector_model": model, "tracks": default_tracks}


# SplitReason's mode flags (its test_spec.py takes exactly one) -> the policy that runs the mode.
SPLIT_MODES = {
    "random_switch": "random_switch",
    "logprob_subselect": "logprob_subselect",
    "spec_reason": "spec_reason",
    "big_model_only": "big",
    "small_model_only": "small",
}
# SplitReason's defaults: --max_tokens 16384 in all; it sends no top_p (vLLM's default is 1).
SPLIT_REASONING = {"token_budget": 16384, "top_p": 1.0}


def _split_mode(args: argparse.Namespace) -> dict[str, Any]:
    chosen = [flag for flag in SPLIT_MODES if getattr(args, flag)]
    if len(chosen) != 1:
        flags = ", ".join(f"--{flag}" for flag in SPLIT_MODES)
        raise UsageError(f"runners.split takes exactly one mode flag of {flags}; got {len(chosen)}")
    if args.policy:
        raise UsageError(f"runners.split runs the policy of its mode flag (--{chosen[0]}): drop --policy")
    if args.max_tokens is not None:
        if args.token_budget not in (None, args.max_tokens):
            raise UsageError("--max_tokens is SplitReason's name for --token_budget: give one of them")
        # Consumed: --max_tokens as a flag of its own belongs to RAST's settings.
        args.token_budget, args.max_tokens = args.max_tokens, None
    policy = SPLIT_MODES[chosen[0]]
    single = {"answer_model": policy} if policy in ("big", "small") else {}
    return {"policy": policy, "tracks": 1, **SPLIT_REASONING, **single}


def refuse_split_flags_elsewhere(runner: str, args: argparse.Namespace) -> None:
    """SplitReason's mode flags mean something only to runners.split: elsewhere they are refused,
    not ignored (the policy they name runs anywhere with --policy)."""
    if RUNNERS[runner] is _split_mode:
        return
    for flag, policy in SPLIT_MODES.items():
        if getattr(args, flag):
            raise UsageError(f"--{flag} is a flag of runners.split; with runner {runner} use --policy {policy}")
    # --max_tokens is declared by RAST's settings; runners.split reads it as SplitReason's budget
    # and runners.search as search-and-learn's tokens per request.
    if args.max_tokens is not None and runner not in ("rast", "search"):
        raise UsageError(
            f"--max_tokens is a flag of runners.split, search and rast; with runner {runner} use --token_budget"
        )


SEARCH_APPROACHES = ("best_of_n", "beam_search", "dvts")
# search-and-learn: the small model writes (`model_path`), sampling at 0.8 / 1.0, its system prompt,
# seed 0 as its recipes set it.
SEARCH_PLAN = {
    "policy": "small",
    "answer_model": "small",
    "temperature": 0.8,
    "top_p": 1.0,
    "seed": 0,
    "max_step_tokens": 2048,
    "prompt_set": "search",
}


def _search(args: argparse.Namespace) -> dict[str, Any]:
    # search-and-learn's `--max_tokens` (per request) is spectra's `--max_step_tokens`; the flag
    # `--max_tokens` itself belongs to RAST's settings (one flag, one settings class).
    given = {"max_step_tokens": args.max_tokens} if args.max_tokens is not None else {}
    args.max_tokens = None  # consumed
    return {**SEARCH_PLAN, "strategy": or_default(args.approach, "best_of_n"), **given}


# runner -> its policy and strategy, and the defaults it gives to flags the user left unset.
RUNNERS: dict[str, Callable[[argparse.Namespace], dict[str, Any]]] = {
    "base": lambda a: _single_model(a, 1),
    "spec": lambda a: {"policy": "spec", "tracks": 1},
    # SpecLRM's runners vote as SpecLRM does; spec_scale_reason always runs its three role prompts.
    "scale": lambda a: {**_single_model(a, 3), "aggregation": "speclrm"},
    "spec_scale": lambda a: {"policy": "spec", "tracks": 3, "use_role_prompts": True, "aggregation": "speclrm"},
    "spec_scale_methods": lambda a: {
        "policy": "spec",
        "method_num": 3,
        "tracks": or_default(a.method_num, 3),
        "aggregation": "speclrm",
    },
    "search": _search,
    # RAST runs no tracks: the policy is unused; its prompt set is RAST's plain prompt.
    "rast": lambda a: {"policy": "big", "strategy": "rast", "prompt_set": "rast"},
    "split": _split_mode,
}

BOTH_MODEL_RUNNERS = ("spec", "spec_scale", "spec_scale_methods")
SINGLE_MODEL_RUNNERS = ("base", "scale")

# runner -> the policies and strategies it runs without --policy/--strategy: its `--help` shows
# their flags and their models' (the others still parse).
_SPLIT_POLICIES = tuple(dict.fromkeys(SPLIT_MODES.values()))
RUNNER_SPECS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "base": (("big", "small"), ("vote",)),
    "spec": (("spec",), ("vote",)),
    "scale": (("big", "small"), ("vote",)),
    "spec_scale": (("spec",), ("vote",)),
    "spec_scale_methods": (("spec",), ("vote",)),
    "search": (("small",), SEARCH_APPROACHES),
    "rast": ((), ("rast",)),
    "split": (_SPLIT_POLICIES, ("vote",)),
}


# In SpecLRM's scripts `--repeat_id N` means N repeats (ids 0 to N-1); in spectra and SpecReason
# it names repeat ids. A single number in these runners could mean either, so it is refused.
SPECLRM_RUNNERS = ("base", "scale", "spec_scale", "spec_scale_methods")


def repeat_ids(runner: str, args: argparse.Namespace) -> dict[str, str]:
    if args.num_repeats is not None:
        if args.repeat_id is not None:
            raise UsageError("give --num_repeats or --repeat_id, not both")
        if args.num_repeats < 1:
            raise UsageError(f"--num_repeats must be at least 1, not {args.num_repeats}")
        return {"repeat_id": f"0-{args.num_repeats - 1}"}
    given = (args.repeat_id or "").strip()
    if runner in SPECLRM_RUNNERS and given.isascii() and given.isdigit():
        raise UsageError(
            f"--repeat_id {given} is ambiguous here (SpecLRM's scripts read it as {given} repeats): "
            f"use --num_repeats N for N repeats, or --repeat_id {given}-{given} for the repeat with id {given}"
        )
    return {}
