"""API keys, both ways. A runner sends each model role's server its key: `--{role}_api_key`, else
the environment's `SPECTRA_{ROLE}_API_KEY` (never `OPENAI_API_KEY`: a key meant for one service is
not sent to another unasked). `spectra serve` starts servers that require a key (`--api_key`, else
`SPECTRA_API_KEY`), and generates one when they listen beyond this machine without one.

Keys are never written to the manifest (`RunConfig.to_dict`), the records or the logs.
"""

from __future__ import annotations

import dataclasses
import ipaddress
import secrets
from collections.abc import Mapping

from engine.run.config import RunConfig
from engine.serving.client import role_key_env

# The key a server spectra starts by hand (`spectra serve`) requires of its clients.
SERVE_KEY_ENV = "SPECTRA_API_KEY"


def with_environment_keys(config: RunConfig, environ: Mapping[str, str]) -> RunConfig:
    """`config` with each model's key read from `environ` (SPECTRA_{ROLE}_API_KEY) where no
    `--{role}_api_key` gave one. Variables of roles the run has no model for are left alone."""
    models = {
        role: model if model.api_key else dataclasses.replace(model, api_key=environ.get(role_key_env(role)) or None)
        for role, model in config.models.items()
    }
    return dataclasses.replace(config, models=models)


def is_loopback(host: str) -> bool:
    """Whether a server listening on `host` is reachable from this machine only."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:  # a host name: it may resolve to any interface
        return False


def serve_key(given: str | None, environ: Mapping[str, str], host: str) -> tuple[str | None, bool]:
    """The key servers listening on `host` require, and whether it was generated: the one given
    (`--api_key`, else SPECTRA_API_KEY); else, beyond this machine, a new one (`secrets`); else none."""
    key = given or environ.get(SERVE_KEY_ENV) or None
    if key is not None or is_loopback(host):
        return key, False
    return secrets.token_urlsafe(32), True
