"""Command-line flags: one per field of every settings class (the seeds' flat names, each also in
kebab-case), the flags every runner takes in five groups, and each runner's own seed flags.

The flags of policies and strategies come from their settings dataclasses (`engine.reasoning.settings`),
so a new spec's knobs are flags with no edit here; an import-time check keeps one meaning per flag.
Every flag parses under every runner; `--help` lists those of the methods the command line selects
(`HelpScope`), and a flag the run would not use is refused (`engine.run.refusals`).
"""

from __future__ import annotations

import argparse
import dataclasses
import re
import sys
import typing
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

from engine.data.problems import GPQA_ORDERS
from engine.data.recipes import CONFIG_FLAG, parse_with_recipe
from engine.errors import EXIT_CODES_HELP, UsageError
from engine.reasoning.policies import POLICIES
from engine.reasoning.probing import ProbeSettings
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies import STRATEGIES
from engine.run.config import SchedulerLimits
from engine.run.runner_plans import PLANS, RUNNERS, SINGLE, SINGLE_MODELS, RunnerPlan
from engine.serving.client import role_key_env
from engine.serving.endpoints import ClientLimits
from engine.serving.raw import PROMPT_FORMATS
from engine.serving.routing import ROUTINGS, UNBOUNDED

TOY_MODELS_DIR = Path.home() / ".cache" / "spectra" / "toy-models"
SERVER_RESTARTS_HELP = "restarts of one server spectra started (one that exits) before the run stops (default 3)"
ROLE_FLAGS = ("model", "url", "tokenizer", "server_args", "api_key")
Group = Any  # an argparse parser or argument group


def add_flag(parser: Group, name: str, *, shown: bool = True, **kwargs: Any) -> None:
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


def add_settings_flags(
    parser: Group, cls: type, *, shown: bool | set[str] = True, added: set[str] | None = None
) -> None:
    """One flag per field of the settings dataclass `cls`; unset flags stay None (the default).
    `shown`: whether `--help` lists them, or the names of those it lists; `added`: flags already
    added (a shared knob, added with the first class that declares it), skipped, then recorded."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if added is not None and f.name in added:
            continue
        if added is not None:
            added.add(f.name)
        kind, default = _flag_type(hints[f.name]), f.default
        listed = f.name in shown if isinstance(shown, set) else shown
        text = f"{f.metadata.get('help', '')} (default {default!r})".strip()
        if kind is bool:
            add_flag(parser, f.name, shown=listed, action="store_true", default=None, help=text)
        else:
            add_flag(parser, f.name, shown=listed, type=kind, choices=f.metadata.get("choices"), help=text)


def settings_from_flags(
    cls: type, flags: typing.Mapping[str, Any], defaults: typing.Mapping[str, Any] | None = None
) -> Any:
    """An instance of `cls` from the values given in `flags`, else `defaults`, else the field default."""
    names = {f.name for f in dataclasses.fields(cls)}
    values = {name: value for name, value in (defaults or {}).items() if name in names}
    values.update({name: flags[name] for name in names if flags.get(name) is not None})
    return cls(**values)


def check_unique_flags(classes: list[type]) -> None:
    """Refuse two settings classes declaring the same flag, unless both declare it as the same shared
    knob (same help and choices): one flag must mean one thing."""
    owner: dict[str, tuple[str, dataclasses.Field]] = {}
    for cls in dict.fromkeys(classes):
        for f in dataclasses.fields(cls):
            if f.name in owner:
                first_owner, first = owner[f.name]
                if not (f.metadata.get("shared") and dict(f.metadata) == dict(first.metadata)):
                    raise TypeError(f"flag --{f.name} is declared by both {first_owner} and {cls.__name__}")
                continue
            owner[f.name] = (cls.__name__, f)


class ArgumentParser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line naming it, not the whole usage block, and no flag may
    be abbreviated (`--score_thr` is not `--score_threshold`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **{"allow_abbrev": False, **kwargs})

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"{self.prog}: error: {message} (see --help)\n")


# Every settings class whose fields are flags; an import-time check keeps one meaning per flag.
SPECS = (*POLICIES.values(), *STRATEGIES.values())
SETTINGS_CLASSES = [ReasoningConfig, ProbeSettings, SchedulerLimits] + [s.settings for s in SPECS]
check_unique_flags(SETTINGS_CLASSES)
MODEL_ROLES = tuple(dict.fromkeys(role for spec in SPECS for role in spec.roles))
RUN_GROUPS = ("models", "data", "method", "limits", "output")


@dataclass(frozen=True)
class HelpScope:
    """What a runner's `--help` lists: the own flags of `runner` (None: every runner's), the flags
    of these policies and strategies, and their models'; `track_flags`: the track flags it lists
    (None: all; RAST reads only the seed and top_p)."""

    runner: str | None
    policies: tuple[str, ...]
    strategies: tuple[str, ...]
    track_flags: tuple[str, ...] | None = None

    @property
    def roles(self) -> set[str]:
        specs = [POLICIES[name] for name in self.policies] + [STRATEGIES[name] for name in self.strategies]
        return {role for spec in specs for role in spec.roles}


EVERYTHING = HelpScope(None, tuple(POLICIES), tuple(STRATEGIES))


def run_groups(parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The five groups of a runner's flags, in the order `--help` lists them."""
    return {name: parser.add_argument_group(name) for name in RUN_GROUPS}


def add_run_arguments(
    parser: argparse.ArgumentParser, scope: HelpScope = EVERYTHING, groups: dict[str, Any] | None = None
) -> None:
    """The flags every runner takes (defaults None: unset flags keep the config's defaults), in the
    groups models, data, method, limits and output; `--help` lists those `scope` names."""
    groups = groups or run_groups(parser)
    add_model_flags(groups["models"], scope)
    add_data_flags(groups["data"])
    add_method_flags(parser, groups["method"], scope)
    add_own_flags(groups, scope.runner)
    add_limit_flags(groups["limits"])
    add_output_flags(groups["output"])


def add_model_flags(models: Group, scope: HelpScope) -> None:
    single = scope.runner is None or RUNNERS[scope.runner].models == SINGLE
    add_flag(models, "model", shown=single, choices=SINGLE_MODELS, help="base/scale runners: which model reasons")
    add_flag(models, "model_name", shown=single, help="base/scale runners: id of the model that reasons (seeds')")
    roles = scope.roles
    for role in MODEL_ROLES:
        shown = role in roles
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
        add_flag(
            models,
            f"{role}_api_key",
            shown=shown,
            help=f"the key the {role} model's server requires, sent as Authorization: Bearer (a server spectra "
            f"starts is started with it); default ${role_key_env(role)}, never $OPENAI_API_KEY",
        )
    add_flag(models, "thinking", choices=("auto", "on", "off"))
    add_flag(
        models, "max_model_len", type=int, help="context length of servers spectra starts (default: the model's own)"
    )
    add_flag(models, "server_log_dir")
    add_flag(models, "toy_models_dir", help=f"where the demo's toy models are written (default {TOY_MODELS_DIR})")


def add_data_flags(data: Group) -> None:
    add_flag(
        data,
        "dataset_name",
        help="preset (aime24, aime25, math500, gpqa_diamond; seeds' aime, math, gpqa), "
        "a local .jsonl/.json/.parquet file, a Hugging Face id, demo, or toy (default with the demo models)",
    )
    add_flag(data, "data_file", help="local copy of a preset's data (alone: the data set, as --dataset_name FILE)")
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
    add_flag(
        data,
        "gpqa_order",
        choices=GPQA_ORDERS,
        help="GPQA's choices: seed (the right answer as (A), as the seeds show them; default in runners spec, "
        "base, scale, spec_scale, spec_scale_methods) or shuffled (a fixed shuffle per question; elsewhere)",
    )
    add_flag(data, "prompt_set", help="a set under prompts/ by name, or a folder path (default: the runner's)")
    add_flag(
        data,
        "prompt_format",
        choices=PROMPT_FORMATS,
        help="chat: each model's chat template; raw: SpecLRM's plain text with the tokenizer's special tokens "
        "(default: raw in runners base, scale, spec_scale, spec_scale_methods; chat elsewhere)",
    )
    add_flag(data, CONFIG_FLAG, help="a YAML recipe of flag: value; flags on the command line override it")


def add_method_flags(parser: argparse.ArgumentParser, method: Group, scope: HelpScope) -> None:
    """--policy, --strategy, the track flags, and one group per settings class of the specs."""
    add_flag(method, "policy", choices=tuple(POLICIES), help="how a step is produced (default: the runner's)")
    add_flag(method, "strategy", choices=tuple(STRATEGIES), help="how a problem is solved (default: the runner's)")
    add_settings_flags(method, ReasoningConfig, shown=True if scope.track_flags is None else set(scope.track_flags))
    add_settings_flags(method, ProbeSettings, shown=bool(scope.policies))
    groups = []
    for kind, table, chosen in (("policy", POLICIES, scope.policies), ("strategy", STRATEGIES, scope.strategies)):
        # Specs may share one settings class (big and small; the three searches): one set of flags.
        sharing: dict[type, list[Any]] = {}
        for spec in table.values():
            sharing.setdefault(spec.settings, []).append(spec)
        for cls, specs in sharing.items():
            shown = any(s.name in chosen for s in specs)
            title = f"method: {kind} {', '.join(s.name for s in specs)}"
            group = parser.add_argument_group(title, "; ".join(s.description for s in specs)) if shown else method
            groups.append((not shown, group, cls, shown))
    # The groups --help lists first, so that a shared knob (--scorer) is listed under a chosen method.
    added: set[str] = set()
    for _, group, cls, shown in sorted(groups, key=lambda entry: entry[0]):
        add_settings_flags(group, cls, shown=shown, added=added)


def add_own_flags(groups: dict[str, Any], runner: str | None) -> None:
    """Each runner's own seed flags (SplitReason's modes, `--approach`, RAST's `--dataset`): they
    parse under every runner, so that another runner refuses them by name."""
    for plan in PLANS:
        for flag in plan.own_flags:
            shown = flag.listed and runner in (None, plan.name)
            group = groups[flag.group]
            if flag.kind is None:
                add_flag(group, flag.name, shown=shown, action="store_true", default=None, help=flag.help)
            else:
                add_flag(group, flag.name, shown=shown, type=flag.kind, choices=flag.choices, help=flag.help)


def add_limit_flags(limits: Group) -> None:
    add_settings_flags(limits, SchedulerLimits)
    for name in ("max_in_flight_per_endpoint", "max_attempts"):
        add_flag(limits, name, type=int)
    for name in ("request_timeout_s", "stall_timeout_s", "retry_deadline_s"):
        add_flag(limits, name, type=float)
    add_flag(limits, "server_restarts", type=int, help=SERVER_RESTARTS_HELP)
    add_flag(
        limits,
        "routing",
        choices=ROUTINGS,
        help="with replicas (a repeated --*_url): affine keeps a track on the replica that holds its prefix, "
        "least_loaded sends each request to the least loaded (default affine)",
    )
    add_flag(
        limits,
        "affinity_bound",
        type=affinity_bound,
        help="affine routing leaves a track's replica when its load is more than this many requests above the "
        f"least loaded one's; {UNBOUNDED}: never (default {ClientLimits.affinity_bound})",
    )


def affinity_bound(text: str) -> int | str:
    """`--affinity_bound`: a number of requests, 0 or more, or `none`."""
    if text == UNBOUNDED or (text.isdigit() and text.isascii()):
        return text if text == UNBOUNDED else int(text)
    raise argparse.ArgumentTypeError(f"takes a number of requests, 0 or more, or {UNBOUNDED}; not {text!r}")


def add_output_flags(out: Group) -> None:
    add_flag(out, "output_dir", help="run folder (default results/<runner>_<dataset>)")
    add_flag(out, "overwrite", action="store_true", default=None, help="replace a run folder made with another config")
    add_common_arguments(out)


def add_common_arguments(parser: Group) -> None:
    add_flag(parser, "log_json", action="store_true", help="log JSON lines to stderr")
    add_flag(parser, "log_level", default="info")
    add_flag(parser, "no_progress", action="store_true", help="no progress bar")


def help_scope(plan: RunnerPlan, chosen: typing.Mapping[str, Any], *, every_runner: bool = False) -> HelpScope:
    """What `plan`'s `--help` lists, given the methods the command line chose (`chosen`: its
    translated flags): the chosen policy and strategy, else the plan's own."""
    strategies = (chosen["strategy"],) if chosen.get("strategy") else plan.strategies_shown
    policies = (chosen["policy"],) if chosen.get("policy") else plan.policies_shown
    runner = None if every_runner else plan.name
    if any(STRATEGIES[name].runs_policy for name in strategies):
        return HelpScope(runner, policies, strategies)
    read = {name for strategy in strategies for name in STRATEGIES[strategy].track_settings or ()}
    return HelpScope(runner, (), strategies, tuple(sorted(read)) or None)


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\"}


def shell_text(value: str) -> str:
    """A flag's text with the escapes a shell user types (`'\\n\\n'`) turned into the characters
    they mean: a shell passes `\\n` as a backslash and an n."""
    return re.sub(r"\\([ntr\\])", lambda m: _ESCAPES[m.group(1)], value)


def parse_run_flags(
    runner: str, argv: list[str] | None, *, choose_runner: bool = False
) -> tuple[RunnerPlan, dict[str, Any]]:
    """The plan and the parsed flag values of `runners/<runner>.py ARGV` (with `choose_runner`:
    `spectra run ARGV`, whose `--runner` picks the plan). `--help` lists the flags of the methods
    the command line selects (`--strategy deepconf --help` lists DeepConf's)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    prog = "spectra run" if choose_runner else f"runners/{runner}.py"
    selecting = ArgumentParser(prog=prog, add_help=False)
    _add_selectors(selecting, runner, choose_runner)
    known = vars(selecting.parse_known_args(argv)[0])
    plan = RUNNERS[known.pop("runner", runner)]
    try:
        chosen = plan.translate(known)
    except UsageError:  # refused in full once every flag is parsed; the help shows the plan's own methods
        chosen = known
    parser = ArgumentParser(
        prog=prog,
        description=f"{plan.description}. Runs a data set and writes one record a problem.",
        epilog="`spectra methods` lists every runner, policy and strategy; --policy NAME --help or "
        "--strategy NAME --help lists the flags of that method. " + EXIT_CODES_HELP,
    )
    groups = run_groups(parser)
    if choose_runner:
        add_flag(groups["method"], "runner", choices=tuple(RUNNERS), default=runner, help=f"default {runner}")
    add_run_arguments(parser, help_scope(plan, chosen, every_runner=choose_runner), groups)
    flags = vars(parse_with_recipe(parser, argv))
    return RUNNERS[flags.pop("runner", runner)], flags


def _add_selectors(parser: argparse.ArgumentParser, runner: str, choose_runner: bool) -> None:
    """The flags that choose the methods, for the first pass that picks what `--help` lists."""
    if choose_runner:
        add_flag(parser, "runner", choices=tuple(RUNNERS), default=runner)
    add_flag(parser, "policy", choices=tuple(POLICIES))
    add_flag(parser, "strategy", choices=tuple(STRATEGIES))
    add_flag(parser, "model", choices=SINGLE_MODELS)
    add_own_flags({"data": parser, "method": parser}, runner)
