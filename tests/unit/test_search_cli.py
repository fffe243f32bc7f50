"""The search runner: search-and-learn's defaults, `--approach`, recipes (`--config`) with flags
overriding them, and bad input refused with one line, exit code 2 and nothing written."""

import pytest

from engine.data.recipes import parse_with_recipe
from engine.reasoning.beams import SearchSettings
from engine.run.cli import build_config, main
from engine.run.execute import roles_needed
from engine.run.flags import ArgumentParser, add_run_arguments

MODELS = ["--small_model", "policy-model", "--prm_model", "prm-model", "--big_model", "judge-model"]


def config_of(argv, tmp_path=None):
    parser = ArgumentParser(prog="test")
    add_run_arguments(parser)
    return build_config("search", parse_with_recipe(parser, argv))


def test_search_runner_defaults_are_search_and_learns():
    config = config_of(MODELS)
    assert config.strategy == "best_of_n" and config.strategy_settings == SearchSettings()
    assert (config.reasoning.temperature, config.reasoning.top_p) == (0.8, 1.0)
    assert config.reasoning.max_step_tokens == 2048, "search-and-learn's max_tokens per request"
    assert config.prompt_set == "search"
    assert roles_needed(config) == ["prm", "small"], "the PRM scores, the small model writes; no big model"


def test_approach_picks_the_strategy_and_the_judge_needs_the_big_model():
    config = config_of([*MODELS, "--approach", "dvts", "--scorer", "judge", "--beam_width", "2"])
    assert config.strategy == "dvts" and config.strategy_settings.beam_width == 2
    assert roles_needed(config) == ["big", "small"]


def test_a_recipe_sets_flags_and_the_command_line_overrides_it(tmp_path):
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        "approach: beam_search\nn: 8\nbeam_width: 2\nnum_iterations: 10\nlookahead: 1\nseed: 0\n"
        "model_path: policy-model\nprm_path: prm-model\nsearch_batch_size: 1\nsort_completed: true\n"
        "temperature: 0.7\nmax_tokens: 300\n"
    )
    config = config_of(["--config", str(recipe), "--n", "16"])
    settings = config.strategy_settings
    assert config.strategy == "beam_search"
    assert (settings.n, settings.beam_width, settings.num_iterations, settings.lookahead) == (16, 2, 10, 1)
    assert settings.sort_completed is True
    assert (config.reasoning.seed, config.reasoning.temperature, config.reasoning.max_step_tokens) == (0, 0.7, 300)
    assert (config.model("small").model, config.model("prm").model) == ("policy-model", "prm-model")


def run_search(capsys, tmp_path, *flags):
    out = tmp_path / "out"
    code = main(["run", "--runner", "search", "--output_dir", str(out), "--no_progress", *MODELS, *flags])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert not out.exists(), "a refused run must write nothing"
    return code, errors


@pytest.mark.parametrize(
    ("recipe", "flags", "message"),
    [
        ("n: 6\napproach: dvts\n", [], "--n (6) must be a multiple of --beam_width (4)"),
        ("approach: greedy\n", [], "key 'approach' must be one of best_of_n, beam_search, dvts"),
        ("num_samples: 10\n", [], "unknown key 'num_samples'"),
        ("n: many\n", [], "key 'n': 'many' is not a valid int"),
        ("- n\n", [], "a recipe is a mapping"),
        (None, ["--lookahead", "-1"], "--lookahead must be at least 0, not -1"),
        (None, ["--approach", "dvts", "--n", "6"], "--n (6) must be a multiple of --beam_width (4)"),
    ],
)
def test_bad_recipes_and_settings_give_one_line_and_exit_2(capsys, tmp_path, recipe, flags, message):
    if recipe is not None:
        (tmp_path / "r.yaml").write_text(recipe)
        flags = ["--config", str(tmp_path / "r.yaml"), *flags]
    code, errors = run_search(capsys, tmp_path, *flags)
    assert code == 2
    assert len(errors) == 1 and message in errors[0], errors


def test_a_prm_server_spectra_starts_caches_no_prefixes_and_takes_the_users_flags_after():
    from engine.run.execute import _server_args

    config = config_of([*MODELS, "--prm_server_args=--max-model-len 8192 --seed 3"])
    assert _server_args(config, "prm") == ("--no-enable-prefix-caching", "--max-model-len", "8192", "--seed", "3")
    assert _server_args(config, "small") == ()
