"""The run config: frozen dataclasses built once from flags, saved with every run, passed down.

Flag names follow SpecReason and SpecLRM (`--score_threshold`, `--token_budget`, ...); each
also has a kebab-case spelling. No other module reads flags or environment variables.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import typing
from dataclasses import dataclass, field
from typing import Any

from engine.client import ClientLimits
from engine.errors import UsageError
from engine.prompts import prompt_set_digest


@dataclass(frozen=True)
class Settings:
    """Base of a policy's or a strategy's settings. Each field is one flat command-line flag
    (`--score_threshold`); `metadata` may give its `help` and `choices`. Subclasses check
    their values in `validate`."""

    def validate(self) -> None:
        """Raise UsageError for a value that cannot work; the base accepts everything."""


def setting(default: Any, help: str, choices: tuple[Any, ...] | None = None) -> Any:
    """A settings field with its flag's help text (and allowed values, checked on validate)."""
    return field(default=default, metadata={"help": help, "choices": choices})


def check_choices(settings: Settings) -> None:
    """UsageError for a field whose value is not among the choices it declares."""
    for f in dataclasses.fields(settings):
        choices, value = f.metadata.get("choices"), getattr(settings, f.name)
        if choices and value not in choices:
            raise UsageError(f"--{f.name} must be one of {', '.join(map(str, choices))}, not {value!r}")


@dataclass(frozen=True)
class ReasoningConfig(Settings):
    """How a track reasons, whatever its policy (defaults are SpecReason's)."""

    token_budget: int = setting(8192, "thinking tokens a track may keep")
    step_delimiter: str = setting("\n\n", "text that ends a reasoning step")
    max_step_tokens: int = setting(512, "tokens one step may generate")
    temperature: float = setting(0.6, "sampling temperature of the steps")
    top_p: float = setting(0.95, "nucleus sampling of the steps")
    answer_phase: bool = setting(
        False,
        "spectra: a step also stops at </think>, closing thinking or ending the sequence ends it, and the "
        "answer model then writes the answer (the seeds reason on and take the answer from the steps)",
    )
    answer_model: str = setting("big", "with --answer_phase: the model that writes the answer", ("big", "small"))
    answer_max_tokens: int = setting(1024, "with --answer_phase: tokens the answer may take")
    seed: int | None = setting(None, "base seed of every request (reproducible runs)")

    def validate(self) -> None:
        for name, value in (
            ("--token_budget", self.token_budget),
            ("--max_step_tokens", self.max_step_tokens),
            ("--answer_max_tokens", self.answer_max_tokens),
        ):
            if value < 1:
                raise UsageError(f"{name} must be at least 1, not {value}")
        check_choices(self)


@dataclass(frozen=True)
class SchedulerLimits(Settings):
    """How much runs at once; never changes what a record holds, so it is not in the digest."""

    max_tracks_in_flight: int = setting(64, "tracks running at once over all problems")
    max_problems_in_flight: int = setting(8, "problems solved at once")


@dataclass(frozen=True)
class ModelConfig:
    """One model: its id (a Hugging Face id or a local path) and where it is served.

    No `urls` means spectra starts a vLLM server for it; `tokenizer` overrides where the chat
    template is loaded from.
    """

    model: str
    urls: tuple[str, ...] = ()
    tokenizer: str | None = None


@dataclass(frozen=True)
class DataConfig:
    dataset_name: str = "demo"
    data_file: str | None = None
    problem_id: str | None = None
    repeat_id: str = "0"
    fields: tuple[str, ...] = ()
    # "I/N": this process does the I-th of N slices of the work (engine.run.Shard); left out of
    # the digest, like the selection, so that the shards of one run share their config digest.
    shard: str | None = None


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs. `digest()` covers what decides its results, for safe resumes.

    `policy` names how one step is produced (`engine.policies.POLICIES`) and `strategy` how one
    problem is solved (`engine.strategies.STRATEGIES`); their settings are the frozen settings
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
    limits: SchedulerLimits = SchedulerLimits()
    data: DataConfig = DataConfig()
    client: ClientLimits = ClientLimits()
    prompt_set: str = "default"
    thinking: str = "auto"
    server_log_dir: str | None = None
    # Context length of the servers spectra starts; None: each model's own (its config.json).
    max_model_len: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # Imported here: the tables import this module for ReasoningConfig.
        from engine.policies import POLICIES
        from engine.strategies import STRATEGIES

        for kind, table, name in (("policy", POLICIES, self.policy), ("strategy", STRATEGIES, self.strategy)):
            if name not in table:
                raise UsageError(f"unknown {kind} {name!r}; use one of {', '.join(table)}")
            settings = getattr(self, f"{kind}_settings")
            if settings is None:
                object.__setattr__(self, f"{kind}_settings", table[name].settings())
            elif not isinstance(settings, table[name].settings):
                raise TypeError(f"{kind} {name!r} takes {table[name].settings.__name__}, not {type(settings).__name__}")

    def model(self, role: str) -> ModelConfig:
        """The model playing `role`; a UsageError naming the flag when the run has none."""
        if role not in self.models or not self.models[role].model:
            raise UsageError(f"this run needs the {role} model: give --{role}_model (a Hugging Face id or path)")
        return self.models[role]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A hash of the settings that change what a record holds (not URLs, limits or paths)."""
        decisive = {
            "runner": self.runner,
            "models": {role: m.model for role, m in sorted(self.models.items())},
            "policy": self.policy,
            "policy_settings": dataclasses.asdict(self.policy_settings),
            "strategy": self.strategy,
            "strategy_settings": dataclasses.asdict(self.strategy_settings),
            "reasoning": dataclasses.asdict(self.reasoning),
            "data": {
                "dataset_name": self.data.dataset_name,
                "data_file": self.data.data_file,
                "fields": self.data.fields,
            },
            "prompt_set": self.prompt_set,
            # The texts, not only the name: an edited set is another experiment.
            "prompt_set_content": prompt_set_digest(self.prompt_set),
            "thinking": self.thinking,
        }
        return hashlib.sha256(json.dumps(decisive, sort_keys=True).encode()).hexdigest()[:16]

    def validate(self) -> None:
        """Raise UsageError for settings that cannot work together."""
        self.reasoning.validate()
        for settings in (self.policy_settings, self.strategy_settings):
            check_choices(settings)
            settings.validate()
        if self.thinking not in ("auto", "on", "off"):
            raise UsageError(f"--thinking must be auto, on or off, not {self.thinking!r}")


def add_flag(parser: argparse.ArgumentParser | Any, name: str, **kwargs: Any) -> None:
    """Add `--name` with its kebab-case twin (`--score_threshold` and `--score-threshold`)."""
    spellings = [f"--{name}"]
    if "_" in name:
        spellings.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*spellings, dest=name, **kwargs)


def _flag_type(annotation: Any) -> type:
    """The Python type a flag parses to, from a settings field's annotation (`int | None` -> int)."""
    options = [a for a in typing.get_args(annotation) if a is not type(None)] or [annotation]
    return options[0]


def add_settings_flags(parser: argparse.ArgumentParser | Any, cls: type) -> None:
    """One flag per field of the settings dataclass `cls`; unset flags stay None (the default)."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        kind, default = _flag_type(hints[f.name]), f.default
        text = f"{f.metadata.get('help', '')} (default {default!r})".strip()
        if kind is bool:
            add_flag(parser, f.name, action="store_true", default=None, help=text)
        else:
            add_flag(parser, f.name, type=kind, choices=f.metadata.get("choices"), help=text)


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
