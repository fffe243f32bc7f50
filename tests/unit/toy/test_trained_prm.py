"""The toy PRM reads exactly what spectra's PRMScorer sends, is taught the labels the benchmarks grade
by, and is written as a folder vLLM serves as a process reward model (and its causal-LM twin)."""

import json
import random

import pytest

from engine.reasoning.judges.base import ScoreQuery
from engine.reasoning.judges.prm import PRMScorer
from engine.serving.chat import ChatFormat, Message
from engine.serving.models import Model
from engine.toy.task import STEP_PATTERN, held_out_problems, judge_label
from engine.toy.tiny_prm import STEP_TAG, step_tag_id
from engine.toy.trained import SIZES, WEIGHTS_DIR, make_toy_models, prm_tokenizer
from engine.toy.trained_prm import EMPTY_LAST_SHARE, labelled_solution, prm_input


@pytest.fixture(scope="module")
def chat():
    return ChatFormat(prm_tokenizer(), thinking=True)


def test_the_toy_prm_is_taught_on_the_text_prm_scorer_sends(chat):
    problem = held_out_problems(1)[0]
    steps = ("57 + 33 = 90\n\n", "90 * 2 = 180\n\n", "")
    query = ScoreQuery(problem=problem.text, messages=(Message("user", problem.text),), steps=steps)
    sent = PRMScorer(Model("prm", None, chat)).pooling_input(query)
    assert sent == prm_input(chat, problem.text, ["57 + 33 = 90", "90 * 2 = 180", ""])
    ids = chat.tokenizer(sent, add_special_tokens=False)["input_ids"]
    assert ids.count(chat.tokenizer.convert_tokens_to_ids(STEP_TAG)) == 3, "the tag is one token"


def test_labels_are_the_benchmarks_and_an_empty_step_is_its_solution_s():
    rng = random.Random(0)
    steps_seen = wrong = empties = right_after_wrong = 0
    for problem in held_out_problems(300):
        labelled = labelled_solution(problem, rng)
        steps = [step for step, _ in labelled]
        for i, (step, right) in enumerate(labelled):
            if step:
                assert right == judge_label(problem, steps[:i], step), (steps, i)
                steps_seen += 1
                wrong += not right
            else:  # only last, and right only when every step before it is
                assert i == len(labelled) - 1 and right == all(ok for _, ok in labelled[:i])
                empties += 1
        # The steps go on from the value written: a right step after a wrong one is right.
        for (before, before_right), (after, after_right) in zip(labelled, labelled[1:], strict=False):
            if STEP_PATTERN.match(after) and not before_right and after_right:
                assert STEP_PATTERN.match(after)[1] == STEP_PATTERN.match(before)[4]
                right_after_wrong += 1
    assert 0.2 < wrong / steps_seen < 0.45 and right_after_wrong > 100
    assert 0.5 * EMPTY_LAST_SHARE < empties / 300 < 1.5 * EMPTY_LAST_SHARE


def test_make_toy_models_writes_the_prm_as_a_pooling_model_and_its_token_twin(tmp_path):
    from safetensors.torch import load_file

    toy = make_toy_models(tmp_path)
    config = json.loads((toy.prm / "config.json").read_text())
    assert config["architectures"] == ["Qwen2ForProcessRewardModel"]
    assert config["num_hidden_layers"] == SIZES["prm"].layers
    assert step_tag_id(toy.prm) == step_tag_id(toy.prm_token) == config["vocab_size"] - 1
    shipped = load_file(str(WEIGHTS_DIR / "prm.safetensors"))
    pooling, twin = (load_file(str(folder / "model.safetensors")) for folder in (toy.prm, toy.prm_token))
    assert set(pooling) == set(shipped) and {k for k in shipped if k.startswith("score.")}
    for name, tensor in shipped.items():
        assert pooling[name].equal(tensor.float())
        if name.startswith("model."):  # the twin: the same body, the LM head tied to its embeddings
            assert twin[name].equal(tensor.float())
    assert not [k for k in twin if k.startswith("score.")]
