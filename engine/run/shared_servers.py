"""Several configs served by one set of servers (the API's methods, the demo's runs): which config
each role's server is started for, and one config holding every model, to start, check and load
them once for all (`engine.run.execute.model_endpoints`)."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence

from engine.run.config import RunConfig
from engine.run.execute import roles_needed
from engine.run.preflight import logprob_needs


def serving_needs(configs: Iterable[RunConfig]) -> dict[str, RunConfig]:
    """Per role, the config whose requests ask the most of its server (logprobs, a strategy's server
    flags): the server spectra starts for it is started for that config (`model_endpoints`' `serving`)."""
    chosen: dict[str, RunConfig] = {}
    for config in configs:
        for role in roles_needed(config):
            if role not in chosen or _logprobs_asked(config, role) > _logprobs_asked(chosen[role], role):
                chosen[role] = config
    return chosen


def _logprobs_asked(config: RunConfig, role: str) -> int:
    need = logprob_needs(config).get(role)
    return need.count if need else 0


def serving_config(configs: Sequence[RunConfig], output_dir: str) -> RunConfig:
    """A config holding every model of `configs` (the first one's settings otherwise); the servers
    spectra starts log to <output_dir>/server-logs unless --server_log_dir."""
    models = {role: m for config in configs for role, m in config.models.items()}
    return dataclasses.replace(configs[0], models=models, output_dir=output_dir)
