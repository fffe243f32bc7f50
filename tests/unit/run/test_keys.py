"""API keys both ways: a role's key from its flag or its environment variable (never OPENAI_API_KEY),
kept out of the manifest; the key `spectra serve` requires beyond this machine."""

import pytest

from engine.run.keys import is_loopback, serve_key, with_environment_keys
from runners.spectra import main
from tests.fake_openai import FakeOpenAIServer, Reply
from tests.paths import REPO_ROOT
from tests.threaded_server import served_in_a_thread
from tests.unit.run.runner_commands import config_of

TOY_TOKENIZER = REPO_ROOT / "engine" / "toy" / "weights" / "tokenizer"

NOWHERE = "http://127.0.0.1:9"


def test_a_role_s_key_comes_from_its_flag_else_its_environment_variable_never_openai_s():
    config = config_of("spec", "--big_api_key", "from-flag", "--big_url", NOWHERE, "--small_url", NOWHERE)
    environ = {"SPECTRA_BIG_API_KEY": "big-env", "SPECTRA_SMALL_API_KEY": "small-env", "OPENAI_API_KEY": "openai"}
    keyed = with_environment_keys(config, environ)
    assert keyed.model("big").api_key == "from-flag" and keyed.model("small").api_key == "small-env"
    unkeyed = with_environment_keys(config_of("spec"), {"OPENAI_API_KEY": "openai", "SPECTRA_SMALL_API_KEY": ""})
    assert unkeyed.model("small").api_key is None and unkeyed.model("big").api_key is None


def test_a_key_in_the_environment_of_a_role_the_run_does_not_call_is_left_alone():
    config = with_environment_keys(config_of("base"), {"SPECTRA_SMALL_API_KEY": "small-env"})
    assert set(config.models) == {"big"}


def test_keys_are_never_in_the_manifest_nor_the_config_s_repr():
    config = with_environment_keys(config_of("spec"), {"SPECTRA_BIG_API_KEY": "k-secret-7"})
    assert config.model("big").api_key == "k-secret-7"
    assert "k-secret-7" not in repr(config) and "k-secret-7" not in str(config.to_dict())
    assert "api_key" not in config.to_dict()["models"]["big"]


@pytest.mark.parametrize(
    ("host", "loopback"),
    [("127.0.0.1", True), ("127.8.0.1", True), ("::1", True), ("localhost", True), ("0.0.0.0", False),
     ("::", False), ("10.1.2.3", False), ("gpu01", False)],
)  # fmt: skip
def test_only_loopback_addresses_stay_on_this_machine(host, loopback):
    assert is_loopback(host) == loopback


def test_serve_takes_a_given_key_else_the_environment_s_and_makes_one_only_beyond_this_machine():
    assert serve_key("given", {"SPECTRA_API_KEY": "env"}, "0.0.0.0") == ("given", False)
    assert serve_key(None, {"SPECTRA_API_KEY": "env"}, "127.0.0.1") == ("env", False)
    assert serve_key(None, {}, "127.0.0.1") == (None, False)
    made, generated = serve_key(None, {"OPENAI_API_KEY": "openai"}, "0.0.0.0")
    again, _ = serve_key(None, {}, "0.0.0.0")
    assert generated and made != "openai" and len(made) >= 32 and made != again


KEY = "k-never-written-4f1c"


def test_a_run_sends_its_key_and_writes_it_nowhere_and_without_it_stops_with_one_line(tmp_path, capsys, monkeypatch):
    problems = tmp_path / "problems.jsonl"
    problems.write_text('{"id": "p1", "problem": "What is 2 + 2?", "answer": "4"}\n')
    server = FakeOpenAIServer(lambda body: Reply("So \\boxed{4}"), api_key=KEY)
    flags = ["run", "--runner", "base", "--big_model", "fake-model", "--big_tokenizer", str(TOY_TOKENIZER)]
    flags += ["--dataset_name", str(problems), "--no_progress", "--log_json", "--log_level", "debug"]
    with served_in_a_thread(server) as url:
        refused = main([*flags, "--big_url", url, "--output_dir", str(tmp_path / "refused")])
        without = capsys.readouterr()
        flagged = main([*flags, "--big_url", url, "--output_dir", str(tmp_path / "flagged"), "--big_api_key", KEY])
        monkeypatch.setenv("SPECTRA_BIG_API_KEY", KEY)
        from_env = main([*flags, "--big_url", url, "--output_dir", str(tmp_path / "from_env")])
        with_key = capsys.readouterr()
    assert refused == 2 and not (tmp_path / "refused").exists()
    assert without.err.strip().splitlines()[-1] == (
        f"spectra: error: {url}: HTTP 401: the big model's server requires an API key: "
        "give its key with --big_api_key or SPECTRA_BIG_API_KEY"
    )
    assert flagged == from_env == 0 and set(server.authorizations[1:]) == {f"Bearer {KEY}"}
    written = [path for path in tmp_path.rglob("*") if path.is_file()]
    assert any(path.name == "records.jsonl" for path in written) and any(p.name == "manifest.json" for p in written)
    for path in written:
        assert KEY not in path.read_text(errors="replace"), path
    assert KEY not in with_key.out + with_key.err and '"event"' in with_key.err
