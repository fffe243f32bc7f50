"""The run config: frozen dataclasses built once from flags, saved with every run, passed down.

Flag names follow SpecReason and SpecLRM (`--score_threshold`, `--token_budget`, ...); each
also has a kebab-case spelling. No other module reads flags or environment variables.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from engine.client import ClientLimits
from engine.errors import UsageError
from engine.prompts import prompt_set_digest
from engine.scoring import SCORE_METHODS

TRACK_MODES = ("big", "small", "spec")
AGGREGATIONS = ("speclrm", "majority", "weighted", "first")


@dataclass(frozen=True)
class ReasoningConfig:
    """How one track reasons (defaults are SpecReason's)."""

    mode: str = "spec"
    score_threshold: float = 7.0
    score_method: str = "greedy"
    token_budget: int = 8192
    first_n_steps_base_model: int = 0
    step_delimiter: str = "\n\n"
    max_step_tokens: int = 512
    temperature: float = 0.6
    top_p: float = 0.95
    answer_model: str = "big"
    answer_max_tokens: int = 1024
    seed: int | None = None


@dataclass(frozen=True)
class ParallelConfig:
    """How many tracks a problem gets, how they are prompted and how their answers are combined."""

    tracks: int = 1
    use_role_prompts: bool = False
    method_num: int = 0
    selector_model: str = "big"
    aggregation: str = "majority"
    early_stop: bool = False
    early_stop_share: float | None = None
    max_tracks_in_flight: int = 64
    max_problems_in_flight: int = 8


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


@dataclass(frozen=True)
class RunConfig:
    """Everything a run needs. `digest()` covers what decides its results, for safe resumes."""

    runner: str
    output_dir: str
    big: ModelConfig
    small: ModelConfig
    reasoning: ReasoningConfig = ReasoningConfig()
    parallel: ParallelConfig = ParallelConfig()
    data: DataConfig = DataConfig()
    client: ClientLimits = ClientLimits()
    prompt_set: str = "default"
    thinking: str = "auto"
    server_log_dir: str | None = None
    # Context length of the servers spectra starts; None: each model's own (its config.json).
    max_model_len: int | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def digest(self) -> str:
        """A hash of the settings that change what a record holds (not URLs, limits or paths)."""
        decisive = {
            "runner": self.runner,
            "big": self.big.model,
            "small": self.small.model,
            "reasoning": dataclasses.asdict(self.reasoning),
            "parallel": {k: v for k, v in dataclasses.asdict(self.parallel).items() if not k.startswith("max_")},
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
        r, p = self.reasoning, self.parallel
        if r.mode not in TRACK_MODES:
            raise UsageError(f"unknown track mode {r.mode!r}; use one of {', '.join(TRACK_MODES)}")
        if r.score_method not in SCORE_METHODS:
            raise UsageError(f"--score_method must be one of {', '.join(SCORE_METHODS)}, not {r.score_method!r}")
        if not 0 <= r.score_threshold <= 9:
            raise UsageError(f"--score_threshold must be between 0 and 9, not {r.score_threshold}")
        for name, value in (
            ("--token_budget", r.token_budget),
            ("--max_step_tokens", r.max_step_tokens),
            ("--answer_max_tokens", r.answer_max_tokens),
            ("--tracks", p.tracks),
        ):
            if value < 1:
                raise UsageError(f"{name} must be at least 1, not {value}")
        if r.answer_model not in ("big", "small") or p.selector_model not in ("big", "small"):
            raise UsageError("--answer_model and --selector_model take 'big' or 'small'")
        if p.aggregation not in AGGREGATIONS:
            raise UsageError(f"--aggregation must be one of {', '.join(AGGREGATIONS)}, not {p.aggregation!r}")
        if p.early_stop_share is not None and not 0.5 < p.early_stop_share <= 1:
            raise UsageError(f"--early_stop_share must be in (0.5, 1], not {p.early_stop_share}")
        if p.method_num < 0:
            raise UsageError(f"--method_num must be 0 or more, not {p.method_num}")
        if self.thinking not in ("auto", "on", "off"):
            raise UsageError(f"--thinking must be auto, on or off, not {self.thinking!r}")


def add_flag(parser: argparse.ArgumentParser | Any, name: str, **kwargs: Any) -> None:
    """Add `--name` with its kebab-case twin (`--score_threshold` and `--score-threshold`)."""
    spellings = [f"--{name}"]
    if "_" in name:
        spellings.append(f"--{name.replace('_', '-')}")
    parser.add_argument(*spellings, dest=name, **kwargs)
