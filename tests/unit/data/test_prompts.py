"""Prompt sets: the shipped sets, rendering, and the one-line errors of broken sets."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from engine.data.problems import Problem
from engine.data.prompts import (
    Templates,
    available_prompt_sets,
    load_prompt_set,
)
from engine.errors import UsageError
from engine.reasoning.track import track_messages
from engine.serving.chat import Message
from tests.fixtures import seed_prompts as seed

CLEAN_PROBLEM = (
    "Solve the following math problem efficiently and clearly. Please reason step by step, "
    "separate logical reasoning steps with two newline characters (\\n\\n), and put your final "
    "answer within \\boxed{}.\nProblem: "
)


def write_set(folder: Path, **files: str) -> Path:
    """A prompt set in `folder`: each keyword is a file stem (templates, roles, methods) -> YAML text."""
    folder.mkdir(parents=True, exist_ok=True)
    for stem, text in files.items():
        (folder / f"{stem}.yaml").write_text(text, encoding="utf-8")
    return folder


def load_error(folder: Path) -> str:
    with pytest.raises(UsageError) as caught:
        load_prompt_set(str(folder))
    message = str(caught.value)
    assert "\n" not in message, "errors are one line"
    return message


def test_shipped_sets_all_load():
    names = available_prompt_sets()
    assert {"default", "clean", "roles", "methods"} <= set(names)
    for name in names:
        prompt_set = load_prompt_set(name)
        assert prompt_set.name == name
        assert prompt_set.path.is_dir()
        assert isinstance(prompt_set.templates, Templates)


def test_shipped_roles_and_methods_have_the_promised_sizes():
    roles = load_prompt_set("roles").require_roles()
    assert 4 <= len(roles) <= 6
    assert all(len(text.split()) >= 20 for text in roles.values()), "each role is a few sentences"
    for set_name in ("methods", "default"):
        methods = load_prompt_set(set_name).require_methods()
        assert len(methods) == 13, "SpecLRM's list: A-L and M for unknown"
        assert [m.code for m in methods.values()] == list("ABCDEFGHIJKLM")
        *named, unknown = methods.values()
        # SpecLRM's tip for its unknown choice M is the literal "None"; the other library sends none
        assert unknown.instruction == {"default": "None", "methods": ""}[set_name] and "nknown" in unknown.name
        for name, method in methods.items():
            assert method.name == name
            assert "\n" not in method.description
        assert all(len(m.instruction) > 40 for m in named)
    # SpecLRM's three roles: natural method, clever shortcut, systematic analysis
    assert list(load_prompt_set("default").require_roles()) == [
        "natural_method",
        "clever_shortcut",
        "systematic_analysis",
    ]


def test_default_texts_are_the_seeds():
    prompt_set = load_prompt_set("default")
    assert prompt_set.render_problem("What is 1+1?") == seed.first_user_message("What is 1+1?")
    choices = ["one", "two", "three", "four"]
    assert prompt_set.render_problem("Which?", choices) == seed.gpqa_user_message("Which?", choices)
    assert prompt_set.render_score("p", "s") == seed.SCORE_REQUEST
    assert prompt_set.render_score_prefix() == seed.SCORE_PREFIX
    assert prompt_set.render_select_methods_prefix(3) == seed.SELECT_PREFIX.format(method_num=3)
    # the steps before it already end with the step delimiter, so no blank line of its own
    assert prompt_set.render_answer() == (
        "Considering the limited time, I have to give the solution based on the thinking directly now.\n</think>\n\n"
    )
    assert prompt_set.templates.rewrite == ""
    assert prompt_set.render_rewrite("a draft") == ""


def test_render_keeps_literal_braces_and_problem_braces():
    prompt_set = load_prompt_set("default")
    text = prompt_set.render_problem("Find {x} such that $x^{2}=4$.")
    assert "\\boxed{}" in text and "{{" not in text
    assert "Problem: Find {x} such that $x^{2}=4$.\n" in text


def test_render_multiple_choice():
    text = load_prompt_set("clean").render_problem("Which?", ["one", "two", "three", "four"])
    assert "\\boxed{X}" in text and "\\boxed{A}" in text
    assert text.endswith("Which?\nChoices:\n(A) one\n(B) two\n(C) three\n(D) four")
    assert load_prompt_set("clean").render_problem("What is 1+1?") == CLEAN_PROBLEM + "What is 1+1?"
    with pytest.raises(UsageError, match="2 to 26 choices"):
        load_prompt_set("default").render_problem("Which?", ["only"])


def test_render_select_methods_lists_every_method():
    prompt_set = load_prompt_set("methods")
    text = prompt_set.render_select_methods("Count the primes below 30.", 3)
    for method in prompt_set.methods.values():
        assert f"\n{method.code}. {method.description}\n" in text
    assert "Count the primes below 30." in text
    assert "(A–M)" in text and "select option M multiple times" in text
    assert "**3** strategies (by their codes, e.g. B,E,F)" in text
    assert "{" not in text
    assert "e.g. B,E)" in prompt_set.render_select_methods("p", 2)
    assert "e.g. B,E,F,A,C)" in prompt_set.render_select_methods("p", 5)


def test_sets_without_roles_or_methods_say_which_set_to_use():
    prompt_set = load_prompt_set("clean")
    with pytest.raises(UsageError, match="prompt set clean has no roles.yaml; use --prompt_set default or add one"):
        prompt_set.require_roles()
    with pytest.raises(UsageError, match="prompt set clean has no methods.yaml; use --prompt_set default"):
        prompt_set.require_methods()
    with pytest.raises(UsageError, match="no methods.yaml"):
        prompt_set.render_select_methods("p", 2)


def test_roles_only_set_takes_default_templates(tmp_path):
    folder = write_set(tmp_path / "mine", roles="a: Think hard.\nb: |-\n  Think twice.\n")
    prompt_set = load_prompt_set(str(folder))
    assert prompt_set.name == "mine"
    assert prompt_set.roles == {"a": "Think hard.", "b": "Think twice."}
    assert prompt_set.templates == load_prompt_set("default").templates


def test_partial_templates_take_the_rest_from_default(tmp_path):
    folder = write_set(
        tmp_path / "partial",
        templates='score: "Rate {step} for {problem}."\nrewrite: "Rejected: {draft}. Write a better step."\n',
    )
    prompt_set = load_prompt_set(str(folder))
    default = dataclasses.asdict(load_prompt_set("default").templates)
    mine = dataclasses.asdict(prompt_set.templates)
    assert {k for k in default if default[k] != mine[k]} == {"score", "rewrite"}
    assert prompt_set.render_score("P", "S") == "Rate S for P."
    assert prompt_set.render_rewrite("bad") == "Rejected: bad. Write a better step."


def test_relative_path_and_bare_name_from_another_directory(tmp_path, monkeypatch):
    write_set(tmp_path / "sets" / "local", roles="x: Be brief.\n")
    monkeypatch.chdir(tmp_path)
    assert load_prompt_set("sets/local").roles == {"x": "Be brief."}
    # a bare name is looked up in the installed package, wherever the run starts
    assert load_prompt_set("roles").path.parent.name == "prompts"


def test_unknown_set_lists_the_available_ones():
    with pytest.raises(UsageError) as caught:
        load_prompt_set("nosuchset")
    message = str(caught.value)
    assert "unknown prompt set 'nosuchset'" in message
    assert "default, lookahead, methods, rast, roles" in message


@pytest.mark.parametrize(
    ("files", "expected"),
    [
        ({"templates": "problem: 'Solve {question}'\n"}, "key 'problem': unknown placeholder {question}"),
        ({"templates": "problem: 'Put it in \\boxed{} {problem}'\n"}, "literal braces are written doubled"),
        ({"templates": "problem: 'Answer as \\boxed{X}: {problem}'\n"}, "unknown placeholder {X}"),
        ({"templates": "problem: 'Oops {problem'\n"}, "key 'problem'"),
        ({"templates": "problem: 'No placeholder here'\n"}, "key 'problem' must contain the placeholder {problem}"),
        ({"templates": "problem: '{problem!r}'\n"}, "takes no format spec"),
        ({"templates": "problem: ''\n"}, "key 'problem' must not be empty"),
        ({"templates": "problem: 3\n"}, "key 'problem' must be text, got int"),
        ({"templates": "scroe: 'x'\n"}, "unknown key 'scroe'; known keys: problem,"),
        ({"templates": "rewrite: 'Do better.'\n"}, "key 'rewrite' must contain the placeholder {draft}"),
        ({"templates": "score_prefix: 'Score {step}: '\n"}, "unknown placeholder {step} (allowed: none)"),
        ({"templates": "- problem\n- score\n"}, "expected a mapping of name: value, got list"),
        ({"templates": "problem: 'a\n  b: c\n"}, "not valid YAML"),
        ({"roles": ""}, "roles.yaml: the file is empty"),
        ({"roles": "[]\n"}, "expected a mapping"),
        ({"roles": "{}\n"}, "roles.yaml: the mapping is empty"),
        ({"roles": "a: ''\n"}, "role 'a' needs a non-empty instruction"),
        ({"roles": "a: [x]\n"}, "role 'a' needs a non-empty instruction"),
        ({"roles": "1: Think.\n"}, "key 1 must be non-empty text"),
        ({"methods": "m: just text\n"}, "method 'm' must be a mapping with description and instruction"),
        ({"methods": "m:\n  description: d\n"}, "method 'm': key 'instruction' must be text"),
        ({"methods": "m:\n  description: d\n  instruction: i\n  level: 3\n"}, "method 'm': unknown key 'level'"),
        ({"role": "a: b\n"}, "role.yaml: unknown file in a prompt set"),
    ],
)
def test_broken_sets_fail_with_one_line_naming_file_and_key(tmp_path, files, expected):
    folder = write_set(tmp_path / "bad", **files)
    message = load_error(folder)
    assert expected in message
    assert str(folder.resolve()) in message


def test_yaml_syntax_error_names_the_line(tmp_path):
    folder = write_set(tmp_path / "bad", roles="a: fine\nb: [unclosed\nc: x\n")
    assert "roles.yaml: not valid YAML" in load_error(folder)
    assert "line" in load_error(folder)


def test_folder_errors(tmp_path):
    assert "does not exist" in load_error(tmp_path / "absent")
    (tmp_path / "file.yaml").write_text("a: b\n")
    assert "is not a folder" in load_error(tmp_path / "file.yaml")
    (tmp_path / "empty").mkdir()
    assert "holds none of templates.yaml, roles.yaml, methods.yaml" in load_error(tmp_path / "empty")


def test_prompt_set_is_frozen():
    prompt_set = load_prompt_set("default")
    with pytest.raises(dataclasses.FrozenInstanceError):
        prompt_set.name = "other"  # type: ignore[misc]


def test_search_set_opens_with_search_and_learns_system_turn_and_the_bare_problem():
    problem = Problem(id="1", problem="What is 1 + 1?", answer="2", choices=None)
    system, user = track_messages(problem, load_prompt_set("search"), None)
    assert system.role == "system" and system.content.startswith("Solve the following math problem efficiently")
    assert "$\\boxed{answer}$. I hope it is correct." in system.content
    assert (user.role, user.content) == ("user", "What is 1 + 1?")
    # The default set has an empty system template: no system turn at all.
    assert [m.role for m in track_messages(problem, load_prompt_set("default"), None)] == ["user"]


def test_a_set_passing_problems_through_sends_the_problem_alone_and_keeps_its_other_texts():
    problem = Problem(id="1", problem="What is 1 + 1?", answer=None)
    search = load_prompt_set("search")  # a system turn, the bare problem
    assert [m.role for m in track_messages(problem, search, None)] == ["system", "user"]
    assert track_messages(problem, search.passing_problems_through(), None) == (Message("user", "What is 1 + 1?"),)
    default = load_prompt_set("default")  # no system turn, the problem in its instruction
    through = default.passing_problems_through()
    assert through.render_problem("What is 1 + 1?") == "What is 1 + 1?" != default.render_problem("What is 1 + 1?")
    assert through.render_problem("What is 1 + 1?", method="Tip.") == "Tip.\n\nWhat is 1 + 1?"
    bare = {"problem": "", "problem_method": ""}
    assert dataclasses.replace(through.templates, **bare) == dataclasses.replace(default.templates, **bare)


def test_the_lookahead_set_sends_the_problem_message_of_lookahead_reasoning_s_code():
    # hao-ai-lab/LookaheadReasoning src/lr.py never formats its string: "\\boxed{{}}" reaches the model doubled.
    question = "What is 6 * 7?"
    expected = question + "\nPlease reason step by step, and put your final answer within \\boxed{{}}.\n"
    assert load_prompt_set("lookahead").render_problem(question) == expected
