"""The search runner: search-and-learn's defaults, `--approach`, recipes (`--config`) with flags
overriding them, and bad input refused with one line, exit code 2 and nothing written."""

import pytest
import yaml

from engine.reasoning.search.beams import SearchSettings
from engine.run.cli import main
from engine.run.execute import roles_needed
from tests.paths import FIXTURES
from tests.unit.run import runner_commands

NAMES = {"small": "policy-model", "prm": "prm-model", "big": "judge-model"}


def config_of(argv):
    """The config of `runners.search ARGV`, given the models it calls (names as in NAMES)."""
    return runner_commands.config_of("search", *argv, names=NAMES)


def test_search_runner_defaults_are_search_and_learns():
    config = config_of([])
    assert config.strategy == "best_of_n" and config.strategy_settings == SearchSettings()
    assert (config.reasoning.temperature, config.reasoning.top_p) == (0.8, 1.0)
    assert config.reasoning.seed == 0, "search-and-learn's recipes run with seed 0"
    assert config.strategy_settings.prm_split == "reference"
    assert config.reasoning.max_step_tokens == 2048, "search-and-learn's max_tokens per request"
    assert config.prompt_set == "search"
    assert roles_needed(config) == ["prm", "small"], "the PRM scores, the small model writes; no big model"


def test_approach_picks_the_strategy_and_the_judge_needs_the_big_model():
    config = config_of(["--approach", "dvts", "--scorer", "judge", "--beam_width", "2"])
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


RECIPES = sorted((FIXTURES / "search_and_learn_recipes").glob("*/*.yaml"))


def test_every_recipe_of_search_and_learn_runs_as_there():
    assert len(RECIPES) == 12
    for path in RECIPES:
        recipe = yaml.safe_load(path.read_text())
        config = config_of(["--config", str(path)])
        settings = config.strategy_settings
        assert config.strategy == recipe["approach"] == path.stem
        assert (settings.n, config.reasoning.seed) == (recipe["n"], recipe["seed"]) == (4, 0)
        assert settings.filter_duplicates is recipe.get("filter_duplicates", False)
        assert settings.sort_completed is recipe.get("sort_completed", False)
        # num_samples 10: the first 10 problems of MATH-500, search-and-learn's default data set
        assert (config.data.dataset_name, config.data.problem_id) == ("math500", "0-9")
        assert config.model("small").model == recipe.get("model_path", "meta-llama/Llama-3.2-1B-Instruct")
        assert config.model("prm").model == recipe.get("prm_path", "RLHFlow/Llama3.1-8B-PRM-Deepseek-Data")
        assert path.parent.name in config.model("small").model


def test_recipe_data_keys_pick_positions_as_search_and_learns_get_dataset(tmp_path):
    recipe = tmp_path / "r.yaml"
    cases = [
        ("dataset_start: 100\ndataset_end: 200\nnum_samples: 10\n", "100-109"),
        ("dataset_start: 100\ndataset_end: 105\nnum_samples: 10\n", "100-104"),
        ("dataset_start: 100\nnum_samples: 3\n", "0-2"),  # a start alone is ignored there too
        ("dataset_name: HuggingFaceH4/MATH-500\ndataset_split: test\nnum_samples: 2\n", "0-1"),
    ]
    for text, positions in cases:
        recipe.write_text(text)
        config = config_of(["--config", str(recipe)])
        assert (config.data.dataset_name, config.data.problem_id) == ("math500", positions)
    # the command line still wins over the recipe and its defaults
    config = config_of(
        ["--config", str(recipe), "--problem_id", "7", "--dataset_name", "aime24", "--small_model", "policy-model"]
    )
    assert (config.data.dataset_name, config.data.problem_id) == ("aime24", "7")
    assert config.model("small").model == "policy-model"


def run_search(capsys, tmp_path, *flags):
    out = tmp_path / "out"
    argv = runner_commands.with_models("search", ["--output_dir", str(out), "--no_progress", *flags], NAMES)
    code = main(["run", "--runner", "search", *argv])
    errors = [line for line in capsys.readouterr().err.splitlines() if "error" in line]
    assert not out.exists(), "a refused run must write nothing"
    return code, errors


@pytest.mark.parametrize(
    ("recipe", "flags", "message"),
    [
        ("n: 6\napproach: dvts\n", [], "--n (6) must be a multiple of --beam_width (4)"),
        ("approach: greedy\n", [], "key 'approach' must be one of best_of_n, beam_search, dvts"),
        ("samples: 10\n", [], "unknown key 'samples'"),
        ("num_samples: 10\ncustom_chat_template: '{{ x }}'\n", [], "custom_chat_template: spectra renders prompts"),
        ("num_samples: 10\ndataset_split: train\n", [], "dataset_split 'train': spectra reads a preset's own split"),
        ("system_prompt: Be brief.\n", [], "system_prompt differs from search-and-learn's"),
        ("num_samples: -1\n", [], "num_samples must be a whole number of 0 or more, not -1"),
        ("n: many\n", [], "key 'n': 'many' is not a valid int"),
        ("n: 2.5\n", [], "key 'n': 2.5 is not a valid int"),
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

    config = config_of(["--prm_server_args=--max-model-len 8192 --seed 3"])
    assert _server_args(config, "prm") == ("--no-enable-prefix-caching", "--max-model-len", "8192", "--seed", "3")
    assert _server_args(config, "small") == ()


def test_a_prm_read_by_generating_a_token_keeps_the_prefix_cache_it_is_read_for():
    from engine.run.execute import _server_args

    config = config_of(["--prm_kind", "tag_token", "--prm_server_args=--seed 3"])
    assert _server_args(config, "prm") == ("--seed", "3")
