"""The toy world's runner commands: each mode is given the served models it uses, the PRM only where
it scores (a runner refuses flags that would change nothing)."""

from pathlib import Path

from benchmarks.toy_prm import PRM_SEARCH_MODES
from benchmarks.toy_search import SEARCH_MODES
from benchmarks.toy_world import SMALL_ALONE, mode_argv
from engine.run.config import ModelConfig

MODELS = {role: ModelConfig(model=role.upper(), urls=(f"http://{role}",)) for role in ("big", "small", "prm")}


def test_only_a_mode_that_scores_with_the_prm_is_given_the_prm():
    for mode in (SMALL_ALONE, SEARCH_MODES[0]):
        assert not [
            flag for flag in mode_argv(mode, MODELS, 4, Path("out")) if flag.startswith(("--prm_model", "--prm_url"))
        ]
    argv = mode_argv(PRM_SEARCH_MODES[0], MODELS, 4, Path("out"))
    assert "--prm_model=PRM" in argv and "--prm_url=http://prm" in argv and "--small_model=SMALL" in argv
