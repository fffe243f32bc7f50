"""The one exception hierarchy of spectra, and the exit codes of its commands.

The command line turns a `SpectraError` into one line on stderr and its `exit_code`;
anything else is a bug and keeps its traceback.
"""

# A run that finished with problems whose records hold failures (engine.run.execute.FailureReport):
# not 1, which Python gives an uncaught error, nor 2, bad input, so a script or a job array can
# tell "redo it" (re-running the same command redoes the failed problems) from "fix the command".
PROBLEMS_FAILED_EXIT = 3

EXIT_CODES_HELP = (
    "exit codes: 0 every problem answered; 2 bad input or a server setting every request would trip on "
    "(one line on stderr, nothing written); 3 problems failed (their records are kept, the last line on "
    "stderr counts them and gives the first error; re-run the same command to redo them); 1 a server "
    "spectra started kept dying, or another error; 130 Ctrl-C; 143 SIGTERM"
)


class SpectraError(Exception):
    """Base of every error spectra raises on purpose."""

    exit_code = 1


class UsageError(SpectraError):
    """Bad input from the user: flags, files, data sets, prompt sets, server URLs."""

    exit_code = 2


class UnreachableServerError(UsageError):
    """A model server given by URL does not answer."""


class ServerSettingError(UsageError):
    """A server setting every request of the run would trip on (too few logprobs allowed, too short
    a context), found before the first problem."""


class ServerError(SpectraError):
    """A model server answered with an error, or could not be reached."""

    def __init__(self, server: str, status: int | None, message: str):
        self.server = server
        self.status = status
        self.message = message
        where = f"HTTP {status}" if status is not None else "no response"
        super().__init__(f"{server}: {where}: {message}")


class RetryableServerError(ServerError):
    """A server error worth retrying: connection trouble, 429, 5xx, a stalled or cut stream.

    `unavailable` marks what a server restart explains: the connection refused, reset or broken
    mid-answer, or HTTP 502, 503 or 504 (a proxy or vLLM itself not ready). Those are retried
    until the retry deadline whatever the attempt count; the others count against `max_attempts`.
    """

    def __init__(self, server: str, status: int | None, message: str, *, unavailable: bool = False):
        super().__init__(server, status, message)
        self.unavailable = unavailable


class ServerStartError(SpectraError):
    """A model server we started died or never became healthy."""


class Terminated(SpectraError):
    """The process was asked to stop with SIGTERM (kill, timeout, SLURM, docker stop)."""

    exit_code = 143


class ServerDiedError(ServerStartError):
    """A model server spectra started kept dying: its restarts in this run are spent."""
