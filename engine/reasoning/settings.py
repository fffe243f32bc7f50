"""The settings of a step policy, a strategy or a track: frozen dataclasses whose fields are flags.

Each field is one flat command-line flag (`--score_threshold`, the seeds' names); the run layer
builds the flags from these classes, saves the values in the manifest and covers them by the
config digest, so a new knob needs no edit outside the class that declares it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from typing import Any

from engine.errors import UsageError
from engine.records import Role


@dataclass(frozen=True)
class Settings:
    """Base of a policy's or a strategy's settings. Each field is one flat command-line flag
    (`--score_threshold`); `metadata` may give its `help` and `choices`. Subclasses check
    their values in `validate`."""

    def validate(self) -> None:
        """Raise UsageError for a value that cannot work; the base accepts everything."""

    def idle_flags(self) -> dict[str, str]:
        """The fields these values leave without effect (`--score_threshold` when the PRM judges),
        each with what would make it apply: given on the command line, they are refused."""
        return {}


def setting(default: Any, help: str, choices: tuple[Any, ...] | None = None, *, shared: bool = False) -> Any:
    """A settings field with its flag's help text (and allowed values, checked on validate).
    `shared`: the same knob in several settings classes (`--scorer`, for spec and the searches),
    declared with the same help and choices; its default may differ by method."""
    return field(default=default, metadata={"help": help, "choices": choices, "shared": shared})


def check_choices(settings: Settings) -> None:
    """UsageError for a field whose value is not among the choices it declares."""
    for f in dataclasses.fields(settings):
        choices, value = f.metadata.get("choices"), getattr(settings, f.name)
        if choices and value not in choices:
            raise UsageError(f"--{f.name} must be one of {', '.join(map(str, choices))}, not {value!r}")


# `--stop_rule`: SpecReason's step loop (also SpecLRM's and SplitReason's), or RSD's (main_online.py).
STOP_RULES = ("specreason", "rsd")


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
    answer_model: str = setting(
        Role.BIG, "with --answer_phase: the model that writes the answer", (Role.BIG, Role.SMALL)
    )
    answer_max_tokens: int = setting(1024, "with --answer_phase: tokens the answer may take")
    seed: int | None = setting(None, "base seed of every request (reproducible runs)")
    stop_rule: str = setting(
        "specreason",
        "when thinking ends: specreason (at a step that states an answer, 'boxed' or 'Answer:', or repeats the "
        "one before) or rsd (at a step that ends the sequence or reaches --max_step_tokens); both at the budget",
        STOP_RULES,
    )
    max_steps: int | None = setting(None, "thinking ends after this many steps (None: no limit; RSD's is 100)")

    def idle_flags(self) -> dict[str, str]:
        if self.answer_phase:
            return {}
        why = "the answer phase is off, so no answer is written after the thinking; add --answer_phase"
        return {"answer_model": why, "answer_max_tokens": why}

    def validate(self) -> None:
        for name, value in (
            ("--token_budget", self.token_budget),
            ("--max_step_tokens", self.max_step_tokens),
            ("--answer_max_tokens", self.answer_max_tokens),
            ("--max_steps", 1 if self.max_steps is None else self.max_steps),
        ):
            if value < 1:
                raise UsageError(f"{name} must be at least 1, not {value}")
        check_choices(self)
