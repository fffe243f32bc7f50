"""What search-and-learn's strategies share: settings, beams, and a `Searcher` that generates steps
and scores partial solutions for one problem, counting every request.

Facts from huggingface/search-and-learn (seed-algorithms-2.md section 2): the policy writes an
assistant turn after a system prompt and the problem, starting from the template's generation
prompt (`Searcher.prompt`); a step ends at "\\n\\n", which is kept in
the output; the last iteration runs to the end of the sequence; lookahead rounds after the sampled
step are greedy and go on only while the text has not ended. A scorer rates a solution's steps
(`engine.reasoning.judges.specreason.StepScorer`); step scores are aggregated with last, min or prod.

Concurrency: a strategy hands all its candidates to `Searcher.gather` at once, and problems run
side by side in the scheduler, so every candidate of every problem in flight is at the servers
together, bounded only by the clients' per-endpoint limits (search-and-learn had to run beam search
one problem at a time).
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
import itertools
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

from engine.data.answers import extract_answer
from engine.errors import UsageError
from engine.reasoning.judges import prm_kind_setting, scorer_setting
from engine.reasoning.judges.base import STEP_SCORE_AGGREGATIONS, ScoreQuery, StepScorer, aggregate_step_scores
from engine.reasoning.settings import Settings, setting
from engine.records import (
    FinishReason,
    ModelUsage,
    RequestCost,
    Role,
    StepEnding,
    StepRecord,
    TrackRecord,
    usage_of_costs,
)
from engine.serving.chat import Message
from engine.serving.models import Model, Purpose, Reply

STEP_DELIMITER = "\n\n"
# vLLM's sampling option as search-and-learn sets it: the stop string stays in the step.
STEP_OPTIONS = {"include_stop_str_in_output": True}

T = TypeVar("T")


PRM_SPLITS = ("reference", "real_last")


@dataclass(frozen=True)
class SearchSettings(Settings):
    """search-and-learn's settings (src/sal/config.py) and defaults, shared by its three strategies.
    Sampling (`--temperature`, `--top_p`, `--seed`) and the tokens one request may write
    (`--max_step_tokens`) are the run's reasoning config; the search runner defaults them to
    search-and-learn's 0.8, 1.0 and 2048, and reads its `--max_tokens` as `--max_step_tokens`."""

    n: int = setting(4, "completions per problem (N)")
    beam_width: int = setting(4, "beam search: N / beam_width beams go on; DVTS: steps sampled per subtree")
    num_iterations: int = setting(40, "beam search and DVTS: steps at most; the last one runs to the end")
    lookahead: int = setting(0, "greedy steps written after a candidate step to score it (not kept)")
    agg_strategy: str = setting("last", "how a solution's step scores make its score", STEP_SCORE_AGGREGATIONS)
    filter_duplicates: bool = setting(False, "beam search: drop active beams whose text repeats another's")
    sort_completed: bool = setting(False, "beam search: keep the top N completed beams, not the first N")
    scorer: str = scorer_setting("prm")
    prm_kind: str = prm_kind_setting()
    prm_split: str = setting(
        "reference",
        "the text is scored split at \\n\\n; reference: an empty last step after a kept \\n\\n is scored too "
        "(search-and-learn); real_last: it is dropped, so the last score is the real last step's",
        PRM_SPLITS,
    )

    def validate(self) -> None:
        for name, least in (("n", 1), ("beam_width", 1), ("num_iterations", 1), ("lookahead", 0)):
            value = getattr(self, name)
            if value < least:
                raise UsageError(f"--{name} must be at least {least}, not {value}")

    def idle_flags(self) -> dict[str, str]:
        if self.scorer == "prm":
            return {}
        return {"prm_kind": "the big model judges (--scorer judge); use --scorer prm"}

    def check_width(self) -> None:
        """DVTS splits N into subtrees of the beam width (search-and-learn refuses the rest there)."""
        if self.n % self.beam_width:
            raise UsageError(f"--n ({self.n}) must be a multiple of --beam_width ({self.beam_width})")


@dataclass(frozen=True)
class Sampling:
    """How the policy samples (the run's reasoning config)."""

    temperature: float = 0.8
    top_p: float = 1.0
    max_tokens: int = 2048


@dataclass(frozen=True)
class Step:
    """One generated step, how it ended (delimiter, eos, length), and its lookahead text."""

    text: str
    ending: StepEnding
    tokens: int
    lookahead: str = ""


@dataclass
class Beam:
    """A partial solution: its steps and the tokens each cost; `scores` are the latest scores of its
    paragraphs (the text split at "\\n\\n", what the step scores aggregate over) and `step_scores`
    the same scores grouped by the step that wrote each paragraph."""

    steps: list[str] = field(default_factory=list)
    scores: list[float] = field(default_factory=list)
    step_scores: list[list[float]] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)
    ending: StepEnding | None = None
    last_step_empty: bool = False

    @property
    def text(self) -> str:
        return "".join(self.steps)

    @property
    def ended(self) -> bool:
        """The last step was empty or stopped at the end of the sequence or the token limit."""
        return self.last_step_empty or self.ending in (StepEnding.EOS, StepEnding.LENGTH)

    def score(self, how: str) -> float:
        return aggregate_step_scores(self.scores, how)

    def grown(self, step: Step) -> Beam:
        """A copy with `step` appended (its lookahead is not kept), to be scored anew."""
        return Beam(
            steps=[*self.steps, step.text],
            step_tokens=[*self.step_tokens, step.tokens],
            ending=step.ending,
            last_step_empty=step.text == "",
        )


# Why a search dropped a beam before it became a completion (`PrunedBeam.reason`).
LOWER_SCORE = "score"  # beam search: not among the top n / beam_width; DVTS: not its subtree's best sibling
DUPLICATE = "duplicate"  # beam search with --filter_duplicates: its text repeats an earlier active beam's
SURPLUS = "surplus"  # beam search: it completed, but not among the n completions kept
PRUNE_REASONS = (LOWER_SCORE, DUPLICATE, SURPLUS)
# The `StepRecord` fields a pruned beam's steps keep in the record (the writer is the completions').
PRUNED_STEP_FIELDS = ("index", "text", "tokens", "score", "detail")


@dataclass(frozen=True)
class PrunedBeam:
    """A beam a search dropped: the beam as scored when dropped, the iteration (from 0) it was
    dropped at (for a surplus completion, the iteration it completed at) and why (`PRUNE_REASONS`)."""

    beam: Beam
    iteration: int
    reason: str


def cycled(beams: Sequence[Beam], n: int) -> list[Beam]:
    """Exactly n beams: copies of `beams` in turn (search-and-learn's cycling of active beams)."""
    return [dataclasses.replace(beams[i % len(beams)]) for i in range(n)]


def split_steps(text: str) -> list[str]:
    """A whole solution as steps, each keeping its "\\n\\n" (how the PRMs of the reference split it)."""
    parts = text.split(STEP_DELIMITER)
    steps = [p + STEP_DELIMITER for p in parts[:-1]]
    return steps + [parts[-1]] if parts[-1] or not steps else steps


def paragraphs(text: str, split: str) -> list[str]:
    """What a scorer rates: the whole text split at "\\n\\n", as every PRM of the reference splits it
    (`ans.split("\\n\\n")`). After a kept "\\n\\n" that leaves an empty last paragraph, which the
    reference scores too (`reference`); `real_last` drops it, so the last score is the real last step's."""
    parts = text.split(STEP_DELIMITER)
    if split == "real_last" and len(parts) > 1 and not parts[-1]:
        parts.pop()
    return parts


def scores_by_step(steps: Sequence[str], parts: Sequence[str], scores: Sequence[float]) -> list[list[float]]:
    """Each paragraph's score under the step its first character belongs to; an empty last paragraph
    and lookahead paragraphs (past the kept text) go to the last step."""
    starts = list(itertools.accumulate((len(s) for s in steps[:-1]), initial=0))
    grouped: list[list[float]] = [[] for _ in steps]
    offset = 0
    for part, score in zip(parts, scores, strict=True):
        grouped[max(0, bisect.bisect_right(starts, offset) - 1)].append(score)
        offset += len(part) + len(STEP_DELIMITER)
    return grouped


class Searcher:
    """Generates steps and scores solutions of one problem, entering every request's cost. `writer`
    is the model that writes the solutions, as the problem's handle: its seed is the problem's
    (`engine.reasoning.seeds.problem_seed`; None unseeded), and each request's is
    `request_seed(seed, Purpose.SEARCH, key=...)`, so that cycled copies of a beam sample apart."""

    def __init__(
        self,
        *,
        writer: Model,
        scorer: StepScorer,
        messages: tuple[Message, ...],
        problem: str,
        settings: SearchSettings,
        sampling: Sampling = Sampling(),
    ):
        self.writer, self.scorer = writer, scorer
        self.messages, self.problem, self.settings = messages, problem, settings
        self.sampling = sampling
        self.costs: list[RequestCost] = []
        # The beams the search dropped, in the order it dropped them (beam search and DVTS).
        self.pruned: list[PrunedBeam] = []

    @property
    def usage(self) -> dict[str, ModelUsage]:
        return usage_of_costs(self.costs)

    def prune(self, before: Sequence[Beam], kept: Sequence[Beam], *, iteration: int, reason: str) -> None:
        """Record the beams of `before` that are not in `kept` (by identity) as pruned, in order."""
        kept_ids = {id(b) for b in kept}
        self.pruned += [PrunedBeam(b, iteration, reason) for b in before if id(b) not in kept_ids]

    def prompt(self, text: str) -> str:
        """The request that continues the solution `text`: the conversation with the template's
        generation prompt, then `text`. search-and-learn renders its first iteration so
        (`add_generation_prompt=True`: search/beam_search.py, diverse_verifier_tree_search.py,
        best_of_n.py) and its lookahead goes on from that text; its later iterations render the
        solution as an assistant message (`continue_final_message=True`, `build_conv`). For its
        instruct models (Llama 3.2, Qwen2.5) the generation prompt is that message's head, but a
        thinking template (QwQ, R1-Distill) opens `<think>\\n` only in the generation prompt, which
        the re-rendering would drop after the first step, and a template that trims content
        (Llama's) would eat the step's "\\n\\n"; here every request continues the first one's text."""
        return self.writer.chat.generation_prompt(tuple(self.messages)) + text

    async def _continue(self, text: str, *, temperature: float, final: bool, key: tuple) -> Reply:
        reply = await self.writer.complete(
            self.prompt(text),
            purpose=Purpose.SEARCH,
            key=key,
            max_tokens=self.sampling.max_tokens,
            temperature=temperature,
            top_p=self.sampling.top_p,
            stop=None if final else [STEP_DELIMITER],
            options=STEP_OPTIONS,
        )
        self.costs.append(reply.cost)
        return reply

    async def next_step(self, text: str, *, final: bool, key: tuple) -> Step:
        """The next step after `text` (to the end of the sequence when `final`), then the greedy
        lookahead steps, which are only for scoring (search/utils.py `generate_k_steps`)."""
        temperature = self.sampling.temperature
        first = await self._continue(text, temperature=temperature, final=final, key=(*key, 0))
        step = Step(first.text, first.step_ending(STEP_DELIMITER), first.tokens)
        ahead, ending = "", step.ending
        for round_ in range(1, 0 if final else self.settings.lookahead + 1):
            if ending != StepEnding.DELIMITER:
                break
            more = await self._continue(text + step.text + ahead, temperature=0.0, final=False, key=(*key, round_))
            ahead, ending = ahead + more.text, more.step_ending(STEP_DELIMITER)
        return dataclasses.replace(step, lookahead=ahead)

    async def finish(self, beam: Beam, *, key: tuple) -> Beam:
        """`beam` continued to the end of the sequence in one step, and scored."""
        grown = beam.grown(await self.next_step(beam.text, final=True, key=key))
        await self.rate(grown)
        return grown

    async def rate(self, beam: Beam, lookahead: str = "") -> None:
        """Score `beam`'s whole text (and `lookahead`, which is not kept) as the reference's PRMs read
        a solution: split at "\\n\\n" (`paragraphs`), one score per paragraph, every paragraph rescored;
        a step of several paragraphs (the last one runs to the end) gets a score for each."""
        parts = paragraphs(beam.text + lookahead, self.settings.prm_split)
        scored = await self.scorer.score(ScoreQuery(self.problem, self.messages, tuple(parts)))
        self.costs += scored.costs
        if len(scored.values) != len(parts):
            raise ValueError(f"the scorer rated {len(scored.values)} of {len(parts)} steps; a search needs all")
        beam.scores = list(scored.values)
        beam.step_scores = scores_by_step(beam.steps, parts, beam.scores)

    async def scored_candidate(self, beam: Beam, step: Step) -> Beam:
        """`beam` grown by `step`, scored on the step plus its lookahead (search-and-learn's beam
        search generated the lookahead but scored without it, see seed-algorithms-2.md 2.10; DVTS
        scored with it, which is what the lookahead is for)."""
        grown = beam.grown(step)
        await self.rate(grown, step.lookahead)
        return grown

    @staticmethod
    async def gather(coroutines: Iterable[Awaitable[T]]) -> list[T]:
        """Run the awaitables concurrently, results in order; the first failure cancels the rest."""
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(c) for c in coroutines]
        return [t.result() for t in tasks]


def best_index(beams: Sequence[Beam], how: str) -> int:
    """The top-scored beam; the first of equals (the reference's `np.argmax`)."""
    return max(range(len(beams)), key=lambda i: (beams[i].score(how), -i))


def completion_tracks(
    beams: Sequence[Beam], *, how: str, writer: str = Role.SMALL, choices: bool = False
) -> list[TrackRecord]:
    """The completions as track records, in order: steps with their tokens and the score of the
    last paragraph each wrote (all of them in `detail` when it wrote several), the answer, and the
    aggregate score in `TrackRecord.score`. A search runs no step policy: the tracks' `policy` is
    None (the problem record's `strategy` names the search); each finishes as its last step did."""
    tracks = []
    for i, beam in enumerate(beams):
        tokens = sum(beam.step_tokens)
        tracks.append(
            TrackRecord(
                track_id=i,
                steps=step_records(beam, writer),
                answer_text=beam.text,
                answer=extract_answer(beam.text, choices=choices),
                answer_model=writer,
                finish_reason=FinishReason(beam.ending) if beam.ending else "",
                thinking_tokens=tokens,
                score=beam.score(how) if beam.scores else None,
            )
        )
    return tracks


def step_records(beam: Beam, writer: str) -> list[StepRecord]:
    """The beam's steps with their tokens and the score of the last paragraph each wrote (all of
    them in `detail` when it wrote several)."""
    step_scores = beam.step_scores or [[] for _ in beam.steps]
    return [
        StepRecord(
            index=j,
            text=text,
            writer=writer,
            tokens=tokens,
            score=scores[-1] if scores else None,
            detail={"paragraph_scores": scores} if len(scores) > 1 else None,
        )
        for j, (text, tokens, scores) in enumerate(zip(beam.steps, beam.step_tokens, step_scores, strict=True))
    ]


def pruned_details(completions: Sequence[Beam], pruned: Sequence[PrunedBeam], *, how: str) -> list[dict[str, Any]]:
    """The pruned beams as plain data for `ProblemRecord.details["pruned"]`, in pruning order:
    `iteration` (from 0), `reason`, `score` (the beam's aggregate score), and its steps as
    `StepRecord` fields (index, text, tokens, score, detail). Each stores only the steps no earlier
    beam holds: `prefix` {"track": track id, "steps": k} or {"pruned": index, "steps": k} says that
    its first k steps are those of a completion or of an earlier pruned beam (absent when k is 0).
    Steps are matched by text, as the viewer draws them."""
    trie = _StepTrie()
    for i, beam in enumerate(completions):
        trie.add(beam.steps, {"track": i})
    entries = []
    for j, p in enumerate(pruned):
        shared, owner = trie.add(p.beam.steps, {"pruned": j})
        entry: dict[str, Any] = {"iteration": p.iteration, "reason": p.reason, "score": p.beam.score(how)}
        if shared:
            entry["prefix"] = {**owner, "steps": shared}
        steps = step_records(p.beam, writer="")[shared:]
        entry["steps"] = [{k: getattr(s, k) for k in PRUNED_STEP_FIELDS if getattr(s, k) is not None} for s in steps]
        entries.append(entry)
    return entries


class _StepTrie:
    """Paths of step texts; each node remembers the first beam added through it."""

    def __init__(self) -> None:
        self.children: dict[tuple[int, str], int] = {}
        self.owners: list[dict[str, int]] = [{}]

    def add(self, steps: Sequence[str], owner: dict[str, int]) -> tuple[int, dict[str, int]]:
        """Add a beam's steps; (how many of its first steps were there already, whose they are)."""
        node, shared = 0, 0
        while shared < len(steps) and (node, steps[shared]) in self.children:
            node = self.children[(node, steps[shared])]
            shared += 1
        found = self.owners[node]
        for text in steps[shared:]:
            child = len(self.owners)
            self.children[(node, text)] = child
            self.owners.append(owner)
            node = child
        return shared, found
