"""`spectra methods` lists every runner plan, policy and strategy with its paper, models, flags and
defaults, read from the tables; `available_methods` answers what a set of models can run."""

import dataclasses
import json

import pytest

from engine.reasoning.policies import POLICIES
from engine.reasoning.strategies import STRATEGIES
from engine.run.methods import available_methods, every_method
from engine.run.runner_plans import PLANS
from runners.spectra import main


def spectra_methods(capsys, *argv):
    assert main(["methods", *argv]) == 0
    return capsys.readouterr().out


def test_every_runner_policy_and_strategy_is_listed_with_its_paper_models_and_flags(capsys):
    text = spectra_methods(capsys)
    for kind, table in (("runner", {p.name: p for p in PLANS}), ("policy", POLICIES), ("strategy", STRATEGIES)):
        for name, spec in table.items():
            assert f"  {name}: {spec.description}\n" in text, (kind, name)
    for spec in (*POLICIES.values(), *STRATEGIES.values()):
        for field in dataclasses.fields(spec.settings):
            assert f"    --{field.name} (default {field.default!r})" in text
    assert "  search: search-and-learn" in text and "    models: prm, small\n" in text
    assert "tracks=3, aggregation='speclrm', use_role_prompts=True" in text  # spec_scale's defaults


def test_the_json_listing_holds_the_same_methods(capsys):
    listed = json.loads(spectra_methods(capsys, "--json"))
    assert [(m["name"], m["kind"]) for m in listed] == [(m.name, m.kind) for m in every_method()]
    deepconf = next(m for m in listed if m["name"] == "deepconf")
    assert ["--deepconf_keep", 10.0, deepconf["flags"][1][2]] in deepconf["flags"]


def names(methods):
    return {m.name for m in methods}


def test_what_a_set_of_models_can_run():
    both = names(available_methods(["big", "small"]))
    assert {"spec", "base", "scale", "spec_scale", "spec+vote", "big+deepconf"} <= both
    assert not {"search", "rast", "split", "best_of_n", "lookahead+vote"} & both
    # Lookahead Reasoning's default verifier is a judge model of its own.
    assert "lookahead+vote" in names(available_methods(["big", "small", "judge"]))
    small_prm = names(available_methods(["small", "prm"]))
    assert {"search", "best_of_n", "beam_search", "dvts", "small+vote"} <= small_prm
    assert not {"spec", "spec+vote", "base"} & small_prm
    assert "rast" in names(available_methods(["base", "positive", "negative"]))
    assert names(available_methods([])) == set()


@pytest.mark.parametrize(
    ("models", "listed", "absent"), [("big,small", "spec+vote", "search"), ("small", "small+vote", "spec")]
)
def test_spectra_methods_models_lists_what_those_models_can_run(capsys, models, listed, absent):
    text = spectra_methods(capsys, "--models", models)
    assert f"  {listed}: " in text and f"  {absent}: " not in text


def test_spectra_methods_refuses_an_empty_model_list(capsys):
    assert main(["methods", "--models", ","]) == 2
    assert "--models takes model roles separated by commas" in capsys.readouterr().err
