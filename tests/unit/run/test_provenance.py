"""The manifest's versions: spectra's one version (pyproject reads engine.__version__, CHANGES.md has
its section) and the git commit of the source tree, "-dirty" with uncommitted changes, None when
the tree is no checkout or git cannot say."""

import re
import subprocess

from setuptools.config.pyprojecttoml import read_configuration

from engine import __version__
from engine.run import provenance
from engine.run.provenance import source_commit, versions
from tests.paths import REPO_ROOT


def git(folder, *args):
    command = ["git", "-C", str(folder), "-c", "user.name=t", "-c", "user.email=t@t", *args]
    return subprocess.run(command, capture_output=True, text=True, check=True).stdout.strip()


def test_the_commit_of_a_checkout_is_its_head_and_dirty_when_tracked_files_changed(tmp_path):
    git(tmp_path, "init", "-q")
    (tmp_path / "a.py").write_text("x = 1\n")
    git(tmp_path, "add", "a.py")
    git(tmp_path, "commit", "-q", "-m", "one")
    head = git(tmp_path, "rev-parse", "HEAD")
    assert re.fullmatch(r"[0-9a-f]{40}", head) and source_commit(tmp_path) == head
    (tmp_path / "untracked.txt").write_text("results\n")
    assert source_commit(tmp_path) == head  # files git does not track change no code
    (tmp_path / "a.py").write_text("x = 2\n")
    assert source_commit(tmp_path) == f"{head}-dirty"


def test_a_folder_inside_another_checkout_has_no_commit(tmp_path):
    git(tmp_path, "init", "-q")
    inside = tmp_path / "site-packages"  # a wheel installed in a virtualenv inside some repository
    inside.mkdir()
    assert source_commit(inside) is None


def test_without_git_the_commit_is_none_and_the_run_goes_on(tmp_path, monkeypatch):
    git(tmp_path, "init", "-q")
    monkeypatch.setenv("PATH", str(tmp_path / "no-bin"))
    assert source_commit(tmp_path) is None


def test_versions_name_spectra_its_commit_and_python(monkeypatch):
    monkeypatch.setattr(provenance, "source_commit", lambda: "abc-dirty")
    found = versions()
    assert (found["spectra"], found["spectra_commit"]) == (__version__, "abc-dirty")
    assert re.fullmatch(r"\d+\.\d+\.\d+", found["python"])


def test_the_version_has_one_source_and_a_changes_section():
    project = read_configuration(REPO_ROOT / "pyproject.toml", expand=True)["project"]
    assert project["version"] == __version__
    changes = (REPO_ROOT / "CHANGES.md").read_text()
    assert re.search(rf"^## {re.escape(__version__)}\b", changes, re.MULTILINE), "CHANGES.md lacks this version"
