"""The toy world's runner commands: each mode is given the served models it uses, the PRM only where
it scores (a runner refuses flags that would change nothing), and a budget the toy servers hold."""

from pathlib import Path

from benchmarks.toy_confidence import CONFIDENCE_MODES
from benchmarks.toy_judges import JUDGE_MODES
from benchmarks.toy_prm import PRM_SEARCH_MODES
from benchmarks.toy_search import SEARCH_MODES
from benchmarks.toy_speed import SPEED_MODES, THROUGHPUT_MODES
from benchmarks.toy_world import MODES, SMALL_ALONE, mode_argv, run_config
from engine.run.config import ModelConfig
from engine.run.preflight import sample_budget
from engine.toy.trained import MAX_POSITIONS

MODELS = {
    role: ModelConfig(model=role.upper(), urls=(f"http://{role}",)) for role in ("big", "small", "prm", "prm_token")
}
# Room for the longest toy prompt (tens of tokens) before a sample, in the toy servers' context.
PROMPT_ROOM = 256


def test_only_a_mode_that_scores_with_the_prm_is_given_the_prm():
    for mode in (SMALL_ALONE, SEARCH_MODES[0]):
        assert not [
            flag for flag in mode_argv(mode, MODELS, 4, Path("out")) if flag.startswith(("--prm_model", "--prm_url"))
        ]
    argv = mode_argv(PRM_SEARCH_MODES[0], MODELS, 4, Path("out"))
    assert "--prm_model=PRM" in argv and "--prm_url=http://prm" in argv and "--small_model=SMALL" in argv


def test_every_mode_s_samples_fit_the_toy_servers_context_after_a_prompt():
    """A run whose budget and prompt overflow the servers' context is refused before it starts."""
    groups = (MODES, CONFIDENCE_MODES, SEARCH_MODES, PRM_SEARCH_MODES, JUDGE_MODES, SPEED_MODES, THROUGHPUT_MODES)
    for mode in (mode for group in groups for mode in group):
        budget, flags = sample_budget(run_config(mode, MODELS, 4, Path("out")))
        assert budget + PROMPT_ROOM <= MAX_POSITIONS, f"{mode.name}: {flags} {budget}"
