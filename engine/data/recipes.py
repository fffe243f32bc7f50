"""Recipes: a run's flags as a YAML file (`--config recipe.yaml`), as search-and-learn's recipes are.

A recipe is a mapping of flag name to value (`approach: beam_search`, `n: 16`); flags given on the
command line override it. Values are checked as the flags are (type, choices). search-and-learn's
own key names `model_path` and `prm_path` are read as `small_model` and `prm_model`; its keys about
batching, GPU memory and the Hub mean nothing to a client of vLLM servers and are skipped with a
warning; any other unknown key is an error naming the file and the key.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

import structlog
import yaml

from engine.errors import UsageError

log = structlog.get_logger(__name__)

CONFIG_FLAG = "config"
SEED_ALIASES = {"model_path": "small_model", "prm_path": "prm_model"}
SEED_KEYS_SKIPPED = {
    "search_batch_size": "every problem in flight is searched at once",
    "prm_batch_size": "the PRM server batches requests itself",
    "gpu_memory_utilization": "set it on the vLLM servers (--big_server_args ...)",
    "push_to_hub": "runs are written to --output_dir",
    "hub_dataset_id": "runs are written to --output_dir",
    "overwrite_hub_revision": "runs are written to --output_dir",
}


def parse_with_recipe(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """Parse `argv` with the values of the recipe named by `--config` (if any) as defaults."""
    early = argparse.ArgumentParser(add_help=False)
    early.add_argument(f"--{CONFIG_FLAG}")
    known, _ = early.parse_known_args(argv)
    if known.config:
        parser.set_defaults(**recipe_defaults(Path(known.config), parser))
    return parser.parse_args(argv)


def recipe_defaults(path: Path, parser: argparse.ArgumentParser) -> dict[str, Any]:
    """The recipe at `path` as parser defaults (dest -> value), checked like command-line values."""
    actions = {a.dest: a for a in parser._actions if a.dest not in ("help", CONFIG_FLAG)}
    values = {}
    for key, value in _read(path).items():
        dest = SEED_ALIASES.get(key, key)
        if dest in SEED_KEYS_SKIPPED:
            log.warning("recipe_key_skipped", recipe=str(path), key=key, why=SEED_KEYS_SKIPPED[dest])
            continue
        if dest not in actions:
            raise UsageError(f"{path}: unknown key {key!r}; a recipe takes the runner's flag names (see --help)")
        if value is not None:
            values[dest] = _checked(path, key, actions[dest], value)
    return values


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
        converted = action.type(value) if action.type else str(value)
    except (TypeError, ValueError) as exc:
        raise UsageError(f"{path}: key {key!r}: {value!r} is not a valid {action.type.__name__}") from exc
    if action.choices and converted not in action.choices:
        raise UsageError(f"{path}: key {key!r} must be one of {', '.join(map(str, action.choices))}, not {value!r}")
    return converted
