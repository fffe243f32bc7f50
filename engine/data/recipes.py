"""Recipes: a run's flags as a YAML file (`--config recipe.yaml`), as search-and-learn's recipes are.

A recipe is a mapping of flag name to value (`approach: beam_search`, `n: 16`); flags given on the
command line override it. Values are checked as the flags are (type, choices). Any unknown key is
an error naming the file and the key.

search-and-learn's recipes (`recipes/*/*.yaml`, its `src/sal/config.py` keys) run as there:
`model_path` and `prm_path` are `small_model` and `prm_model`; `num_samples`, `dataset_start` and
`dataset_end` pick problems by position as its `get_dataset` does (`--problem_id`); `dataset_name`
is `--dataset_name` (its MATH-500 is the `math500` preset). A recipe with any of its own keys is
one of its recipes, so what it leaves out takes its defaults (Llama-3.2-1B-Instruct, the RLHFlow
PRM, MATH-500) unless the command line gives them. Keys with no effect on a client of vLLM servers
(batching, GPU memory, the Hub, `custom_chat_template: null`) are accepted with one logged line;
a key that would change results and that spectra cannot honour (a custom chat template or system
prompt, another split or data config) is refused in one line.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import structlog
import yaml

from engine.data.problems import PRESETS
from engine.data.prompts import load_prompt_set
from engine.errors import UsageError

log = structlog.get_logger(__name__)

CONFIG_FLAG = "config"
SEED_ALIASES = {"model_path": "small_model", "prm_path": "prm_model"}
SEED_KEYS_SKIPPED = {
    "search_batch_size": "every problem in flight is searched at once",
    "prm_batch_size": "the PRM server batches requests itself",
    "gpu_memory_utilization": "set it on the vLLM servers (--big_server_args ...)",
    "num_proc": "answers are graded by the evaluators",
    "apply_voting": "the evaluators compute every vote",
    "push_to_hub": "runs are written to --output_dir",
    "hub_dataset_id": "runs are written to --output_dir",
    "hub_dataset_private": "runs are written to --output_dir",
    "overwrite_hub_revision": "runs are written to --output_dir",
}
# Accepted when null (search-and-learn's default or "none"); any other value would change results.
SEED_KEYS_NULL_ONLY = {
    "custom_chat_template": "spectra renders prompts with each model's own chat template, as null asks",
    "dataset_config": "the data set's only configuration is used",
}
SEED_DATA_KEYS = ("num_samples", "dataset_start", "dataset_end")
# search-and-learn's defaults (src/sal/config.py) for what one of its recipes leaves out.
SEED_DEFAULTS = {
    "small_model": "meta-llama/Llama-3.2-1B-Instruct",
    "prm_model": "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data",
    "dataset_name": "math500",
}
SEED_DATASET_SPLIT = "test"
PRESET_OF_HUB_ID = {preset.hub_id: name for name, preset in PRESETS.items()}
SEED_ONLY_KEYS = frozenset(
    {*SEED_ALIASES, *SEED_KEYS_SKIPPED, *SEED_KEYS_NULL_ONLY, *SEED_DATA_KEYS, "dataset_split", "system_prompt"}
)


def parse_with_recipe(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv` with the values of the recipe named by `--config` (if any) as defaults."""
    early = argparse.ArgumentParser(allow_abbrev=False, add_help=False)
    early.add_argument(f"--{CONFIG_FLAG}")
    known, _ = early.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**recipe_defaults(Path(known.config), parser))
    return parser.parse_args(argv)


def recipe_defaults(path: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The recipe at `path` as parser defaults (dest -> value), checked like command-line values."""
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", CONFIG_FLAG)}
    recipe = _read(path)
    values = _seed_recipe(path, recipe) if SEED_ONLY_KEYS & recipe.keys() else {}
    for key, value in recipe.items():
        dest = SEED_ALIASES.get(key, key)
        if dest in SEED_ONLY_KEYS:
            continue
        if dest not in actions:
            raise UsageError(f"{path}: unknown key {key!r}; a recipe takes the runner's flag names (see --help)")
        if dest == "dataset_name":
            value = PRESET_OF_HUB_ID.get(value, value)
        if value is not None:
            values[dest] = _checked(path, key, actions[dest], value)
    return values


def _seed_recipe(path: Path, recipe: dict[str, Any]) -> dict[str, Any]:
    """search-and-learn's own keys as flags, and its defaults for what the recipe leaves out."""
    values: dict[str, Any] = dict(SEED_DEFAULTS)
    for key, value in recipe.items():
        if key in SEED_ALIASES and value is not None:
            values[SEED_ALIASES[key]] = str(value)
        elif key in SEED_KEYS_SKIPPED:
            log.info("recipe_key_has_no_effect", recipe=str(path), key=key, why=SEED_KEYS_SKIPPED[key])
        elif key in SEED_KEYS_NULL_ONLY:
            if value is not None:
                raise UsageError(f"{path}: {key}: {SEED_KEYS_NULL_ONLY[key]}; set it to null or drop it")
            log.info("recipe_key_has_no_effect", recipe=str(path), key=key, why=SEED_KEYS_NULL_ONLY[key])
        elif key == "dataset_split" and value not in (None, SEED_DATASET_SPLIT):
            raise UsageError(
                f"{path}: dataset_split {value!r}: spectra reads a preset's own split ({SEED_DATASET_SPLIT} for "
                "MATH-500); give the rows as a file with --dataset_name FILE.jsonl"
            )
        elif key == "system_prompt" and value is not None and value != load_prompt_set("search").render_system():
            raise UsageError(
                f"{path}: system_prompt differs from search-and-learn's; put it in a prompt set "
                "(prompts/README.md) and give --prompt_set"
            )
    positions = _positions(path, recipe)
    if positions:
        values["problem_id"] = positions
    log.info("recipe_of_search_and_learn", recipe=str(path), defaults={k: values[k] for k in SEED_DEFAULTS})
    return values


def _positions(path: Path, recipe: dict[str, Any]) -> str | None:
    """`--problem_id` positions as search-and-learn's `get_dataset` picks them: the range
    [dataset_start, dataset_end) when both are given, then its first `num_samples`."""
    for key in SEED_DATA_KEYS:
        value = recipe.get(key)
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 0):
            raise UsageError(f"{path}: {key} must be a whole number of 0 or more, not {value!r}")
    start, end, samples = (recipe.get(k) for k in ("dataset_start", "dataset_end", "num_samples"))
    if (start is None) != (end is None):
        log.info("recipe_key_has_no_effect", recipe=str(path), key="dataset_start/end", why="it takes both")
    first, stop = (start, end) if start is not None and end is not None else (0, None)
    if samples is not None:
        stop = first + samples if stop is None else min(stop, first + samples)
    if stop is None:
        return None
    if stop <= first:
        raise UsageError(f"{path}: dataset_start/end and num_samples select no problem")
    return f"{first}-{stop - 1}"


def _read(path: Path) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise UsageError(f"cannot read the recipe {path}: {exc.strerror or exc}") from exc
    except yaml.YAMLError as exc:
        raise UsageError(f"{path}: not valid YAML: {str(exc).splitlines()[0]}") from exc
    if not isinstance(data, dict):
        raise UsageError(f"{path}: a recipe is a mapping of flag: value, not {type(data).__name__}")
    return data


def _checked(path: Path, key: str, action: argparse.Action, value: Any) -> Any:
    if isinstance(action, argparse._StoreTrueAction):
        if not isinstance(value, bool):
            raise UsageError(f"{path}: key {key!r} is a switch: give true or false, not {value!r}")
        return value or None  # false leaves the flag unset, as on the command line
    if isinstance(action, argparse._AppendAction):
        return [_converted(path, key, action, v) for v in (value if isinstance(value, list) else [value])]
    return _converted(path, key, action, value)


def _converted(path: Path, key: str, action: argparse.Action, value: Any) -> Any:
    if isinstance(value, (dict, list)):
        raise UsageError(f"{path}: key {key!r} takes one value, not {type(value).__name__}")
    try:
        # As the command line reads it: from text, so that 2.5 is no int (int(2.5) would be 2).
        converted = action.type(str(value)) if action.type else str(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{path}: key {key!r}: {value!r} is not a valid {action.type.__name__}") from exc
    if action.choices and converted not in action.choices:
        raise UsageError(f"{path}: key {key!r} must be one of {', '.join(map(str, action.choices))}, not {value!r}")
    return converted
