"""`spectra api`: spectra's methods behind an OpenAI-compatible HTTP server (`engine.api.app`).

It takes the runners' flags: the models (`--big_model` with `--big_url`, or without a URL spectra
starts and supervises the server; with no model at all, the toy demo's trained pair), the method
flags as defaults of every method they apply to (a method they do not apply to is not offered),
the limits every request shares, `--output_dir` for the records (and the log, `spectra.log`); and
its own: `--host`, `--port`, `--api_key` (or SPECTRA_API_KEY), `--max_queued_requests`,
`--max_request_tokens`, `--max_body_bytes`, `--drain_timeout_s`. It prints one line, `spectra api: serving N methods at
URL`, once it answers. SIGTERM or Ctrl-C drains the requests in flight (new ones get 503), stops
the servers spectra started and exits 0.
"""

from __future__ import annotations

import argparse
import asyncio
import ipaddress
import os
import sys
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import structlog

from engine import loop
from engine.api.app import ApiSettings, answering, make_app
from engine.api.catalog import CHOOSING_FLAGS, Catalog
from engine.api.service import ReasoningService
from engine.errors import ServerSettingError, SpectraError, Terminated, UsageError
from engine.logging import configure_logging, write_log_to
from engine.run.demo import demo_model_flags
from engine.run.execute import build_models, model_endpoints, roles_needed
from engine.run.flags import MODEL_ROLES, ArgumentParser, add_flag, add_run_arguments, run_groups
from engine.run.keys import with_environment_keys
from engine.run.preflight import check_server_settings
from engine.run.runner_plans import OWN_FLAGS
from engine.run.shared_servers import serving_config, serving_needs

log = structlog.get_logger(__name__)

API_KEY_ENV = "SPECTRA_API_KEY"
# The server's own flags, and the least each limit may be.
LEAST = {"max_queued_requests": 0, "max_request_tokens": 1, "max_body_bytes": 1, "drain_timeout_s": 0}
API_FLAGS = ("host", "port", "api_key", *LEAST)
# Run flags a server cannot take, and why.
DATA_FLAGS = ("dataset_name", "data_file", "field", "problem_id", "repeat_id", "num_repeats", "shard", "config")
NOT_SERVER_FLAGS = {
    **dict.fromkeys(CHOOSING_FLAGS, "each request's model picks the method (GET /v1/models lists them)"),
    **dict.fromkeys(DATA_FLAGS, "the API's problems are its requests"),
    "overwrite": "a method's records go to <output_dir>/<method>-<digest>/, kept and added to",
    "no_progress": "the API shows no progress bar",
}


def build_parser() -> ArgumentParser:
    parser = ArgumentParser(
        prog="spectra api",
        description="Serve spectra's methods through an OpenAI-compatible API: the request's model picks "
        "the method (GET /v1/models lists them). Model, method and limit flags are the runners'.",
    )
    groups = run_groups(parser)
    add_run_arguments(parser, groups=groups)
    server = parser.add_argument_group("server")
    add_flag(server, "host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    add_flag(server, "port", type=int, default=8000, help="port to listen on; 0 picks a free one (default 8000)")
    add_flag(server, "api_key", help=f"require Authorization: Bearer KEY on /v1/ (default: ${API_KEY_ENV}, else none)")
    add_flag(server, "max_queued_requests", type=int, default=256, help="problems that may wait for a slot; "
             "past them a request gets 429 (default 256)")  # fmt: skip
    add_flag(server, "max_request_tokens", type=int, default=32768, help="the most max_tokens a request may ask "
             "(default 32768)")  # fmt: skip
    add_flag(server, "max_body_bytes", type=int, default=1 << 20, help="largest request body (default 1 MiB)")
    add_flag(server, "drain_timeout_s", type=float, default=600.0, help="on SIGTERM, how long requests in flight "
             "may take to finish (default 600)")  # fmt: skip
    for action in parser._actions:  # parsed (and refused by name), but not listed
        if action.dest in NOT_SERVER_FLAGS or action.dest in OWN_FLAGS:
            action.help = argparse.SUPPRESS
    return parser


def main(argv: list[str] | None = None) -> int:
    """`spectra api ARGV`; the exit code (0 after a drain on SIGTERM or Ctrl-C, 2 for bad flags)."""
    flags = vars(build_parser().parse_args(sys.argv[1:] if argv is None else argv))
    # The log is kept beside the records, in <output_dir>/spectra.log; without a folder, the screen is all.
    configure_logging(json=flags["log_json"], level=flags["log_level"], keep=bool(flags["output_dir"]))
    try:
        settings, run_flags = api_settings(flags), {k: v for k, v in flags.items() if k not in API_FLAGS}
        refuse_server_flags(run_flags)
        return loop.run(serve(flags["host"], flags["port"], settings, run_flags))
    except (Terminated, KeyboardInterrupt):
        return 0  # drained: the requests in flight were answered
    except SpectraError as exc:
        print(f"spectra api: error: {exc}", file=sys.stderr)
        return exc.exit_code


def api_settings(flags: Mapping[str, Any]) -> ApiSettings:
    key = flags["api_key"] if flags["api_key"] is not None else os.environ.get(API_KEY_ENV)
    if key is not None and not key.strip():
        raise UsageError(f"--api_key (or ${API_KEY_ENV}) is empty: give a key, or leave both unset")
    for name, least in LEAST.items():
        if flags[name] < least:
            raise UsageError(f"--{name} must be at least {least}, not {flags[name]}")
    if not 0 <= flags["port"] <= 65535:
        raise UsageError(f"--port must be in 0-65535, not {flags['port']}")
    if key is None and not _is_loopback(flags["host"]):
        log.warning("api_without_key", host=flags["host"], hint=f"anyone who reaches it may use it: set ${API_KEY_ENV}")
    return ApiSettings(key, **{name: flags[name] for name in LEAST})  # its fields are the flags' names


def refuse_server_flags(flags: Mapping[str, Any]) -> None:
    """A run flag a server cannot take would change nothing: refused in one line."""
    for name, why in NOT_SERVER_FLAGS.items():
        if flags.get(name) not in (None, False):
            raise UsageError(f"--{name} changes nothing here: {why}; drop it")
    for name, (runner, _) in OWN_FLAGS.items():
        if flags.get(name) not in (None, False):
            raise UsageError(f"--{name} is a flag of runners.{runner}: each request's model picks the method; drop it")


async def serve(host: str, port: int, settings: ApiSettings, flags: dict[str, Any]) -> int:
    """Answer requests until cancelled (SIGTERM, Ctrl-C, a server spectra started died for good)."""
    async with running_api(host, port, settings, flags) as (url, service):
        methods = len(service.catalog.methods)
        print(f"spectra api: serving {methods} methods at {url}", flush=True)
        log.info("api_ready", url=url, methods=methods)
        await asyncio.Event().wait()
    return 0


@asynccontextmanager
async def running_api(
    host: str, port: int, settings: ApiSettings, flags: dict[str, Any]
) -> AsyncIterator[tuple[str, ReasoningService]]:
    """The server for the block: the methods its models and flags run (each checked against the
    servers' settings; one a setting trips is not offered), its model servers (started and stopped
    by spectra, for models given without URLs), its URL and its service."""
    roles = [role for role in MODEL_ROLES if flags.get(f"{role}_model")]
    if not roles:  # the toy demo's trained pair
        roles = ["big", "small"]
        flags = {**flags, **demo_model_flags(flags, roles)}
    output_root = Path(flags["output_dir"]) if flags.get("output_dir") else None
    catalog = Catalog(flags, roles, output_root)
    offered = list(catalog.defaults.values())
    if not offered:
        reasons = "; ".join(f"{name}: {why}" for name, why in list(catalog.left_out.items())[:3])
        raise UsageError(f"no method runs with these models and flags ({reasons})")
    unused = sorted(set(roles) - {role for r in offered for role in roles_needed(r.config)})
    if unused:
        raise UsageError(f"--{unused[0]}_model changes nothing: no method offered here calls the {unused[0]} model")
    # The servers spectra starts log to <output_dir>/server-logs (./server-logs without one) unless --server_log_dir.
    every = serving_config([r.config for r in offered], str(output_root or ""))
    # The keys the model servers require: --{role}_api_key, else SPECTRA_{ROLE}_API_KEY.
    every = with_environment_keys(every, os.environ)
    if output_root is not None:  # refused no more: the log joins the records
        write_log_to(output_root)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:
        async with model_endpoints(every, session, serving_needs(r.config for r in offered)) as endpoints:
            models = await build_models(every, session, endpoints)
            for resolved in offered:
                served = {role: endpoints[role] for role in roles_needed(resolved.config)}
                try:
                    await check_server_settings(resolved.config, session, served, models, [])
                except ServerSettingError as exc:
                    catalog.leave_out(resolved.method.info.name, str(exc))
            service = ReasoningService(
                catalog, models, endpoints, session, limits=every.limits, max_queued=settings.max_queued_requests
            )
            try:
                async with answering(make_app(service, settings), host, port) as url:
                    yield url, service
            finally:
                service.close()


def _is_loopback(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return host == "localhost"
