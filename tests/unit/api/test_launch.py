"""`spectra api`'s command line: the flags it refuses, its own settings, the servers it starts for
the methods it offers, and its one line on stderr for bad input."""

import shlex

import pytest

from engine.api.catalog import Catalog
from engine.api.launch import main, refuse_server_flags, running_api
from engine.errors import UsageError
from engine.run.shared_servers import serving_needs
from tests.fake_openai import FakeOpenAIServer
from tests.paths import REPO_ROOT
from tests.unit.api.conftest import api_flags, model_flags, solver


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--strategy", "dvts"], "--strategy changes nothing here: each request's model picks the method"),
        (["--model", "big"], "--model changes nothing here: each request's model picks the method"),
        (["--dataset_name", "aime24"], "--dataset_name changes nothing here: the API's problems are its requests"),
        (["--overwrite"], "kept and added to"),
        (["--approach", "dvts"], "--approach is a flag of runners.search"),
    ],
)
def test_a_run_flag_a_server_cannot_take_is_refused(argv, says):
    _, flags = api_flags(*argv)
    with pytest.raises(UsageError, match=says):
        refuse_server_flags(flags)


@pytest.mark.parametrize(
    "argv, says",
    [
        (["--api_key", " "], "--api_key (or $SPECTRA_API_KEY) is empty"),
        (["--max_body_bytes", "0"], "--max_body_bytes must be at least 1, not 0"),
        (["--port", "70000"], "--port must be in 0-65535"),
        (["--random_switch"], "--random_switch is a flag of runners.split"),
        (["--shard", "1/2"], "--shard changes nothing here"),
    ],
)
def test_bad_flags_end_the_command_with_one_line_and_exit_2(argv, says, capsys):
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("spectra api: error: ") and says in err and "\n" not in err


def test_the_key_comes_from_the_flag_or_the_environment(monkeypatch):
    monkeypatch.setenv("SPECTRA_API_KEY", "from-env")
    assert api_flags()[0].api_key == "from-env"
    assert api_flags("--api_key", "given")[0].api_key == "given"
    monkeypatch.delenv("SPECTRA_API_KEY")
    assert api_flags()[0].api_key is None


def test_each_role_is_served_for_the_offered_method_that_asks_the_most_of_it():
    models = [a for r in ("base", "positive", "negative") for a in (f"--{r}_model", r)]
    _, flags = api_flags("--big_model", "b", "--small_model", "s", *models)
    catalog = Catalog(flags, ["big", "small", "base", "positive", "negative"], None)
    chosen = serving_needs(r.config for r in catalog.defaults.values())
    # DeepConf asks 20 logprobs of every token (SpecReason's judge 10 of a score, a lone big model none)
    assert chosen["big"].strategy == "deepconf" and chosen["small"].strategy == "deepconf"
    assert chosen["base"].strategy == "rast" and chosen["positive"].strategy == "rast"


async def test_a_model_no_offered_method_calls_is_refused_before_any_server_is_asked():
    async with FakeOpenAIServer(solver()) as big, FakeOpenAIServer(solver()) as small:
        settings, flags = api_flags(*model_flags(big, small), "--embedder_model", "e", "--embedder_url", small.url)
        with pytest.raises(UsageError, match="--embedder_model changes nothing: no method offered here calls"):
            async with running_api("127.0.0.1", 0, settings, flags):
                pass
        assert big.requests == [] and big.health_checks == 0


def test_the_readmes_spectra_api_command_parses_and_is_a_servers():
    readme = (REPO_ROOT / "README.md").read_text().replace("\\\n", " ")
    (command,) = [line.strip() for line in readme.splitlines() if line.strip().startswith("spectra api --")]
    settings, flags = api_flags(*shlex.split(command.replace('"$KEY"', "key"))[2:])
    refuse_server_flags(flags)
    assert (settings.api_key, flags["max_problems_in_flight"], flags["output_dir"]) == ("key", 32, "results/api")
