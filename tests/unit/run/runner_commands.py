"""Runner commands for tests: ARGV plus a served model for each model the command calls (a run
refuses a model it does not call), and the RunConfig such a command builds."""

from engine.errors import UsageError
from engine.run.config import RunConfig
from engine.run.configure import config_of_command, roles_of_command
from engine.run.flags import parse_run_flags

FAKE = "fake-model"


def with_models(runner: str, argv: list[str], names: dict[str, str] | None = None) -> list[str]:
    """`argv` with `--ROLE_model NAME` (`names`, default fake-model) for each model role that
    `python -m runners.<runner> ARGV` calls and ARGV does not name."""
    try:
        plan, flags = parse_run_flags(runner, argv)
        roles = roles_of_command(plan, flags)
    except UsageError:  # the command itself is refused: it needs no models to say so
        return list(argv)
    given = [f"--{role}_model={(names or {}).get(role, FAKE)}" for role in roles if not flags.get(f"{role}_model")]
    return [*given, *argv]


def config_of(runner: str, *argv: str, names: dict[str, str] | None = None) -> RunConfig:
    """The RunConfig of `python -m runners.<runner> ARGV` with the models it calls."""
    return config_of_command(runner, with_models(runner, list(argv), names))
