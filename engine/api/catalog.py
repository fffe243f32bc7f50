"""The methods a `spectra api` server offers, and the run config each request runs.

The model name picks the method: each runner preset by its name, and each policy and strategy pair
as `policy+strategy` (a strategy that runs no policy by its own name), as
`engine.run.methods.available_methods` lists them for the models the server was given (`spectra
methods --models`), less those the server's own method flags do not build with. A request's config
is built by the command line's code (its parser for the `spectra` object's values,
`engine.run.configure.build_config`, `engine.run.execute.run_prompts`) from the server's flags, the
fields of the body and its `spectra` object, so a request is refused with the line the command line
would print.
"""

from __future__ import annotations

import dataclasses
import typing
from collections import OrderedDict
from collections.abc import Collection, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import structlog

from engine.api.contract import SAMPLING_FLAGS, ChatRequest, RequestError, bad
from engine.data.prompts import PromptSet, load_prompt_set, prompt_set_digest
from engine.errors import UsageError
from engine.reasoning.probing import ProbeSettings
from engine.reasoning.settings import ReasoningConfig
from engine.reasoning.strategies import STRATEGIES
from engine.run.config import RunConfig
from engine.run.configure import build_config, roles_of_command
from engine.run.execute import run_prompts
from engine.run.flags import MODEL_ROLES, ROLE_FLAGS, SPECS, ArgumentParser, add_run_arguments
from engine.run.methods import MethodInfo, available_methods
from engine.run.runner_plans import RUNNERS, SEARCH_APPROACHES, RunnerPlan, plan_defaults

log = structlog.get_logger(__name__)

# The dataset name of the API's records and manifests: its problems are its requests.
API_DATASET = "api"
# The flags a request may set in its `spectra` object: the method's (track, probing, policy and
# strategy settings) and the prompt set. Models, limits and outputs are the server's.
REQUEST_FLAGS = frozenset(
    f.name
    for cls in (ReasoningConfig, ProbeSettings, *(spec.settings for spec in SPECS))
    for f in dataclasses.fields(cls)
) | {"prompt_set"}
SWITCHES = frozenset(
    f.name
    for cls in (ReasoningConfig, ProbeSettings, *(spec.settings for spec in SPECS))
    for f in dataclasses.fields(cls)
    if typing.get_type_hints(cls)[f.name] is bool
)
CHOOSING_FLAGS = ("runner", "policy", "strategy", "model")
# Built configs kept for requests with the same method and flags (most requests of a client).
CONFIGS_KEPT = 256


class RequestFlagParser(ArgumentParser):
    """The runners' flags parsed as the command line parses them; a bad one raises its line."""

    def error(self, message: str) -> NoReturn:
        raise UsageError(message)


@dataclass(frozen=True)
class Method:
    """A method the server offers: what `spectra methods` says of it, and the plan it runs."""

    info: MethodInfo
    plan: RunnerPlan


@dataclass(frozen=True)
class Resolved:
    """What one request runs: its method, its config (its record folder as `output_dir`, "" for
    none), the config's digest and its prompt set."""

    method: Method
    config: RunConfig
    digest: str
    prompts: PromptSet


def plan_of(info: MethodInfo) -> RunnerPlan:
    """A runner preset's own plan; for a pair, a plan of its policy and strategy with no defaults
    of its own (`policy+strategy` names it in the records)."""
    if info.kind == "runner":
        return RUNNERS[info.name]
    policy, _, strategy = info.name.rpartition("+")
    runs_policy = STRATEGIES[strategy].runs_policy
    return RunnerPlan(
        info.name,
        info.description,
        policy=policy or "big",  # a strategy that runs no policy: unused, as in RAST's runner plan
        strategy=strategy,
        policies_shown=(policy,) if runs_policy else (),
        strategies_shown=(strategy,),
    )


def budget_flag(strategy: str) -> str:
    """The flag a request's max_tokens sets: a track's thinking budget (--token_budget), a search's
    tokens per request (search-and-learn's max_tokens, --max_step_tokens), RAST's sample (--max_tokens)."""
    if strategy == "rast":
        return "max_tokens"
    return "max_step_tokens" if strategy in SEARCH_APPROACHES else "token_budget"


def sends_raw_text(plan: RunnerPlan, config: RunConfig) -> bool:
    """Whether the method's seed sends raw text, not a chat conversation: RAST, and a preset whose
    plan renders raw prompts by default (SpecLRM's `--prompt_format raw`)."""
    return config.strategy == "rast" or plan_defaults(plan, plan.policy).get("prompt_format") == "raw"


class Catalog:
    """The offered methods and the configs of requests. `server_flags`: the server's parsed flags
    (its models, and method flags that are every method's defaults where they apply); `roles`:
    the model roles it serves; `output_root`: where records go (None: nowhere)."""

    def __init__(self, server_flags: Mapping[str, Any], roles: Collection[str], output_root: Path | None):
        self.server_flags = dict(server_flags)
        self.roles = frozenset(roles)
        self.output_root = output_root
        self.parser = RequestFlagParser(prog="spectra", add_help=False)
        add_run_arguments(self.parser)
        self.known = {action.dest for action in self.parser._actions}
        self.configs: OrderedDict[tuple, Resolved] = OrderedDict()
        self.prompt_sets: dict[tuple[str, str], PromptSet] = {}
        self.methods: dict[str, Method] = {}
        self.defaults: dict[str, Resolved] = {}
        self.left_out: dict[str, str] = {}
        for info in available_methods(self.roles):
            if info.name in self.methods:  # a strategy's pair under its runner's name (rast): the runner's
                continue
            method = Method(info, plan_of(info))
            try:
                self.defaults[info.name] = self._build(method, {})
            except UsageError as exc:  # the server's method flags do not apply to it
                self.left_out[info.name] = str(exc)
                log.info("method_not_offered", method=info.name, reason=str(exc))
                continue
            self.methods[info.name] = method

    def leave_out(self, name: str, why: str) -> None:
        """Stop offering method `name` (a server setting trips its every request): `why` says it."""
        del self.methods[name], self.defaults[name]
        self.left_out[name] = why
        log.warning("method_left_out", method=name, reason=why)

    def resolve(self, request: ChatRequest) -> Resolved:
        """The config and prompts of `request`; RequestError (400) with the command line's line when
        its method is unknown or its flags are refused."""
        method = self.methods.get(request.model)
        if method is None:
            why = f" ({self.left_out[request.model]})" if request.model in self.left_out else ""
            raise RequestError(
                404, f"model {request.model!r} is not offered here{why}; GET /v1/models lists the methods", "model"
            )
        flags = {**request.flags, **self.request_flags(request.overrides)}
        if request.max_tokens is not None:
            budget = budget_flag(method.plan.strategy)
            if flags.get(budget) not in (None, request.max_tokens):
                raise bad(f"max_tokens sets --{budget} for {method.info.name}: give it or spectra.{budget}")
            flags[budget] = request.max_tokens
        key = (method.info.name, tuple(sorted(flags.items())))
        if key not in self.configs:
            self.configs[key] = self._resolved(method, flags, request)
            while len(self.configs) > CONFIGS_KEPT:
                self.configs.popitem(last=False)
        resolved = self.configs[key]
        if request.context and sends_raw_text(method.plan, resolved.config):
            raise bad(
                f"{method.info.name} sends its seed's raw text, which holds one user message: send the problem "
                "alone, or the conversation to a policy+strategy method (GET /v1/models)",
                "messages",
            )
        return resolved

    def request_flags(self, overrides: Mapping[str, Any]) -> dict[str, Any]:
        """The `spectra` object's flags, parsed by the command line's parser as `--name=value` (a
        switch: true, or false for unset as on a command line): a bad value gets its line."""
        argv = []
        for name, value in overrides.items():
            if name not in REQUEST_FLAGS:
                raise bad(_not_a_request_flag(name, name in self.known), "spectra")
            if name in SWITCHES:
                if not isinstance(value, bool | None):
                    raise bad(f"spectra.{name} is a switch: give true or false, not {value!r}", "spectra")
                argv += [f"--{name}"] if value else []
            elif value is not None:
                argv.append(f"--{name}={value}")
        try:
            parsed = vars(self.parser.parse_args(argv))
        except UsageError as exc:
            raise bad(f"spectra: {exc}", "spectra") from None
        return {name: parsed[name] for name in overrides if parsed.get(name) is not None}

    def _resolved(self, method: Method, flags: Mapping[str, Any], request: ChatRequest) -> Resolved:
        try:
            return self._build(method, flags)
        except UsageError as exc:
            raise bad(_named_by_field(str(exc), request)) from None

    def _build(self, method: Method, request_flags: Mapping[str, Any]) -> Resolved:
        plan = method.plan
        given = {k: v for k, v in self.server_flags.items() if not _is_model_flag(k)}
        flags = {**given, **request_flags, "dataset_name": API_DATASET}
        if plan_defaults(plan, plan.policy).get("prompt_format") == "raw":
            if flags.get("prompt_format") is None:
                flags["prompt_format"] = "chat"  # a chat request, through the chat template
        roles = roles_of_command(plan, flags)
        missing = [role for role in roles if role not in self.roles]
        if missing:
            raise UsageError(
                f"{method.info.name} with these flags calls the {missing[0]} model, which this server does not "
                f"serve (start spectra api with --{missing[0]}_model)"
            )
        for role in roles:
            flags.update({f"{role}_{x}": self.server_flags.get(f"{role}_{x}") for x in ROLE_FLAGS})
        wrapped = flags.get("prompt_set") is not None  # the server's or the request's
        config = dataclasses.replace(build_config(plan, flags), problem_template=wrapped)
        digest = config.digest()
        # The digest leaves output_dir out: it names the folder of the method's records with these settings.
        folder = "" if self.output_root is None else str(self.output_root / f"{method.info.name}-{digest}")
        config = dataclasses.replace(config, output_dir=folder)
        # Loaded once per content: a set edited while the server runs is read again, as its digest says.
        loaded = (config.prompt_set, prompt_set_digest(config.prompt_set))
        if loaded not in self.prompt_sets:
            self.prompt_sets[loaded] = load_prompt_set(config.prompt_set)
        return Resolved(method, config, digest, run_prompts(config, self.prompt_sets[loaded]))


def _is_model_flag(name: str) -> bool:
    return any(name == f"{role}_{x}" for role in MODEL_ROLES for x in ROLE_FLAGS)


def _not_a_request_flag(name: str, known: bool) -> str:
    if name in CHOOSING_FLAGS:
        return f"spectra.{name}: the request's model picks the method (GET /v1/models lists them)"
    if known:
        return f"spectra.{name} is the server's flag, not a request's: start spectra api with --{name}"
    return f"spectra.{name}: no such flag (spectra methods lists each method's flags)"


def _named_by_field(message: str, request: ChatRequest) -> str:
    """The command line's refusal, prefixed with the body's field when one set the flag it names."""
    for field, flag in SAMPLING_FLAGS.items():
        if flag in request.flags and message.startswith(f"--{flag} "):
            return f"{field} (--{flag}): {message}"
    return message
