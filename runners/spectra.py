"""The `spectra` command: `spectra eval ...` is the evaluators' command line, `spectra api ...` the
OpenAI-compatible server (`engine.api`), every other command (run, methods, serve, make-tiny-models,
make-toy-models) the engine's; a finished `spectra run` gets its trace viewer (`evaluators.view`)
written into its folder."""

import sys
from functools import partial

from engine.api.launch import main as api
from engine.run.cli import main as engine_main
from evaluators.evaluate import main as evaluate
from evaluators.view import write_for_run


def main(argv: list[str] | None = None) -> int:
    eval_command = partial(evaluate, prog="spectra eval")
    return engine_main(
        argv,
        passthrough={
            "eval": ("evaluate run folders (see spectra eval --help)", eval_command),
            "api": ("serve the methods through an OpenAI-compatible HTTP API (see spectra api --help)", api),
        },
        after_run=write_for_run,
    )


if __name__ == "__main__":
    sys.exit(main())
