"""The commands README.md shows (`python -m runners.*`, `spectra run`) still parse as they are, and
those that name their models build their config (one that elides a model with `...` may only lack
that model): the seeds' commands keep working."""

import re
import shlex

import pytest

from engine.errors import UsageError
from engine.run.configure import build_config
from engine.run.flags import parse_run_flags
from tests.paths import FIXTURES, REPO_ROOT

# What a shell would put in place of the job arrays' variables.
SHELL = {'"${SLURM_ARRAY_TASK_ID}/8"': "1/8", "$((JOB_COMPLETION_INDEX + 1))": "1"}
RECIPE = str(FIXTURES / "search_and_learn_recipes" / "Llama-3.2-1B-Instruct" / "best_of_n.yaml")


def readme_commands() -> list[str]:
    """Each command of the README's code blocks and inline code that runs a runner or `spectra
    run`, its continuation lines joined, comments dropped."""
    text = REPO_ROOT.joinpath("README.md").read_text()
    found = []
    for language, block in re.findall(r"```(\w*)\n(.*?)```", text, flags=re.DOTALL):
        lines = block.replace("\\\n", " ").splitlines()
        for i, line in enumerate(lines):
            start = re.search(r"(python -m runners\.\w+|spectra run)(\s|$)", line)
            if start is None or line.lstrip().startswith("#"):
                continue
            command = line[start.start() :]
            # a YAML folded scalar goes on in the lines indented as deep as its first
            depth = len(line) - len(line.lstrip())
            for more in lines[i + 1 :] if language == "yaml" else []:
                if not more.strip() or len(more) - len(more.lstrip()) != depth or ":" in more.split()[0]:
                    break
                command += " " + more.strip()
            found.append(command.split(" #")[0].split(" &&")[0].strip())
    found += re.findall(r"`((?:python -m runners\.\w+|spectra run)(?: [^`]*)?)`", text)
    return found


COMMANDS = readme_commands()


def split_command(command: str) -> tuple[str, list[str], bool]:
    for variable, value in SHELL.items():
        command = command.replace(variable, value)
    words = shlex.split(command.replace("recipe.yaml", RECIPE))
    elided = "..." in words
    words = [w for w in words if w != "..."]
    if words[:2] == ["spectra", "run"]:
        return "spectra", words[2:], elided
    return words[2].removeprefix("runners."), words[3:], elided


def test_the_readme_shows_every_runner():
    shown = {split_command(c)[0] for c in COMMANDS}
    assert shown >= {"spec", "base", "scale", "spec_scale", "spec_scale_methods", "split", "search", "rast", "spectra"}


def parsed(runner: str, argv: list[str]):
    if runner == "spectra":
        return parse_run_flags("spec", argv, choose_runner=True)
    return parse_run_flags(runner, argv)


@pytest.mark.parametrize("command", COMMANDS)
def test_a_readme_command_parses_and_a_whole_one_builds_its_config(command):
    runner, argv, elided = split_command(command)
    if "--help" in argv:
        with pytest.raises(SystemExit) as exited:
            parsed(runner, argv)
        assert exited.value.code == 0
        return
    plan, flags = parsed(runner, argv)
    demo = not any(value for name, value in flags.items() if name.endswith("_model") or name == "model_name")
    if demo:
        return  # the toy demo's config is checked with its models in test_runner_plans.py
    try:
        assert build_config(plan, flags).runner == plan.name
    except UsageError as refused:
        assert elided and str(refused).startswith("this run needs the "), refused
