"""What would change nothing or cannot work is refused before any server starts: one line naming
the flag and what would make it apply, exit code 2, nothing written."""

import ast
import importlib

import pytest

from engine.run.execute import roles_needed
from tests.paths import REPO_ROOT
from tests.unit.run.runner_commands import config_of

# Models at an address nothing serves: a run that is not refused fails fast there, starting nothing.
NOWHERE = "http://127.0.0.1:9"
BIG = ["--big_model", "big-model", "--big_url", NOWHERE]
SMALL = ["--small_model", "small-model", "--small_url", NOWHERE]
BOTH = [*BIG, *SMALL]
SEARCH = [*SMALL, "--prm_model", "prm-model", "--prm_url", NOWHERE]
RAST = [
    f"--{role}_{x}={v}" for role in ("base", "positive", "negative") for x, v in (("model", role), ("url", NOWHERE))
]


def refusal(capsys, tmp_path, runner, *argv):
    """The one error line of `python -m runners.<runner> ARGV` (`spectra` for the front door)."""
    out = tmp_path / "out"
    main = importlib.import_module(f"runners.{runner}").main
    try:
        code = main([*argv, "--output_dir", str(out), "--no_progress"])
    except SystemExit as exited:  # argparse's own refusals
        code = exited.code
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert code == 2 and len(errors) == 1, (code, errors)
    assert not out.exists(), "a refused run must write nothing"
    return errors[0]


@pytest.mark.parametrize(
    ("runner", "argv", "message"),
    [
        # a policy chosen for a strategy that writes its own steps
        (
            "spectra",
            ["run", *SEARCH, "--strategy", "beam_search", "--policy", "spec", "--score_threshold", "5"],
            "--policy spec changes nothing: strategy beam_search runs no step policy (it writes its own steps); "
            "drop it, or choose a strategy that runs one (vote, deepconf)",
        ),
        ("search", [*SEARCH, "--policy", "small"], "--policy small changes nothing: strategy best_of_n runs no"),
        ("base", [*RAST, "--strategy", "rast", "--model", "big"], "--model big changes nothing"),
        ("split", [*BOTH, "--spec_reason", "--strategy", "dvts"], "--spec_reason changes nothing: strategy dvts"),
        ("search", [*SEARCH, "--score_threshold", "5"], "--score_threshold belongs to policy spec, and strategy"),
        ("search", [*SEARCH, "--probe_every", "64"], "--probe_every probes the tracks of a step policy"),
        # a model the run does not call
        ("spec", [*BOTH, "--prm_model", "prm"], "--prm_model is for the prm model, which this run (spec, vote) does"),
        ("spec", [*BOTH, "--embedder_url", "http://127.0.0.1:9"], "--embedder_url is for the embedder model"),
        (
            "base",
            [*BOTH],
            "--small_model is for the small model, which this run (big, vote) does not call: drop it, or",
        ),
        ("base", ["--model", "small", *BOTH], "--big_model is for the big model"),
        ("scale", [*BIG, "--small_tokenizer", "t"], "--small_tokenizer is for the small model"),
        ("search", [*SEARCH, *BIG], "--big_model is for the big model"),
        ("search", [*SEARCH, "--scorer", "judge", *BIG], "--prm_model is for the prm model"),
        ("split", [*BOTH, "--big_model_only"], "--small_model is for the small model"),
        ("rast", [*RAST, *BOTH], "--big_model is for"),
        # a flag of another runner, or of a runner's own choosing
        (
            "spec",
            [*BOTH, "--approach", "dvts"],
            "--approach is a flag of runners.search; with runner spec use --strategy dvts",
        ),
        (
            "spec",
            [*BOTH, "--dataset", "MATH"],
            "--dataset is a flag of runners.rast; with runner spec use --dataset_name",
        ),
        (
            "scale",
            [*BIG, "--num_runs", "4"],
            "--num_runs is a flag of runners.rast; with runner scale use --num_repeats 4",
        ),
        (
            "search",
            [*SEARCH, "--model", "small"],
            "--model has no effect in search (it picks the model of runners base",
        ),
        ("split", [*BOTH, "--spec_reason", "--model", "big"], "--model has no effect in split"),
        # a key for a model the run does not call; routing among replicas the run does not have
        ("base", [*BIG, "--small_api_key", "k"], "--small_api_key is for the small model, which this run"),
        (
            "spec",
            [*BOTH, "--routing", "least_loaded"],
            "--routing chooses among a model's replicas, and this run has none: drop it, or give a model's servers "
            "as a repeated --*_url",
        ),
        ("spec", [*BOTH, "--affinity_bound", "2"], "--affinity_bound chooses among a model's replicas"),
        (
            "spec",
            [*BOTH, "--big_url", NOWHERE, "--routing", "least_loaded", "--affinity_bound", "2"],
            "--affinity_bound bounds affine routing, and this run routes least_loaded: drop one of them",
        ),
        ("spec", [*BOTH, "--affinity_bound", "-1"], "--affinity_bound/--affinity-bound: takes a number of requests"),
        ("spec", [*BOTH, "--affinity_bound", "some"], "takes a number of requests, 0 or more, or none; not 'some'"),
        # checks between steps with a policy that writes a track in one request (issue 33 B3, C3)
        (
            "base",
            [*BIG, "--strategy", "deepconf", "--deepconf_online"],
            "strategy deepconf checks traces between their steps, and policy big writes each trace in one "
            "request: add --stepwise",
        ),
        ("scale", [*BIG, "--probe_every", "64"], "--probe_every probes a track between its steps, and policy big"),
        # DeepConf online's warm-up and spectra's consensus stop
        (
            "base",
            [*BIG, "--stepwise", "--strategy", "deepconf", "--deepconf_online", "--deepconf_traces", "16"],
            "--deepconf_warmup must be at least 1 and under the 16 traces (--deepconf_traces), not 16",
        ),
        ("base", [*BIG, "--strategy", "deepconf", "--deepconf_consensus", "0.9"], "--deepconf_consensus stops online"),
        # a judge's knob when another judge rules (issue 32.1); the answer phase's, without it
        (
            "spec",
            [*BOTH, "--prm_model", "prm", "--prm_url", NOWHERE, "--scorer", "prm", "--score_threshold", "5"],
            "--score_threshold changes nothing here: a PRM judges (--scorer prm), whose bar is --prm_threshold",
        ),
        (
            "spec",
            [*BOTH, "--prm_threshold", "0.5"],
            "--prm_threshold changes nothing here: the big model judges (--scorer judge); add --scorer prm",
        ),
        (
            "spec",
            [*BOTH, "--prm_model", "prm", "--prm_url", NOWHERE, "--scorer", "prm", "--prm_threshold", "1.5"],
            "--prm_threshold must be between 0 and 1, not 1.5",
        ),
        ("spec", [*BOTH, "--scorer", "prm"], "--prm_model"),
        # Lookahead Reasoning's judge model is a role of its own; a verifier's bar under another (issue 33.4)
        ("spec", [*BOTH, "--policy", "lookahead"], "this run needs the judge model: give --judge_model"),
        (
            "spec",
            [*BOTH, "--policy", "lookahead", "--verifier", "exact", "--judge_model", "judge-model"],
            "--judge_model is for the judge model, which this run (lookahead, vote) does not call",
        ),
        (
            "spec",
            [
                *BOTH,
                "--policy",
                "lookahead",
                "--judge_model",
                "j",
                "--judge_url",
                NOWHERE,
                "--embedding_threshold",
                "1",
            ],
            "--embedding_threshold changes nothing here: --verifier judge rules, and it is the bar of --verifier "
            "embedding; add --verifier embedding",
        ),
        (
            "search",
            [*SMALL, *BIG, "--scorer", "judge", "--prm_kind", "token"],
            "--prm_kind changes nothing here: the big model judges (--scorer judge); use --scorer prm",
        ),
        (
            "spec",
            [*BOTH, "--drafts_per_step", "2", "--temperature", "0"],
            "--drafts_per_step 2 at --temperature 0 drafts the same step 2 times: raise --temperature",
        ),
        (
            "spec",
            [*BOTH, "--drafts_per_step", "2", "--pipeline_depth", "1"],
            "--drafts_per_step and --pipeline_depth cannot be combined",
        ),
        ("spec", [*BOTH, "--answer_model", "small"], "--answer_model changes nothing here: the answer phase is off"),
        # the rules that end a loop of steps, where a track has none (issue 32.4)
        ("base", [*BIG, "--max_steps", "5"], "--max_steps changes nothing: policy big writes each track in one"),
        (
            "split",
            [*BOTH, "--random_switch", "--stop_rule", "rsd"],
            "--stop_rule changes nothing: policy random_switch writes one continuous text, not steps",
        ),
        # nor the flags that cut steps, where a continuous text has none
        (
            "split",
            [*BOTH, "--spec_reason", "--max_step_tokens", "256"],
            "--max_step_tokens changes nothing: policy spec_reason writes one continuous text, not steps",
        ),
        (
            "spec",
            [*BOTH, "--policy", "takeover", "--step_delimiter", "\\n"],
            "--step_delimiter changes nothing: policy takeover writes one continuous text, not steps",
        ),
        ("search", [*SEARCH, "--max_steps", "3"], "--max_steps changes nothing: strategy best_of_n runs no step"),
        ("spec", [*BOTH, "--max_steps", "0"], "--max_steps must be at least 1, not 0"),
        # RAST renders no prompt
        ("rast", [*RAST, "--prompt_format", "chat"], "--prompt_format changes nothing with strategy rast"),
        # no abbreviations
        ("spec", [*BOTH, "--score_thr", "5"], "unrecognized arguments: --score_thr 5"),
        ("spectra", ["run", *BOTH, "--strat", "vote"], "unrecognized arguments: --strat vote"),
    ],
)
def test_what_would_change_nothing_or_cannot_work_is_refused(capsys, tmp_path, runner, argv, message):
    assert message in refusal(capsys, tmp_path, runner, *argv)


def test_checks_between_steps_run_with_a_stepwise_single_model_and_deepconf_budgets_are_its_examples():
    online = config_of("base", "--stepwise", "--strategy", "deepconf", "--deepconf_online", "--probe_every", "64")
    assert online.strategy_settings.traces == 256 and online.strategy_settings.deepconf_warmup == 16
    assert config_of("base", "--strategy", "deepconf").strategy_settings.traces == 512


def test_the_flags_a_run_calls_a_model_for_are_taken():
    # the big model is not demanded by a search that judges with the PRM
    assert roles_needed(config_of("spec", "--strategy", "beam_search")) == ["prm", "small"]
    # --answer_phase with --answer_model pulls in that model
    answered = config_of("base", "--model", "small", "--answer_phase", "--answer_model", "big")
    assert set(answered.models) == {"big", "small"}
    assert set(config_of("search", "--scorer", "judge").models) == {"big", "small"}
    assert set(config_of("search").models) == {"prm", "small"}


def test_a_search_scoring_with_a_prm_needs_one(capsys, tmp_path):
    line = refusal(capsys, tmp_path, "search", *SMALL)
    assert "this run needs the prm model: give --prm_model" in line


def test_a_data_file_given_alone_is_the_data_set(capsys, tmp_path):
    data = tmp_path / "problems.jsonl"
    data.write_text('{"id": 0, "problem": "1+1?", "answer": "2"}\n')
    config = config_of("spec", "--data_file", str(data))
    assert (config.data.dataset_name, config.data.data_file) == (str(data), None)
    assert config_of("spec", "--dataset_name", "aime24", "--data_file", str(data)).data.data_file == str(data)
    # without models it is still the data set, which the toy demo models cannot run
    line = refusal(capsys, tmp_path, "spec", "--data_file", str(data))
    assert f"--dataset_name {data} needs real models" in line and "built in" not in line


def test_no_parser_takes_an_abbreviated_flag():
    """Every argparse parser of the product is made with allow_abbrev=False, or is spectra's own
    ArgumentParser (engine.run.flags), whose default it is."""
    lax = []
    for folder in ("engine", "evaluators", "runners", "benchmarks"):
        for path in (REPO_ROOT / folder).rglob("*.py"):
            tree = ast.parse(path.read_text())
            own = any(
                (isinstance(node, ast.ImportFrom) and node.module == "engine.run.flags")
                and "ArgumentParser" in [alias.name for alias in node.names]
                or (isinstance(node, ast.ClassDef) and node.name == "ArgumentParser")
                for node in ast.walk(tree)
            )
            for node in ast.walk(tree):
                if not isinstance(node, ast.Call) or not ast.unparse(node.func).endswith("ArgumentParser"):
                    continue
                keywords = {k.arg: ast.unparse(k.value) for k in node.keywords}
                if keywords.get("allow_abbrev") != "False" and not (own and isinstance(node.func, ast.Name)):
                    lax.append(f"{path.relative_to(REPO_ROOT)}:{node.lineno}")
    assert not lax, lax


def test_recipes_and_evaluators_refuse_abbreviations(capsys, tmp_path):
    from engine.data.recipes import parse_with_recipe
    from engine.run.flags import ArgumentParser
    from evaluators.evaluate import main as evaluate
    from runners.spectra import main as spectra

    recipe = tmp_path / "r.yaml"
    recipe.write_text("n: 4\n")
    parser = ArgumentParser()
    parser.add_argument("--config")
    parser.add_argument("--n", type=int)
    with pytest.raises(SystemExit):
        parse_with_recipe(parser, ["--conf", str(recipe)])
    assert "unrecognized arguments: --conf" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        evaluate([str(tmp_path), "--basel", str(tmp_path)])
    assert exited.value.code == 2 and "unrecognized arguments: --basel" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exited:
        spectra(["methods", "--js"])
    assert exited.value.code == 2 and "unrecognized arguments: --js" in capsys.readouterr().err


def test_a_pair_the_specs_say_cannot_work_is_refused(capsys, tmp_path, monkeypatch):
    # Every shipped policy gives token logprobs; one that gives none must be refused under DeepConf.
    import dataclasses

    from engine.reasoning.policies import POLICIES

    monkeypatch.setitem(POLICIES, "big", dataclasses.replace(POLICIES["big"], gives_token_logprobs=False))
    line = refusal(capsys, tmp_path, "spectra", "run", *BIG, "--strategy", "deepconf", "--policy", "big")
    assert "strategy deepconf needs token logprobs, and policy big gives none: choose a policy that does" in line


@pytest.mark.parametrize(
    ("runner", "argv", "message"),
    [
        (
            "rast",
            [*RAST, "--token_budget", "100"],
            "--token_budget changes nothing: strategy rast runs no step policy and reads only --seed, --top_p",
        ),
        ("search", [*SEARCH, "--answer_phase"], "--answer_phase changes nothing: strategy best_of_n runs no step"),
    ],
)
def test_a_track_flag_a_strategy_without_policy_does_not_read_is_refused(capsys, tmp_path, runner, argv, message):
    assert message in refusal(capsys, tmp_path, runner, *argv)


def test_the_track_flags_a_search_reads_are_accepted():
    config = config_of("search", "--temperature", "0.7", "--top_p", "0.9", "--max_step_tokens", "99", "--seed", "5")
    assert (config.reasoning.temperature, config.reasoning.top_p, config.reasoning.max_step_tokens) == (0.7, 0.9, 99)


def test_routing_flags_reach_the_client_limits_of_a_run_with_replicas():
    replicas = ["--big_url", f"{NOWHERE},http://127.0.0.1:10"]
    assert config_of("spec", *replicas, "--affinity_bound", "none").client.affinity_bound == "none"
    assert config_of("spec", *replicas, "--affinity-bound", "8").client.affinity_bound == 8
    assert config_of("spec", *replicas, "--routing", "least_loaded").client.routing == "least_loaded"
    assert config_of("spec").client.routing == "affine"
