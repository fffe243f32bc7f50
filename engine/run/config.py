"""The run config: frozen dataclasses built once from flags, saved with every run, passed down.

Flag names follow SpecReason and SpecLRM (`--score_threshold`, `--token_budget`, ...); each
also has a kebab-case spelling. No other module reads flags or environment variables.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from engine.data.problems import is_gpqa
from engine.data.prompts import prompt_set_digest
from engine.errors import UsageError
from engine.reasoning.policies import POLICIES
from engine.reasoning.probing import ProbeSettings
from engine.reasoning.settings import ReasoningConfig, Settings, check_choices, setting
from engine.reasoning.strategies import STRATEGIES
from engine.serving.endpoints import ClientLimits
from engine.serving.raw import PROMPT_FORMATS


@dataclass(frozen=True)
class SchedulerLimits(Settings):
    """How much runs at once; never changes what a record holds, so it is not in the digest."""

    max_tracks_in_flight: int = setting(64, "tracks running at once over all problems")
    max_problems_in_flight: int = setting(8, "problems solved at once")


@dataclass(frozen=True)
class ModelConfig:
    """One model: its id (a Hugging Face id or a local path) and where it is served.

    No `urls` means spectra starts a vLLM server for it, with `server_args` appended to its command
    line; `tokenizer` overrides where the chat template is loaded from. `api_key` is the key its
    servers require (sent as `Authorization: Bearer`; a server spectra starts is started with it):
    never shown, never in the manifest (`RunConfig.to_dict`).
    """

    model: str
    urls: tuple[str, ...] = ()
    tokenizer: str | None = None
    server_args: tuple[str, ...] = ()
    api_key: str | None = field(default=None, repr=False)


@dataclass(frozen=True)
class DataConfig:
    dataset_name: str = "demo"
    data_file: str | None = None
    problem_id: str | None = None
    repeat_id: str = "0"
    fields: tuple[str, ...] = ()
    # GPQA's choice order (`engine.data.problems.GPQA_ORDERS`); read only for the GPQA preset.
    gpqa_order: str = "shuffled"
    # "I/N": this process does the I-th of N slices of the work (engine.run.execute.Shard); left out of
    # the digest, like the selection, so that the shards of one run share their config digest.
    shard: str | None = None


# Flags added since run folders were first made whose defaults do what the run did before: left out
# of the digest at their defaults so that those folders keep theirs and resume. Track flags, then
# spec's (its judge and drafts a step: at their defaults, SpecReason's big judge and one draft).
LATER_TRACK_FLAGS = ("stop_rule", "max_steps")
LATER_POLICY_FLAGS = ("scorer", "prm_threshold", "prm_kind", "drafts_per_step")


def decisive_reasoning(reasoning: ReasoningConfig) -> dict[str, Any]:
    """The track flags the config digest covers: all, those added later only when set."""
    return _decisive(reasoning, LATER_TRACK_FLAGS)


def decisive_policy(settings: Any) -> dict[str, Any]:
    """The policy settings the config digest covers: all, those added later only when set."""
    return _decisive(settings, LATER_POLICY_FLAGS)


def _decisive(settings: Any, later: tuple[str, ...]) -> dict[str, Any]:
    defaults = {f.name: f.default for f in dataclasses.fields(settings)}
    values = dataclasses.asdict(settings)
    return {name: value for name, value in values.items() if name not in later or value != defaults[name]}


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs. `digest()` covers what decides its results, for safe resumes.

    `policy` names how one step is produced (`engine.reasoning.policies.POLICIES`) and `strategy` how one
    problem is solved (`engine.reasoning.strategies.STRATEGIES`); their settings are the frozen settings
    dataclasses those specs declare (None: the spec's defaults).
    """

    runner: str
    output_dir: str
    models: dict[str, ModelConfig]
    policy: str = "spec"
    policy_settings: Any = None
    strategy: str = "vote"
    strategy_settings: Any = None
    reasoning: ReasoningConfig = ReasoningConfig()
    probing: ProbeSettings = ProbeSettings()
    limits: SchedulerLimits = SchedulerLimits()
    data: DataConfig = DataConfig()
    client: ClientLimits = ClientLimits()
    prompt_set: str = "default"
    # How prompts are rendered (`engine.serving.raw.PROMPT_FORMATS`): the model's chat template, or
    # SpecLRM's raw text with the tokenizer's special tokens.
    prompt_format: str = "chat"
    thinking: str = "auto"
    server_log_dir: str | None = None
    # Context length of the servers spectra starts; None: each model's own (its config.json).
    max_model_len: int | None = None
    # Restarts of one server spectra started before the run stops (None: the default, 3); not in the
    # digest: it changes whether a run finishes, not what a record holds.
    server_restarts: int | None = None
    # False: each problem reaches the model as given, without the prompt set's problem template and
    # system turn (the API's requests that name no prompt set: the client wrote the conversation).
    problem_template: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        for kind, table, name in (("policy", POLICIES, self.policy), ("strategy", STRATEGIES, self.strategy)):
            if name not in table:
                raise UsageError(f"unknown {kind} {name!r}; use one of {', '.join(table)}")
            settings = getattr(self, f"{kind}_settings")
            if settings is None:
                object.__setattr__(self, f"{kind}_settings", table[name].settings())
            elif not isinstance(settings, table[name].settings):
                raise TypeError(f"{kind} {name!r} takes {table[name].settings.__name__}, not {type(settings).__name__}")

    @property
    def prm_kind(self) -> str | None:
        """How the run reads its process reward model: the `--prm_kind` of its strategy (a search's),
        else of its policy when the strategy runs one; None when neither takes one."""
        readers = [self.strategy_settings]
        if STRATEGIES[self.strategy].runs_policy:
            readers.append(self.policy_settings)
        return next((s.prm_kind for s in readers if hasattr(s, "prm_kind")), None)

    def model(self, role: str) -> ModelConfig:
        """The model playing `role`; a UsageError naming the flag when the run has none."""
        if role not in self.models or not self.models[role].model:
            raise UsageError(f"this run needs the {role} model: give --{role}_model (a Hugging Face id or path)")
        return self.models[role]

    def to_dict(self) -> dict[str, Any]:
        """The config as the manifest keeps it: the models' API keys left out."""
        data = dataclasses.asdict(self)
        for model in data["models"].values():
            del model["api_key"]
        return data

    def digest(self) -> str:
        """A hash of the settings that change what a record holds (not URLs, limits or paths)."""
        decisive = {
            "runner": self.runner,
            "models": {role: m.model for role, m in sorted(self.models.items())},
            "policy": self.policy,
            "policy_settings": decisive_policy(self.policy_settings),
            "strategy": self.strategy,
            "strategy_settings": dataclasses.asdict(self.strategy_settings),
            "reasoning": decisive_reasoning(self.reasoning),
            "data": {
                "dataset_name": self.data.dataset_name,
                "data_file": self.data.data_file,
                "fields": self.data.fields,
                # Only where it orders anything, and not spectra's shuffle of before: digests stay.
                **({"gpqa_order": self.data.gpqa_order} if self._orders_gpqa() else {}),
            },
            # Only when on: run folders made before probing existed keep their digest.
            **({"probing": dataclasses.asdict(self.probing)} if self.probing != ProbeSettings() else {}),
            "prompt_set": self.prompt_set,
            # The texts, not only the name: an edited set is another experiment.
            "prompt_set_content": prompt_set_digest(self.prompt_set),
            "thinking": self.thinking,
            # Only when raw: run folders made before the raw format existed keep their digest.
            **({"prompt_format": self.prompt_format} if self.prompt_format != "chat" else {}),
            # Only when off: run folders made before the API keep their digest.
            **({} if self.problem_template else {"problem_template": False}),
        }
        return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]

    def _orders_gpqa(self) -> bool:
        return is_gpqa(self.data.dataset_name) and self.data.gpqa_order != "shuffled"

    def validate(self) -> None:
        """Raise UsageError for settings that cannot work together."""
        self.reasoning.validate()
        self.probing.validate()
        for settings in (self.policy_settings, self.strategy_settings):
            check_choices(settings)
            settings.validate()
        if self.server_restarts is not None and self.server_restarts < 0:
            raise UsageError(f"--server_restarts must be 0 or more, not {self.server_restarts}")
        if self.prompt_format not in PROMPT_FORMATS:
            raise UsageError(f"--prompt_format must be one of {', '.join(PROMPT_FORMATS)}, not {self.prompt_format!r}")
        if self.thinking not in ("auto", "on", "off"):
            raise UsageError(f"--thinking must be auto, on or off, not {self.thinking!r}")
