"""Command-line flags: one per field of every settings class (the seeds' flat names, each also in
kebab-case), the flags every runner takes, and the refusal of flags the run would not use.

The flags of policies and strategies come from their settings dataclasses (`engine.reasoning.settings`),
so a new spec's knobs are flags with no edit here; an import-time check keeps one meaning per flag.
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import typing
from pathlib import Path
from typing import Any, NoReturn

from engine.data.recipes import CONFIG_FLAG
from engine.errors import UsageError
from engine.reasoning.policies import POLICIES
from engine.reasoning.probing import ProbeSettings
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies import STRATEGIES
from engine.run.config import SchedulerLimits
from engine.run.runner_plans import RUNNER_SPECS, SEARCH_APPROACHES, SINGLE_MODEL_RUNNERS, SPLIT_MODES

TOY_MODELS_DIR = Path.home() / ".cache" / "spectra" / "toy-models"
SERVER_RESTARTS_HELP = "restarts of one server spectra started (one that exits) before the run stops (default 3)"


def add_flag(parser: argparse.ArgumentParser | Any, name: str, *, shown: bool = True, **kwargs: Any) -> None:
    """Add `--name` with its kebab-case twin (`--score_threshold` and `--score-threshold`). A flag
    not `shown` still works; only `--help` leaves it out."""
    spellings = [f"--{name}"]
    if "_" in name:
        spellings.append(f"--{name.replace('_', '-')}")
    if not shown:
        kwargs["help"] = argparse.SUPPRESS
    parser.add_argument(*spellings, dest=name, **kwargs)


def _flag_type(annotation: Any) -> type:
    """The Python type a flag parses to, from a settings field's annotation (`int | None` -> int)."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return options[0]


def add_settings_flags(parser: argparse.ArgumentParser | Any, cls: type, *, shown: bool | set[str] = True) -> None:
    """One flag per field of the settings dataclass `cls`; unset flags stay None (the default).
    `shown`: whether `--help` lists them, or the names of those it lists."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind, default = _flag_type(hints[f.name]), f.default
        listed = f.name in shown if isinstance(shown, set) else shown
        text = f"{f.metadata.get('help', '')} (default {default!r})".strip()
        if kind is bool:
            add_flag(parser, f.name, shown=listed, action="store_true", default=None, help=text)
        else:
            add_flag(parser, f.name, shown=listed, type=kind, choices=f.metadata.get("choices"), help=text)


def settings_from_flags(cls: type, args: argparse.Namespace, defaults: dict[str, Any] | None = None) -> Any:
    """An instance of `cls` from the flags given in `args`, else `defaults`, else the field default."""
    values = dict(defaults or {})
    for f in dataclasses.fields(cls):
        given = getattr(args, f.name, None)
        if given is not None:
            values[f.name] = given
    return cls(**{k: v for k, v in values.items() if k in {f.name for f in dataclasses.fields(cls)}})


def check_unique_flags(classes: list[type]) -> None:
    """Refuse two settings classes declaring the same flag: one flag must mean one thing."""
    owner: dict[str, str] = {}
    for cls in dict.fromkeys(classes):
        for f in dataclasses.fields(cls):
            if f.name in owner:
                raise TypeError(f"flag --{f.name} is declared by both {owner[f.name]} and {cls.__name__}")
            owner[f.name] = cls.__name__


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line naming it, not the whole usage block."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# Every settings class whose fields are flags; an import-time check keeps one meaning per flag.
SPECS = (*POLICIES.values(), *STRATEGIES.values())
SETTINGS_CLASSES = [ReasoningConfig, ProbeSettings, SchedulerLimits] + [s.settings for s in SPECS]
check_unique_flags(SETTINGS_CLASSES)
MODEL_ROLES = tuple(dict.fromkeys(role for spec in SPECS for role in spec.roles))


RUN_GROUPS = ("models", "data", "method", "limits", "output")


def run_groups(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The five groups of a runner's flags, in the order `--help` lists them."""
    return {name: parser.add_argument_group(name) for name in RUN_GROUPS}


def add_run_arguments(
    parser: argparse.ArgumentParser, runner: str | None = None, groups: dict[str, Any] | None = None
) -> None:
    """The flags every runner takes (defaults None: unset flags keep the config's defaults), in the
    groups models, data, method, limits and output. With `runner`, `--help` lists only the flags of
    that runner's own policies, strategies and model roles (`RUNNER_SPECS`); the others still parse,
    and are refused unless `--policy`/`--strategy` chooses their spec."""
    groups = groups or run_groups(parser)
    models, data, method, limits, out = (groups[name] for name in RUN_GROUPS)
    policies, strategies = RUNNER_SPECS.get(runner, (tuple(POLICIES), tuple(STRATEGIES)))
    roles = {role for name in policies for role in POLICIES[name].roles}
    roles |= {role for name in strategies for role in STRATEGIES[name].roles}
    every = runner is None

    add_flag(
        data,
        "dataset_name",
        help="preset (aime24, aime25, math500, gpqa_diamond; seeds' aime, math, gpqa), "
        "a local .jsonl/.json/.parquet file, a Hugging Face id, demo, or toy (default with the demo models)",
    )
    add_flag(data, "data_file", help="local copy of a preset's data")
    add_flag(data, "field", action="append", help="map a field to a column, e.g. problem=question (repeatable)")
    add_flag(data, "problem_id", help="ids or positions, e.g. 60-89 or 60,62,70-72 (default: all)")
    add_flag(data, "repeat_id", help="repeat ids, e.g. 0 or 0-3 (default 0)")
    add_flag(data, "num_repeats", type=int, help="N repeats, ids 0 to N-1 (SpecLRM's --repeat_id N)")
    add_flag(
        data,
        "shard",
        metavar="I/N",
        help="do the I-th (from 1) of N disjoint slices of the (problem, repeat) list, for N runner processes "
        "(default output folder gets a -shard-I-of-N suffix)",
    )
    add_flag(data, "prompt_set", help="a set under prompts/ by name, or a folder path (default: the runner's)")
    add_flag(data, CONFIG_FLAG, help="a YAML recipe of flag: value; flags on the command line override it")
    add_flag(out, "output_dir", help="run folder (default results/<runner>_<dataset>)")
    add_flag(out, "overwrite", action="store_true", default=None, help="replace a run folder made with another config")
    single = every or runner in SINGLE_MODEL_RUNNERS
    add_flag(models, "model", shown=single, choices=("big", "small"), help="base/scale runners: which model reasons")
    add_flag(models, "model_name", shown=single, help="base/scale runners: id of the model that reasons (seeds')")
    for role in MODEL_ROLES:
        shown = every or role in roles
        add_flag(models, f"{role}_model", shown=shown, help=f"{role} model: Hugging Face id or local path")
        add_flag(
            models,
            f"{role}_url",
            shown=shown,
            action="append",
            help=f"URL of a running server of the {role} model "
            "(repeat for replicas); without it spectra starts a vLLM server",
        )
        add_flag(models, f"{role}_tokenizer", shown=shown, help=f"where to load the {role} model's chat template from")
        add_flag(
            models,
            f"{role}_server_args",
            shown=shown,
            help=f'vLLM flags for the {role} server spectra starts: --{role}_server_args="..."',
        )
    add_flag(models, "thinking", choices=("auto", "on", "off"))
    add_flag(
        models, "max_model_len", type=int, help="context length of servers spectra starts (default: the model's own)"
    )
    add_flag(models, "server_log_dir")
    add_flag(models, "toy_models_dir", help=f"where the demo's toy models are written (default {TOY_MODELS_DIR})")

    add_flag(method, "policy", choices=tuple(POLICIES), help="how a step is produced (default: the runner's)")
    add_flag(method, "strategy", choices=tuple(STRATEGIES), help="how a problem is solved (default: the runner's)")
    search = every or runner == "search"
    add_flag(method, "approach", shown=search, choices=SEARCH_APPROACHES, help="search runner: the strategy")
    split = every or runner == "split"
    for flag, policy in SPLIT_MODES.items():
        add_flag(method, flag, shown=split, action="store_true", default=None, help=f"SplitReason's mode: {policy}")
    # RAST runs no tracks: of the reasoning flags it reads only the seed and top_p.
    add_settings_flags(method, ReasoningConfig, shown={"seed", "top_p"} if not policies else True)
    add_settings_flags(method, ProbeSettings, shown=bool(policies))
    for kind, table, chosen in (("policy", POLICIES, policies), ("strategy", STRATEGIES, strategies)):
        # Specs may share one settings class (big and small; the three searches): one set of flags.
        sharing: dict[type, list[Any]] = {}
        for spec in table.values():
            sharing.setdefault(spec.settings, []).append(spec)
        for cls, specs in sharing.items():
            shown = every or any(s.name in chosen for s in specs)
            title = f"method: {kind} {', '.join(s.name for s in specs)}"
            group = parser.add_argument_group(title, "; ".join(s.description for s in specs)) if shown else method
            add_settings_flags(group, cls, shown=shown)

    add_settings_flags(limits, SchedulerLimits)
    for name in ("max_in_flight_per_endpoint", "max_attempts"):
        add_flag(limits, name, type=int)
    for name in ("request_timeout_s", "stall_timeout_s", "retry_deadline_s"):
        add_flag(limits, name, type=float)
    add_flag(limits, "server_restarts", type=int, help=SERVER_RESTARTS_HELP)
    add_common_arguments(out)


def add_common_arguments(parser: argparse.ArgumentParser | Any) -> None:
    add_flag(parser, "log_json", action="store_true", help="log JSON lines to stderr")
    add_flag(parser, "log_level", default="info")
    add_flag(parser, "no_progress", action="store_true", help="no progress bar")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def shell_text(value: str) -> str:
    """A flag's text with the escapes a shell user types (`'\\n\\n'`) turned into the characters
    they mean: a shell passes `\\n` as a backslash and an n."""
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], value)


def refuse_flags_of_specs_not_in_use(args: argparse.Namespace, policy: str, strategy: str) -> None:
    """UsageError for a flag given on the command line (or in a recipe) that belongs to a policy or
    a strategy this run does not use: it would change nothing, silently."""
    in_use = {STRATEGIES[strategy].settings}
    if STRATEGIES[strategy].runs_policy:
        in_use.add(POLICIES[policy].settings)
    for kind, table, chosen in (("policy", POLICIES, policy), ("strategy", STRATEGIES, strategy)):
        for cls in dict.fromkeys(spec.settings for spec in table.values()):
            if cls in in_use:
                continue
            given = next((f.name for f in dataclasses.fields(cls) if getattr(args, f.name, None) is not None), None)
            if given is None:
                continue
            owners = " or ".join(spec.name for spec in table.values() if spec.settings is cls)
            if kind == "policy" and not STRATEGIES[strategy].runs_policy:
                why = f"strategy {strategy} runs no step policy"
            else:
                why = f"this run's {kind} is {chosen}"
            raise UsageError(f"--{given} belongs to {kind} {owners}, and {why}: drop it, or choose that {kind}")
