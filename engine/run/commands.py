"""The `spectra` commands around a run: `serve` (vLLM servers until Ctrl-C; with no models, the
demo's toy pair; beyond this machine only with a key), `make-tiny-models` (the tests' tiny random
models), `make-toy-models` (the demo's trained toy models as model folders), and `methods` (what
spectra can run)."""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from engine import loop
from engine.errors import UsageError
from engine.logging import write_log_to
from engine.run.config import ModelConfig
from engine.run.demo import demo_models
from engine.run.flags import SERVER_RESTARTS_HELP, add_common_arguments, add_flag
from engine.run.keys import SERVE_KEY_ENV, serve_key
from engine.run.methods import methods_command
from engine.toy.trained import COSTLY_BIG_LAYERS

Command = Callable[[argparse.Namespace], int]


def add_commands(commands: Any) -> dict[str, Command]:
    """Add the commands to `spectra`'s subparsers; returns what runs each, by name."""
    serve = commands.add_parser("serve", help="start vLLM servers for the big and small models until Ctrl-C")
    for role in ("big", "small"):
        add_flag(serve, f"{role}_model")
    add_flag(serve, "server_log_dir")
    add_flag(serve, "server_restarts", type=int, help=SERVER_RESTARTS_HELP.replace("the run stops", "serve stops"))
    add_flag(serve, "max_model_len", type=int, help="context length (default: each model's own)")
    add_flag(serve, "toy_models_dir")
    add_flag(serve, "host", default="127.0.0.1", help="address to listen on (default 127.0.0.1: this machine only)")
    add_flag(serve, "port", type=int, help="port of the first server, the next one's is port + 1 (default: free ports)")
    add_flag(
        serve,
        "api_key",
        help=f"the key the servers require (default ${SERVE_KEY_ENV}; beyond 127.0.0.1 one is made and printed "
        "once when none is given)",
    )
    add_common_arguments(serve)
    tiny = commands.add_parser("make-tiny-models", help="build the tiny random-weight models the tests use")
    tiny.add_argument("directory")
    tiny.add_argument("--seed", type=int, default=0)
    add_common_arguments(tiny)
    toy = commands.add_parser("make-toy-models", help="write the trained toy models (the demo's) as model folders")
    toy.add_argument("directory")
    toy.add_argument(
        "--big_layers",
        "--big-layers",
        type=int,
        default=COSTLY_BIG_LAYERS,
        help="decoder layers of the costly big model (the trained big model's function at a big model's "
        f"cost per token; default {COSTLY_BIG_LAYERS})",
    )
    add_common_arguments(toy)
    methods = commands.add_parser("methods", help="list every runner, policy and strategy: paper, models, flags")
    add_flag(methods, "json", action="store_true", help="as JSON")
    add_flag(methods, "models", help="only what these model roles can run, e.g. big,small")
    add_common_arguments(methods)
    return {
        "serve": _serve,
        "make-tiny-models": _make_tiny_models,
        "make-toy-models": _make_toy_models,
        "methods": _methods,
    }


def _serve(args: argparse.Namespace) -> int:
    from engine.serving.servers import DEFAULT_RESTARTS, serve_models
    from engine.serving.vllm_command import ServerSpec, model_context_length

    if args.big_model or args.small_model:
        pairs = [(r, ModelConfig(m)) for r, m in (("big", args.big_model), ("small", args.small_model)) if m]
    else:
        pairs = list(demo_models(vars(args), ["big", "small"]).items())
    last_port = 65536 - len(pairs)  # the servers take --port, --port + 1, ...
    if args.port is not None and not 1 <= args.port <= last_port:
        raise UsageError(f"--port must be between 1 and {last_port}, not {args.port}")
    key, generated = serve_key(args.api_key, os.environ, args.host)
    specs = [
        ServerSpec(
            name=role,
            model=model.model,
            max_model_len=args.max_model_len or model_context_length(model.model),
            host=args.host,
            port=None if args.port is None else args.port + number,
            extra_args=model.server_args,
            api_key=key,
        )
        for number, (role, model) in enumerate(pairs)
    ]

    async def serve() -> None:
        restarts = DEFAULT_RESTARTS if args.server_restarts is None else args.server_restarts
        if restarts < 0:
            raise UsageError(f"--server_restarts must be 0 or more, not {restarts}")
        log_dir = Path(args.server_log_dir or "server-logs")
        write_log_to(log_dir)  # spectra's own log beside its servers'
        # Each restart is printed where the servers' URLs were (stdout), for whoever watches it.
        on_restart = functools.partial(print, flush=True)
        async with serve_models(specs, log_dir=log_dir, restarts=restarts, on_restart=on_restart) as running:
            for name, server in running.items():
                print(f"{name}\t{_reachable_url(server.url, args.host)}\t{server.model}", flush=True)
            if generated:  # printed this once, nowhere else: runners take it as --{role}_api_key
                print(f"api_key\t{key}", flush=True)
            await asyncio.Event().wait()

    loop.run(serve())
    return 0


def _reachable_url(url: str, host: str) -> str:
    """`url` as other machines reach it: a server listening on every interface by this machine's name."""
    if host not in ("0.0.0.0", "::"):
        return url
    return f"http://{socket.gethostname()}:{urlsplit(url).port}"


def _make_tiny_models(args: argparse.Namespace) -> int:
    from engine.toy.tiny import make_tiny_models

    tiny = make_tiny_models(Path(args.directory), seed=args.seed)
    print(f"big\t{tiny.big}\nsmall\t{tiny.small}")
    return 0


def _make_toy_models(args: argparse.Namespace) -> int:
    from engine.toy.trained import make_toy_models

    toy = make_toy_models(Path(args.directory), big_layers=args.big_layers)
    print(f"big\t{toy.big}\nsmall\t{toy.small}\ncostly_big\t{toy.costly_big}\nsmall_lost\t{toy.small_lost}")
    print(f"prm\t{toy.prm}\nprm_token\t{toy.prm_token}")
    return 0


def _methods(args: argparse.Namespace) -> int:
    print(methods_command(args.json, args.models))
    return 0
