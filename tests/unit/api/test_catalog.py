"""The methods a server offers and the config each request runs, built by the command line's code."""

from pathlib import Path

import pytest

from engine.api.catalog import Catalog, budget_flag, plan_of, sends_raw_text
from engine.api.contract import ChatRequest, RequestError
from engine.run.methods import available_methods, methods_command
from engine.run.runner_plans import RUNNERS
from engine.serving.chat import Message
from tests.unit.api.conftest import api_flags

BIG_SMALL = ["--big_model", "b", "--big_url", "http://b", "--small_model", "s", "--small_url", "http://s"]
EVERY_ROLE = [*BIG_SMALL, *(f"--{r}_{x}" for r in ("prm", "base", "positive", "negative") for x in ("model",))]


def catalog(*argv: str, roles=("big", "small"), output_root: Path | None = None) -> Catalog:
    _, flags = api_flags(*BIG_SMALL, *argv)
    return Catalog(flags, roles, output_root)


def every_role_catalog(*argv: str) -> Catalog:
    models = [
        a for r in ("prm", "base", "positive", "negative") for a in (f"--{r}_model", r, f"--{r}_url", f"http://{r}")
    ]
    _, flags = api_flags(*BIG_SMALL, *models, *argv)
    return Catalog(flags, ["big", "small", "prm", "base", "positive", "negative"], None)


def resolve(cat: Catalog, model="spec", **fields):
    return cat.resolve(ChatRequest(model=model, problem="What is 2 + 2?", **fields))


def refusal(cat: Catalog, model="spec", **fields) -> RequestError:
    with pytest.raises(RequestError) as caught:
        resolve(cat, model, **fields)
    assert "\n" not in caught.value.message
    return caught.value


def test_the_methods_offered_are_those_spectra_methods_lists_for_the_models_given():
    cat = catalog()
    listed = [m.name for m in available_methods(["big", "small"])]
    assert list(cat.methods) == listed
    assert {"spec", "base", "spec_scale", "big+vote", "spec+deepconf"} <= set(cat.methods)
    # the same function as `spectra methods --models big,small`
    assert all(f"  {name}: " in methods_command(False, "big,small") for name in listed)


def test_a_runner_keeps_its_name_over_its_strategys_pair():
    cat = every_role_catalog()
    assert cat.methods["rast"].info.kind == "runner" and cat.methods["rast"].plan is RUNNERS["rast"]
    assert {"search", "best_of_n", "beam_search", "dvts"} <= set(cat.methods)


def test_a_pair_runs_its_policy_and_strategy_and_names_itself_in_the_records():
    resolved = resolve(catalog(), "big+vote")
    config = resolved.config
    assert (config.runner, config.policy, config.strategy) == ("big+vote", "big", "vote")
    assert sorted(config.models) == ["big"] and config.data.dataset_name == "api"
    plan = plan_of(next(m for m in available_methods(["prm", "small"]) if m.name == "dvts"))
    assert (plan.strategy, plan.policies_shown) == ("dvts", ())


def test_the_body_and_the_spectra_object_set_the_run_flags():
    config = resolve(
        catalog(), flags={"temperature": 0.2, "seed": 3}, max_tokens=300, overrides={"score_threshold": 5}
    ).config
    assert (config.reasoning.temperature, config.reasoning.seed, config.reasoning.token_budget) == (0.2, 3, 300)
    assert config.policy_settings.score_threshold == 5
    assert [budget_flag(s) for s in ("vote", "best_of_n", "rast")] == ["token_budget", "max_step_tokens", "max_tokens"]
    search = every_role_catalog().resolve(ChatRequest(model="beam_search", problem="p", max_tokens=99)).config
    assert search.reasoning.max_step_tokens == 99


def test_the_servers_method_flags_are_every_methods_defaults_where_they_apply():
    cat = catalog("--tracks", "3", "--score_threshold", "4")
    assert resolve(cat, "spec_scale").config.strategy_settings.tracks == 3
    assert resolve(cat, "spec").config.policy_settings.score_threshold == 4
    # --score_threshold is spec's: the single-model methods do not build with it, and are not offered
    assert "big+vote" not in cat.methods and "--score_threshold belongs to policy spec" in cat.left_out["big+vote"]
    error = refusal(cat, "big+vote")
    assert error.status == 404 and "--score_threshold belongs to policy spec" in error.message


@pytest.mark.parametrize(
    "overrides, says",
    [
        ({"tracks": "x"}, "spectra: argument --tracks: invalid int value: 'x'"),
        ({"tracks": 2.5}, "spectra: argument --tracks: invalid int value: '2.5'"),
        ({"tracks": True}, "spectra: argument --tracks: invalid int value: 'True'"),
        ({"aggregation": "loudest"}, "spectra: argument --aggregation: invalid choice: 'loudest'"),
        ({"early_stop": "yes"}, "spectra.early_stop is a switch: give true or false, not 'yes'"),
        ({"deepconf_window": 64}, "--deepconf_window belongs to strategy deepconf, and this run's strategy is vote"),
        ({"tracks": 0}, "--tracks must be at least 1, not 0"),
        ({"strategy": "dvts"}, "spectra.strategy: the request's model picks the method"),
        ({"big_url": "http://x"}, "spectra.big_url is the server's flag, not a request's"),
        ({"max_problems_in_flight": 2}, "spectra.max_problems_in_flight is the server's flag"),
        ({"tracks_please": 2}, "spectra.tracks_please: no such flag"),
        ({"prompt_set": "nowhere"}, "nowhere"),
    ],
)
def test_a_refused_override_answers_the_command_lines_line(overrides, says):
    error = refusal(catalog(), overrides=overrides)
    assert error.status == 400 and says in error.message


def test_a_body_field_a_method_would_not_read_is_refused_naming_the_field():
    cat = every_role_catalog()
    error = refusal(cat, "rast", flags={"temperature": 0.5})
    assert error.message.startswith("temperature (--temperature): --temperature changes nothing: strategy rast")
    refusal_of_max = refusal(catalog(), max_tokens=100, overrides={"token_budget": 50})
    assert "max_tokens sets --token_budget for spec" in refusal_of_max.message


def test_an_unknown_model_is_a_404_naming_where_the_methods_are_listed():
    error = refusal(catalog(), "o1")
    assert (error.status, error.param) == (404, "model") and "GET /v1/models" in error.message


def test_a_method_calling_a_model_the_server_lacks_is_refused():
    # --answer_phase with --answer_model small makes big+vote call the small model too
    cat = catalog(roles=("big",))
    error = refusal(cat, "big+vote", overrides={"answer_phase": True, "answer_model": "small"})
    assert "calls the small model, which this server does not serve" in error.message


def test_the_prompt_sets_problem_template_wraps_the_problem_only_when_a_prompt_set_is_given():
    cat = catalog()
    plain, wrapped = resolve(cat), resolve(cat, overrides={"prompt_set": "default"})
    assert not plain.config.problem_template and wrapped.config.problem_template
    assert plain.prompts.render_problem("p") == "p" and wrapped.prompts.render_problem("p") != "p"
    assert plain.digest != wrapped.digest
    assert resolve(catalog("--prompt_set", "clean")).config.problem_template  # the server's flag counts


def test_a_raw_text_method_takes_one_user_message():
    cat = every_role_catalog()
    context = (Message("system", "Be brief."),)
    error = refusal(cat, "rast", context=context)
    assert "rast sends its seed's raw text" in error.message and error.param == "messages"
    assert resolve(cat, "rast").config.strategy == "rast"
    assert resolve(cat, "spec", context=context).config.strategy == "vote"  # a chat method takes the context
    # SpecLRM's presets send raw text by default: through the API they take the chat template, one turn.
    assert sends_raw_text(RUNNERS["scale"], resolve(cat, "scale").config)
    assert not sends_raw_text(RUNNERS["spec"], resolve(cat, "spec").config)
    assert resolve(cat, "scale").config.prompt_format == "chat"
    assert "scale sends its seed's raw text" in refusal(cat, "scale", context=context).message


def test_each_method_and_settings_has_its_own_record_folder(tmp_path):
    cat = catalog(output_root=tmp_path)
    first, again, other = resolve(cat), resolve(cat), resolve(cat, flags={"seed": 1})
    assert first is again  # built once for the same method and flags
    assert first.config.output_dir == str(tmp_path / f"spec-{first.digest}") != other.config.output_dir
    assert resolve(catalog(), "spec").config.output_dir == ""
