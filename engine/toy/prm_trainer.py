"""Trains the toy process reward model (engine/toy/trained_prm.py); run on a GPU, once, by a developer.

    python -m engine.toy.prm_trainer data --out DATA.pkl
    python -m engine.toy.prm_trainer train --data DATA.pkl --init engine/toy/weights/big.safetensors \\
        --layers 6 --out OUT --seed 0
    python -m engine.toy.prm_trainer evaluate --weights OUT/prm.safetensors --layers 6

The body starts from the trained big model's first `--layers` layers (it already judges the small
model's slips), the tag's embedding from the step delimiter's; the head is vLLM's
`Qwen2ForProcessRewardModel` head. Two losses at every step tag, nowhere else: the head's two labels
[bad, good], and the tied language-model head's next token, "-" or "+" (the `prm-token` twin).
Deterministic for a seed on one machine, as `engine.toy.trainer` is.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import pickle
import random
import time
from dataclasses import replace
from pathlib import Path

from engine.serving.chat import ChatFormat
from engine.toy.task import TRAIN_SEED, ToyProblem, held_out_problems, judge_label, problem_stream
from engine.toy.tiny_prm import STEP_TAG
from engine.toy.trained import prm_tokenizer
from engine.toy.trained_prm import BAD_TOKEN, GOOD_TOKEN, labelled_solution, prm_input
from engine.toy.trainer import (
    Schedule,
    auc,
    generate,
    load_model,
    log,
    optimizer_and_schedule,
    set_deterministic,
    solve_prompts,
)
from engine.toy.training_data import CHUNK, REPO, dev_problems

WEIGHTS = REPO / "engine" / "toy" / "weights"
SETTINGS = {"steps": 1500, "batch": 128, "examples": 192_000, "lr": 5e-4, "warmup": 100, "problem_offset": 170_000}
THRESHOLD = 0.7
# The step at which the steps are fitted to `--max_seconds` (inside the warm-up of `SETTINGS`).
FIT_AT = 40

# ---- data: seeded chunks of (token ids, one label a tag), built by worker processes ----

_WORKER: dict = {}


def _init_worker() -> None:
    tokenizer = prm_tokenizer()
    _WORKER.update(tokenizer=tokenizer, chat=ChatFormat(tokenizer, thinking=True))


def _build_chunk(job: tuple) -> list:
    import numpy as np

    seed, chunk, excluded = job
    rng = random.Random(f"prm-{seed}-{chunk}")
    stream = problem_stream(TRAIN_SEED * 1000 + seed * 100_000 + chunk + SETTINGS["problem_offset"])
    tokenizer, chat = _WORKER["tokenizer"], _WORKER["chat"]
    tag = tokenizer.convert_tokens_to_ids(STEP_TAG)
    texts, labels = [], []
    while len(texts) < CHUNK:
        problem = next(stream)
        if problem.text in excluded:
            continue
        labelled = labelled_solution(problem, rng)
        texts.append(prm_input(chat, problem.text, [step for step, _ in labelled]))
        labels.append([right for _, right in labelled])
    out = []
    for ids, right in zip(tokenizer(texts, add_special_tokens=False)["input_ids"], labels, strict=True):
        if ids.count(tag) != len(right):
            raise ValueError(f"{ids.count(tag)} step tags for {len(right)} labels")
        out.append((np.array(ids, dtype=np.int16), np.array(right, dtype=np.uint8)))
    return out


def build_data(args: argparse.Namespace) -> None:
    excluded = frozenset(p.text for p in held_out_problems()) | frozenset(p.text for p in dev_problems())
    jobs = [(args.seed, chunk, excluded) for chunk in range(-(-args.examples // CHUNK))]
    started = time.monotonic()
    with multiprocessing.get_context("fork").Pool(max(1, (os.cpu_count() or 2) - 1), _init_worker) as pool:
        data = [example for chunk in pool.map(_build_chunk, jobs) for example in chunk][: args.examples]
    Path(args.out).write_bytes(pickle.dumps(data))
    log("prm", "data", examples=len(data), seconds=round(time.monotonic() - started, 1))


# ---- the model: a Qwen2 body and vLLM's Qwen2ForProcessRewardModel head ----


def new_prm(layers: int, tokenizer):
    import torch
    from transformers import Qwen2Model

    from engine.toy.tiny import qwen2_config
    from engine.toy.trained import MAX_POSITIONS, SIZES

    class ToyPRM(torch.nn.Module):
        """`model.*` and `score.*` as vLLM loads them; `forward` answers at the tags only."""

        def __init__(self, config):
            super().__init__()
            self.model = Qwen2Model(config)
            hidden = config.hidden_size
            self.score = torch.nn.Sequential(
                torch.nn.Linear(hidden, hidden), torch.nn.ReLU(), torch.nn.Linear(hidden, 2)
            )

        def forward(self, ids, mask, tags):
            """[bad, good] logits of the head and next-token logits of the tied LM head, at each tag."""
            hidden = self.model(input_ids=ids, attention_mask=mask).last_hidden_state[tags]
            return self.score(hidden), hidden @ self.model.embed_tokens.weight.T

    config = qwen2_config(
        tokenizer, replace(SIZES["big"], layers=layers), positions=MAX_POSITIONS, tie_word_embeddings=True
    )
    config._attn_implementation = "eager"
    return ToyPRM(config)


def init_from_big(prm, big_weights: Path, tokenizer) -> None:
    """The big model's embeddings, first layers and final norm; the tag's embedding is the step
    delimiter's ("\\n\\n"), whose place in the text it takes."""
    import torch
    from safetensors.torch import load_file

    state = {k: v.float() for k, v in load_file(str(big_weights)).items()}
    layers = prm.model.config.num_hidden_layers
    kept = {k: v for k, v in state.items() if not k.startswith("model.layers.") or int(k.split(".")[2]) < layers}
    embed = kept["model.embed_tokens.weight"]
    delimiter = tokenizer.convert_tokens_to_ids(tokenizer.tokenize("\n\n"))[0]
    kept["model.embed_tokens.weight"] = torch.cat([embed, embed[delimiter : delimiter + 1]])
    missing, unexpected = prm.load_state_dict(kept, strict=False)
    if unexpected or [k for k in missing if not k.startswith("score.")]:
        raise RuntimeError(f"the big model's weights do not fit: missing {missing}, unexpected {unexpected}")


def load_prm(weights: Path, layers: int, tokenizer, device: str):
    from safetensors.torch import load_file

    prm = new_prm(layers, tokenizer)
    prm.load_state_dict({k: v.float() for k, v in load_file(str(weights)).items()})
    return prm.to(device).eval()


# ---- training ----


def batches(data: list, batch: int, steps: int, seed: int, tag: int, pad: int, device: str):
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    per_epoch = len(data) // batch
    order = np.concatenate([rng.permutation(len(data))[: per_epoch * batch] for _ in range(-(-steps // per_epoch))])
    for start in range(0, steps * batch, batch):
        rows = [data[i] for i in order[start : start + batch]]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((batch, width), pad, dtype=torch.long)
        mask = torch.zeros((batch, width), dtype=torch.long)
        for r, (row_ids, _) in enumerate(rows):
            ids[r, : len(row_ids)] = torch.from_numpy(row_ids.astype(np.int64))
            mask[r, : len(row_ids)] = 1
        # Row-major, as the tags are gathered: labels in the order of `ids == tag`.
        labels = torch.from_numpy(np.concatenate([right for _, right in rows]).astype(np.int64))
        yield ids.to(device), mask.to(device), (ids == tag).to(device), labels.to(device)


def fit_to_time(schedule: Schedule, step_seconds: float, seconds_left: float) -> None:
    """Fewer steps, laid out anew, when the run's pace would not finish them in `seconds_left`
    (still in the warm-up, so `--steps` with the logged number reproduces the run)."""
    fitting = FIT_AT + int(0.97 * seconds_left / step_seconds)
    if fitting < schedule.steps:
        schedule.steps = fitting
        log("prm", "steps_fitted_to_time", steps=fitting, step_seconds=round(step_seconds, 3))


def tag_losses(prm, ids, mask, tags, labels, signs):
    """Cross-entropy of the head's two labels and of the LM head's "+"/"-" over the whole vocabulary."""
    import torch

    head, vocab = prm(ids, mask, tags)
    head_loss = torch.nn.functional.cross_entropy(head.float(), labels)
    token_loss = torch.nn.functional.cross_entropy(vocab.float(), signs[labels])
    return head_loss, token_loss


def train(args: argparse.Namespace) -> None:
    torch = set_deterministic(args.seed)
    settings = {**SETTINGS, **{k: v for k, v in vars(args).items() if k in SETTINGS and v}}
    tokenizer = prm_tokenizer()
    tag = tokenizer.convert_tokens_to_ids(STEP_TAG)
    signs = torch.tensor([tokenizer.convert_tokens_to_ids(t) for t in (BAD_TOKEN, GOOD_TOKEN)], device=args.device)
    data = pickle.loads(Path(args.data).read_bytes())
    settings["examples"] = len(data)
    prm = new_prm(args.layers, tokenizer)
    init_from_big(prm, Path(args.init), tokenizer)
    prm = prm.to(args.device).train()
    schedule = Schedule(settings["steps"], settings["warmup"])
    optimizer, scheduler = optimizer_and_schedule(prm, settings["lr"], schedule)
    started, step = time.monotonic(), 0
    for step, (ids, mask, tags, labels) in enumerate(
        batches(data, settings["batch"], settings["steps"], args.seed, tag, tokenizer.pad_token_id, args.device)
    ):
        with torch.autocast(args.device, dtype=torch.bfloat16):
            head_loss, token_loss = tag_losses(prm, ids, mask, tags, labels, signs)
        optimizer.zero_grad(set_to_none=True)
        (head_loss + token_loss).backward()
        torch.nn.utils.clip_grad_norm_(prm.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 100 == 0:
            seconds = round(time.monotonic() - started, 1)
            log(
                "prm",
                "step",
                step=step,
                head=round(head_loss.item(), 4),
                token=round(token_loss.item(), 4),
                seconds=seconds,
            )
        if step + 1 == FIT_AT:
            fit_to_time(
                schedule, (time.monotonic() - started) / FIT_AT, args.max_seconds - (time.monotonic() - started)
            )
        if step + 1 >= schedule.steps:
            break
        if time.monotonic() - started > args.max_seconds:
            log("prm", "time_guard", stopped_after_step=step + 1)
            break
    from safetensors.torch import save_file

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    save_file(
        {k: v.detach().to(torch.bfloat16).cpu().clone() for k, v in prm.state_dict().items()},
        str(out / "prm.safetensors"),
    )
    meta = {"settings": {**settings, "steps": schedule.steps}, "layers": args.layers, "steps_done": step + 1}
    (out / "prm_meta.json").write_text(json.dumps(meta, indent=1))


# ---- in-process evaluation (GPU): the small model's own steps, as benchmarks.toy_world grades them ----


def small_model_steps(problems: list[ToyProblem], device: str) -> list[tuple[int, list[str], list[bool]]]:
    """(problem index, steps, labels) of one solution a problem by the small model at T=0.6."""
    from transformers import PreTrainedTokenizerFast

    from engine.toy.trained import TOKENIZER_DIR

    tokenizer = PreTrainedTokenizerFast.from_pretrained(TOKENIZER_DIR)
    small = load_model("small", tokenizer, WEIGHTS / "small.safetensors", device)
    texts = generate(small, tokenizer, solve_prompts(problems, tokenizer), temperature=0.6, seed=2)
    solutions = []
    for index, (problem, text) in enumerate(zip(problems, texts, strict=True)):
        steps = [s for s in text.split("\n\n")[: len(problem.operations) + 1] if s.strip()]
        labels = [judge_label(problem, steps[:i], step) for i, step in enumerate(steps)]
        if steps:
            solutions.append((index, steps, labels))
    return solutions


def prm_scores(prm, tokenizer, problems: list[ToyProblem], solutions: list) -> tuple[list, list]:
    """The head's P(good) and the LM head's P("+") / (P("+") + P("-")) at every step of `solutions`."""
    import torch

    chat = ChatFormat(tokenizer, thinking=True)
    tag = tokenizer.convert_tokens_to_ids(STEP_TAG)
    plus, minus = (tokenizer.convert_tokens_to_ids(t) for t in (GOOD_TOKEN, BAD_TOKEN))
    texts = [prm_input(chat, problems[i].text, steps) for i, steps, _ in solutions]
    tokenizer.padding_side = "right"
    head_scores, token_scores = [], []
    for start in range(0, len(texts), 128):
        enc = tokenizer(texts[start : start + 128], return_tensors="pt", padding=True, add_special_tokens=False)
        ids, mask = enc["input_ids"].to(prm.model.device), enc["attention_mask"].to(prm.model.device)
        with torch.no_grad():
            head, vocab = prm(ids, mask, (ids == tag) & mask.bool())
        head_scores += head.float().softmax(-1)[:, 1].tolist()
        token_scores += vocab.float()[:, [minus, plus]].softmax(-1)[:, 1].tolist()
    return head_scores, token_scores


def separation(scores: list[float], solutions: list) -> dict:
    """Pooled and within-problem AUC, right steps kept and wrong ones caught at `THRESHOLD`."""
    labels = [ok for _, _, right in solutions for ok in right]
    groups = [i for i, steps, _ in solutions for _ in steps]
    right = [s for s, ok in zip(scores, labels, strict=True) if ok]
    wrong = [s for s, ok in zip(scores, labels, strict=True) if not ok]
    pairs = wins = 0.0
    for index in set(groups):
        mine = [(s, ok) for s, ok, g in zip(scores, labels, groups, strict=True) if g == index]
        r, w = [s for s, ok in mine if ok], [s for s, ok in mine if not ok]
        if r and w:
            pairs += len(r) * len(w)
            wins += auc(r, w) * len(r) * len(w)
    return {
        "right_steps": len(right),
        "wrong_steps": len(wrong),
        "auc": auc(right, wrong),
        "within_problem_auc": wins / pairs if pairs else None,
        "right_kept": sum(s >= THRESHOLD for s in right) / max(1, len(right)),
        "wrong_caught": sum(s < THRESHOLD for s in wrong) / max(1, len(wrong)),
    }


def evaluate(args: argparse.Namespace) -> None:
    set_deterministic(0)
    tokenizer = prm_tokenizer()
    problems = held_out_problems()[: args.count]
    solutions = small_model_steps(problems, args.device)
    prm = load_prm(Path(args.weights), args.layers, tokenizer, args.device)
    head, token = prm_scores(prm, tokenizer, problems, solutions)
    metrics = {"head": separation(head, solutions), "token": separation(token, solutions)}
    log("prm", "evaluated", weights=args.weights, layers=args.layers, **metrics)
    Path(args.weights).with_suffix(".metrics.json").write_text(json.dumps(metrics, indent=1))


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m engine.toy.prm_trainer", allow_abbrev=False)
    commands = parser.add_subparsers(dest="command", required=True)
    data = commands.add_parser("data")
    data.add_argument("--out", required=True)
    data.add_argument("--seed", type=int, default=0)
    data.add_argument("--examples", type=int, default=SETTINGS["examples"])
    tr = commands.add_parser("train")
    tr.add_argument("--data", required=True)
    tr.add_argument("--init", default=str(WEIGHTS / "big.safetensors"), help="the trained big model's weights")
    tr.add_argument("--layers", type=int, default=6, help="the big model's first layers the PRM keeps")
    tr.add_argument("--out", required=True)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--steps", type=int)
    tr.add_argument("--batch", type=int)
    tr.add_argument("--lr", type=float)
    tr.add_argument("--max_seconds", type=float, default=1e9)
    tr.add_argument("--device", default="cuda")
    ev = commands.add_parser("evaluate")
    ev.add_argument("--weights", required=True)
    ev.add_argument("--layers", type=int, default=6)
    ev.add_argument("--count", type=int, default=300)
    ev.add_argument("--device", default="cuda")
    args = parser.parse_args()
    {"data": build_data, "train": train, "evaluate": evaluate}[args.command](args)


if __name__ == "__main__":
    main()
