"""The `spectra` command: `spectra eval ...` is the evaluators' command line, every other
command (run, serve, make-tiny-models, make-toy-models) the engine's."""

import sys
from functools import partial

from engine.run.cli import main as engine_main
from evaluators.evaluate import main as evaluate


def main(argv: list[str] | None = None) -> int:
    eval_command = partial(evaluate, prog="spectra eval")
    return engine_main(argv, passthrough={"eval": ("evaluate run folders (see spectra eval --help)", eval_command)})


if __name__ == "__main__":
    sys.exit(main())
