"""Server settings every request of a run would trip on, checked before the first problem.

Two settings of a vLLM server decide whether a run can work at all, and neither shows until a
request meets it: `--max-logprobs` (vLLM's default 20), above which a request asking more
logprobs is refused with HTTP 400, so RAST's 200 from the positive and negative models failed
every problem of a run against stock servers; and the context length, which cuts or refuses a
sample before it reaches the run's budget. `check_server_settings` refuses such a run in one line
naming the flags to change, before any record is written.

What each role is asked for is read from the config here, not from the request sites: the
logprobs of each policy, strategy and judge (`logprob_needs`, checked against the specs' real
requests by tests/unit/run/test_preflight.py) and the tokens one sample may write (`sample_budget`).
The missing model name is `engine.serving.servers.check_server`'s, when the servers are checked.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from engine.data.problems import Problem
from engine.errors import ServerSettingError
from engine.reasoning.judges import JUDGES, PAIR_JUDGES
from engine.reasoning.judges.prm import prm_kind_of
from engine.reasoning.policies import POLICIES
from engine.reasoning.strategies import STRATEGIES
from engine.run.config import RunConfig
from engine.run.runner_plans import SEARCH_APPROACHES
from engine.serving.client import ModelClient
from engine.serving.models import Model
from engine.serving.servers import logprobs_limit

# vLLM's default --max-logprobs (vllm/config/model.py `ModelConfig.max_logprobs`, vLLM 0.32).
VLLM_DEFAULT_MAX_LOGPROBS = 20
# RAST's start-up check asks each of its models for its top 5 (`rast.decoding.check_raw_logprobs`).
RAST_RAW_CHECK_LOGPROBS = 5
# The embedder and lookahead's judge read one or two steps at a time, never a whole sample: the
# context check leaves them out.
ONE_STEP_ROLES = ("embedder", "judge")
# role, the logprobs a request asks of it, and what asks them (the flag to change, or the part of the method).
LogprobRequest = tuple[str, int, str]
# What `check_server_settings` reads of each role's servers: their URLs, the model id they serve
# and their context length (None: unknown), as `engine.run.execute.Endpoint` holds them.
Served = tuple[tuple[str, ...], str, int | None]


@dataclass(frozen=True)
class LogprobNeed:
    """The most logprobs (sample or prompt) the run's requests ask of one role, and what asks them."""

    count: int
    asked_by: str


def logprob_needs(config: RunConfig, *, prm_kind: str = "token") -> dict[str, LogprobNeed]:
    """role -> the most logprobs a request of this run asks of that role's model. `prm_kind`: how the
    process reward model is read when --prm_kind is auto (the caller resolves it from the model's
    config; the token kind's 20 logprobs are vLLM's default, so server flags need not know it)."""
    needs: dict[str, LogprobNeed] = {}
    for role, count, asked_by in _logprob_requests(config, prm_kind):
        if role not in needs or count > needs[role].count:
            needs[role] = LogprobNeed(count, asked_by)
    return needs


def _logprob_requests(config: RunConfig, prm_kind: str) -> Iterator[LogprobRequest]:
    strategy, settings = config.strategy, config.strategy_settings
    if strategy == "rast":
        yield "base", max(settings.rast_logprobs, RAST_RAW_CHECK_LOGPROBS), "--rast_logprobs"
        yield "positive", settings.rast_aux_logprobs, "--rast_aux_logprobs"
        yield "negative", settings.rast_aux_logprobs, "--rast_aux_logprobs"
    elif strategy in SEARCH_APPROACHES:  # the search writes and scores itself: the step policy is unused
        yield from _judge_logprob_requests(settings, prm_kind)
    elif STRATEGIES[strategy].runs_policy:
        if strategy == "deepconf":
            for role in POLICIES[config.policy].roles_for(config.policy_settings):
                yield role, settings.deepconf_top_logprobs, "--deepconf_top_logprobs"
        yield from _policy_logprob_requests(config.policy, config.policy_settings, prm_kind)


def _judge_logprob_requests(settings: Any, prm_kind: str) -> Iterator[LogprobRequest]:
    """What the step judge `--scorer` names asks of its model's logprobs."""
    judge = JUDGES[settings.scorer]
    count = judge.top_logprobs(prm_kind if settings.prm_kind == "auto" else settings.prm_kind)
    if count is not None:
        yield judge.role, count, f"the step judge (--scorer {settings.scorer}: {judge.description})"


def _policy_logprob_requests(policy: str, settings: Any, prm_kind: str) -> Iterator[LogprobRequest]:
    if policy == "spec":
        yield from _judge_logprob_requests(settings, prm_kind)
    elif policy == "lookahead" and settings.verifier in PAIR_JUDGES:
        pair = PAIR_JUDGES[settings.verifier]
        if pair.top_logprobs is not None:
            yield pair.role, pair.top_logprobs, f"lookahead's verifier (--verifier {settings.verifier})"
    elif policy in ("logprob_subselect", "spec_reason"):
        yield "big", 1, f"SplitReason's {policy} (the big model's token logprobs)"


def sample_budget(config: RunConfig) -> tuple[int, str]:
    """The most tokens one sample of the run may write after its prompt, and the flags that set them."""
    reasoning = config.reasoning
    if config.strategy == "rast":
        return config.strategy_settings.max_tokens, "--max_tokens"
    if config.strategy in SEARCH_APPROACHES:  # every request of a search writes one step at most
        return reasoning.max_step_tokens, "--max_step_tokens"
    if reasoning.answer_phase:
        return reasoning.token_budget + reasoning.answer_max_tokens, "--token_budget and --answer_max_tokens"
    return reasoning.token_budget, "--token_budget"


async def check_server_settings(
    config: RunConfig,
    session: aiohttp.ClientSession,
    served: Mapping[str, Served],
    models: Mapping[str, Model],
    problems: list[Problem],
) -> None:
    """Raise ServerSettingError, one line naming the flags to change, when a role's server gives
    fewer logprobs than the run asks of it (one one-token request per role asked for logprobs
    finds out) or its context cannot hold a sample of the run after the shortest problem."""
    issues = await _logprob_issues(config, session, served)
    # Tokenizing every problem takes a moment on a large data set: off the loop that supervises the servers.
    issues += await asyncio.to_thread(_context_issues, config, served, models, problems)
    if issues:
        raise ServerSettingError("; ".join(issues))


async def _logprob_issues(config: RunConfig, session: aiohttp.ClientSession, served: Mapping[str, Served]) -> list[str]:
    issues = []
    needs = logprob_needs(config, prm_kind=await _prm_kind(config))
    for role, need in needs.items():
        urls, model_id, _ = served[role]
        key = config.model(role).api_key
        client = ModelClient(session, model_id, list(urls), config.client, api_key=key, role=role)
        limit = await logprobs_limit(client, need.count)
        if limit is None:
            continue
        fix = (
            f"start it with --max-logprobs {need.count} (or let spectra start it: drop --{role}_url)"
            if config.model(role).urls
            else f"--{role}_server_args sets --max-logprobs {limit}: raise it to {need.count} or leave it out"
        )
        issues.append(
            f"the {role} model's server gives at most {limit} logprobs a token and the run asks {need.count} "
            f"({need.asked_by}): {fix}"
        )
    return issues


async def _prm_kind(config: RunConfig) -> str:
    """How the run's PRM is read when --prm_kind is auto (as its judge decides it at the first score)."""
    judged = config.strategy_settings if config.strategy in SEARCH_APPROACHES else config.policy_settings
    if getattr(judged, "scorer", None) == "prm" and judged.prm_kind == "auto":
        return await asyncio.to_thread(prm_kind_of, config.model("prm").model)
    return "token"


def _context_issues(
    config: RunConfig, served: Mapping[str, Served], models: Mapping[str, Model], problems: list[Problem]
) -> list[str]:
    budget, flags = sample_budget(config)
    issues = []
    for role, (_, _, length) in served.items():
        if length is None or role in ONE_STEP_ROLES or not problems:
            continue
        prompt = shortest_problem_tokens(models[role], problems)
        if prompt + budget <= length:
            continue
        longer = (
            f"restart its server with --max-model-len {prompt + budget} or more"
            if config.model(role).urls
            else f"give --max_model_len {prompt + budget} or more, if the model takes it"
        )
        issues.append(
            f"the {role} model's server holds {length} tokens of context (max_model_len) and a sample may "
            f"write {budget} ({flags}) after a prompt of at least {prompt}: lower {flags} by "
            f"{prompt + budget - length}, or {longer}"
        )
    return issues


def shortest_problem_tokens(model: Model, problems: list[Problem]) -> int:
    """Tokens of the shortest problem statement under the model's tokenizer: a lower bound of any
    prompt of the run (the template, the instructions and the steps come on top)."""
    texts = list(dict.fromkeys(problem.problem for problem in problems))
    return min(len(ids) for ids in model.chat.tokenizer(texts, add_special_tokens=False)["input_ids"])
