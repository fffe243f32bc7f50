"""Trains the toy pair (engine/toy/trained.py) on the toy task; run on a GPU, once, by a developer.

    python -m engine.toy.trainer tokenizer engine/toy/weights/tokenizer
    python -m engine.toy.trainer train --role big --out OUT --seed 0
    python -m engine.toy.trainer train --role small --out OUT --seed 0
    python -m engine.toy.trainer evaluate --weights OUT

Plain PyTorch on Qwen2ForCausalLM, loss on the assistant's part only, on the conversations of
`engine.toy.training_data`. Deterministic for a seed on one machine: seeded data, fixed batch
order, torch deterministic algorithms, eager attention.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import random
import re
import time
from pathlib import Path

from engine.serving.chat import ChatFormat, Message
from engine.toy.task import TRAIN_SEED, ToyProblem, held_out_problems, judge_label, problem_stream
from engine.toy.training_data import GENERATION_THINK, REPO, build_data, dev_problems, load_texts

# ---- training ----

SETTINGS = {
    # steps, batch, distinct examples (repeated in epochs), peak lr, share of judging examples,
    # evaluate on the dev problems every so many steps
    "big": {"model": "big", "steps": 6000, "batch": 192, "examples": 576_000, "lr": 1.5e-3, "judge_share": 0.45},
    # Second stage of the big model, from the first's weights: mostly the scoring conversation.
    "big_judge": {
        "model": "big",
        "steps": 3000,
        "batch": 192,
        "examples": 300_000,
        "lr": 5e-4,
        "judge_share": 0.65,
        "problem_offset": 50_000,
    },
    # Third stage, from the second's weights: the `default` prompt set's indented wording, and more
    # judging of the small model's kind of mistake (a slipped digit).
    "big_retune": {
        "model": "big",
        "steps": 2000,
        "batch": 192,
        "examples": 240_000,
        "lr": 4e-4,
        "judge_share": 0.5,
        "problem_offset": 90_000,
    },
    # Trained to its capacity on solutions whose results slip a digit at `slip_rate` a step: its
    # mistakes are random, not systematic (see `slipped_solution`).
    "small": {
        "model": "small",
        "steps": 4000,
        "batch": 128,
        "examples": 512_000,
        "lr": 1.5e-3,
        "judge_share": 0.0,
        "slip_rate": 0.4,
        "eval_every": 500,
    },
    # The task variant for DeepConf (issue 22), from the small model's weights: the same slips, and
    # once a trace has slipped, random results (`slipped_solution`'s `lost_after_slip`).
    "small_lost": {
        "model": "small",
        "steps": 3000,
        "batch": 128,
        "examples": 384_000,
        "lr": 5e-4,
        "judge_share": 0.0,
        "slip_rate": 0.3,
        "lost_after_slip": True,
        "problem_offset": 130_000,
        "eval_every": 500,
    },
}


def set_deterministic(seed: int):
    import numpy as np
    import torch

    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    torch.backends.cudnn.benchmark = False
    torch.backends.cuda.matmul.allow_tf32 = False
    torch.use_deterministic_algorithms(True, warn_only=True)
    return torch


def new_model(role: str, tokenizer, seed: int):
    import torch
    from transformers import Qwen2ForCausalLM

    from engine.toy.trained import toy_config

    torch.manual_seed(seed)
    config = toy_config(role, tokenizer)
    config._attn_implementation = "eager"
    return Qwen2ForCausalLM(config)


def batches(data: list, batch: int, steps: int, seed: int, pad_id: int, device: str):
    """`steps` batches, each epoch over `data` in a new seeded order."""
    import numpy as np
    import torch

    rng = np.random.default_rng(seed)
    per_epoch = len(data) // batch
    order = np.concatenate([rng.permutation(len(data))[: per_epoch * batch] for _ in range(-(-steps // per_epoch))])
    for start in range(0, steps * batch, batch):
        rows = [data[i] for i in order[start : start + batch]]
        width = max(len(ids) for ids, _ in rows)
        ids = torch.full((batch, width), pad_id, dtype=torch.long)
        weights = torch.zeros((batch, width))
        mask = torch.zeros((batch, width), dtype=torch.long)
        for r, (row_ids, row_weights) in enumerate(rows):
            ids[r, : len(row_ids)] = torch.from_numpy(row_ids.astype(np.int64))
            weights[r, : len(row_ids)] = torch.from_numpy(row_weights.astype(np.float32))
            mask[r, : len(row_ids)] = 1
        yield ids.to(device), weights.to(device), mask.to(device)


def train(args: argparse.Namespace) -> None:
    from transformers import PreTrainedTokenizerFast

    torch = set_deterministic(args.seed)
    settings = {**SETTINGS[args.role], **{k: v for k, v in vars(args).items() if k in SETTINGS[args.role] and v}}
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(args.tokenizer)
    started = time.monotonic()
    data = build_data(settings, args.role, args.seed, args.tokenizer, args.prompts)
    log(args.role, "data", examples=len(data), seconds=round(time.monotonic() - started, 1))
    if args.init:
        model = load_model(settings["model"], tokenizer, Path(args.init), args.device).train()
    else:
        model = new_model(settings["model"], tokenizer, args.seed).to(args.device)
    steps = settings["steps"]
    optimizer, scheduler = optimizer_and_schedule(model, settings["lr"], Schedule(steps))
    dev = dev_problems()
    history = []
    step = 0
    for step, (ids, weights, mask) in enumerate(
        batches(data, settings["batch"], steps, args.seed, tokenizer.pad_token_id, args.device)
    ):
        model.train()
        with torch.autocast(args.device, dtype=torch.bfloat16):
            logits = model(input_ids=ids, attention_mask=mask).logits
        losses = torch.nn.functional.cross_entropy(
            logits[:, :-1].float().reshape(-1, logits.size(-1)), ids[:, 1:].reshape(-1), reduction="none"
        )
        target_weights = weights[:, 1:].reshape(-1)
        loss = (losses * target_weights).sum() / target_weights.sum()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        if step % 100 == 0:
            log(args.role, "step", step=step, loss=round(loss.item(), 4), seconds=round(time.monotonic() - started, 1))
        every = settings.get("eval_every")
        if every and (step + 1) % every == 0:
            accuracy = solve_accuracy(model, tokenizer, dev, temperature=0.6, seed=args.seed)
            history.append({"step": step + 1, "dev_accuracy_t06": accuracy})
            log(args.role, "eval", step=step + 1, accuracy=accuracy)
        if args.stop_at and step + 1 >= args.stop_at:
            break
        if time.monotonic() - started > args.max_seconds:
            log(args.role, "time_guard", stopped_after_step=step + 1)
            break
    meta = {"settings": settings, "init": args.init, "steps_done": step + 1, "history": history}
    save_outputs(settings["model"], model, out, meta)


class Schedule:
    """The learning rate's factor at a step: a linear warm-up over `warmup` steps, then a cosine
    down to a tenth at `steps`. During the warm-up the factor does not depend on `steps`, so a run
    may still fit `steps` to its time then and be reproduced by a run given that many steps."""

    def __init__(self, steps: int, warmup: int = 200):
        self.steps, self.warmup = steps, warmup

    def __call__(self, step: int) -> float:
        if step < self.warmup:
            return (step + 1) / self.warmup
        progress = (step - self.warmup) / max(1, self.steps - self.warmup)
        return 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * progress))


def optimizer_and_schedule(model, lr: float, schedule: Schedule):
    """AdamW (weight decay 0.1 on matrices only) and its learning rate following `schedule`."""
    import torch

    decay = [p for p in model.parameters() if p.dim() >= 2]
    rest = [p for p in model.parameters() if p.dim() < 2]
    optimizer = torch.optim.AdamW(
        [{"params": decay, "weight_decay": 0.1}, {"params": rest, "weight_decay": 0.0}], lr=lr, betas=(0.9, 0.98)
    )
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


def bf16_state(model) -> dict:
    import torch

    return {
        k: v.detach().to(torch.bfloat16).cpu().clone() for k, v in model.state_dict().items() if k != "lm_head.weight"
    }


def save_outputs(role: str, model, out: Path, meta: dict) -> None:
    """The last state, in bf16 (what ships), and the run's settings and history."""
    from safetensors.torch import save_file

    save_file(bf16_state(model), str(out / f"{role}.safetensors"))
    (out / f"{role}_meta.json").write_text(json.dumps(meta, indent=1))


def log(role: str, event: str, **fields) -> None:
    print(json.dumps({"role": role, "event": event, **fields}), flush=True)


# ---- in-process evaluation (GPU) ----


def solve_prompts(problems: list[ToyProblem], tokenizer, template: int = 0) -> list[str]:
    """First requests of SpecReason's loop; `template` 0 is the `default` prompt set, 1 `clean`."""
    chat = ChatFormat(tokenizer, thinking=True)
    text = load_texts(PROMPTS_DEFAULT)["problem_templates"][template]
    return [chat.render([Message("user", text.replace("{problem}", p.text))], GENERATION_THINK) for p in problems]


PROMPTS_DEFAULT = REPO / "prompts"


def generate(model, tokenizer, prompts: list[str], *, temperature: float, seed: int, max_new_tokens: int = 120) -> list:
    import torch

    tokenizer.padding_side = "left"
    model.eval()
    outputs = []
    torch.manual_seed(seed)
    for start in range(0, len(prompts), 256):
        enc = tokenizer(prompts[start : start + 256], return_tensors="pt", padding=True, add_special_tokens=False)
        enc = {k: v.to(model.device) for k, v in enc.items()}
        sampling = {"do_sample": True, "temperature": temperature, "top_p": 0.95} if temperature > 0 else {}
        with torch.no_grad():
            generated = model.generate(
                **enc,
                max_new_tokens=max_new_tokens,
                eos_token_id=tokenizer.eos_token_id,
                pad_token_id=tokenizer.pad_token_id,
                **({"do_sample": False} | sampling),
            )
        new = generated[:, enc["input_ids"].shape[1] :]
        outputs += tokenizer.batch_decode(new, skip_special_tokens=True)
    return outputs


def boxed(text: str) -> int | None:
    found = re.findall(r"\\boxed\{(-?\d+)\}", text)
    return int(found[-1]) if found else None


def solve_accuracy(
    model, tokenizer, problems: list[ToyProblem], *, temperature: float, seed: int, template: int = 0
) -> float:
    prompts = solve_prompts(problems, tokenizer, template)
    texts = generate(model, tokenizer, prompts, temperature=temperature, seed=seed)
    return sum(boxed(t) == p.answer for p, t in zip(problems, texts, strict=True)) / len(problems)


def vote_accuracy(model, tokenizer, problems: list[ToyProblem], *, tracks: int, seed: int) -> dict:
    """Accuracy of one sample and of the majority of `tracks` samples at temperature 0.6."""
    from collections import Counter

    prompts = [p for p in solve_prompts(problems, tokenizer) for _ in range(tracks)]
    answers = [boxed(t) for t in generate(model, tokenizer, prompts, temperature=0.6, seed=seed)]
    per_problem = [answers[i * tracks : (i + 1) * tracks] for i in range(len(problems))]
    single = sum(a == p.answer for p, got in zip(problems, per_problem, strict=True) for a in got)
    voted = sum(
        Counter(a for a in got if a is not None).most_common(1)[0][0] == p.answer
        for p, got in zip(problems, per_problem, strict=True)
        if any(a is not None for a in got)
    )
    return {"single": single / len(answers), f"majority_of_{tracks}": voted / len(problems)}


def judge_scores(big, tokenizer, conversations: list) -> list[float]:
    """Expected 0-9 score of the big model for each (problem, previous steps, step) with the default wording."""
    import torch

    chat = ChatFormat(tokenizer, thinking=True)
    texts = load_texts(PROMPTS_DEFAULT)
    digit_ids = [tokenizer.convert_tokens_to_ids(d) for d in "0123456789"]
    prompts = []
    for problem, previous, step in conversations:
        user = texts["problem_templates"][0].replace("{problem}", problem.text)
        reasoning = GENERATION_THINK + "\n\n".join([*previous, step]) + "\n\n"
        messages = [Message("user", user), Message("assistant", reasoning), Message("user", texts["score"][0])]
        prompts.append(chat.render(messages, texts["score_prefix"][0]))
    tokenizer.padding_side = "left"
    scores = []
    for start in range(0, len(prompts), 256):
        enc = tokenizer(prompts[start : start + 256], return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.no_grad():
            logits = big(**{k: v.to(big.device) for k, v in enc.items()}).logits[:, -1].float()
        probs = torch.softmax(logits[:, digit_ids], dim=-1)
        scores += (probs * torch.arange(10, device=probs.device)).sum(-1).tolist()
    return scores


def auc(positives: list[float], negatives: list[float]) -> float | None:
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def load_model(role: str, tokenizer, weights: Path, device: str):
    import torch
    from safetensors.torch import load_file

    model = new_model(role, tokenizer, 0)
    state = {k: v.to(torch.float32) for k, v in load_file(str(weights)).items()}
    model.load_state_dict(state, strict=False)
    model.tie_weights()
    return model.to(device).eval()


def evaluate(args: argparse.Namespace) -> None:
    """Accuracy on the held-out problems with the `default` and `clean` wordings, voting, and the
    judge's separation of each small model's steps; every `small*.safetensors` beside `big`."""
    from transformers import PreTrainedTokenizerFast

    set_deterministic(0)
    tokenizer = PreTrainedTokenizerFast.from_pretrained(args.tokenizer)
    weights = Path(args.weights)
    problems = held_out_problems()[: args.count]

    def accuracies(model) -> dict:
        return {
            "greedy": solve_accuracy(model, tokenizer, problems, temperature=0.0, seed=1),
            "t06": solve_accuracy(model, tokenizer, problems, temperature=0.6, seed=1),
            "t06_clean": solve_accuracy(model, tokenizer, problems, temperature=0.6, seed=1, template=1),
        }

    big = load_model("big", tokenizer, weights / "big.safetensors", args.device)
    metrics = {"big": accuracies(big)}
    log("big", "evaluated", **metrics["big"])
    for name in sorted(p.name for p in weights.glob("small*.safetensors")):
        small = load_model("small", tokenizer, weights / name, args.device)
        metrics[name] = {
            **accuracies(small),
            **vote_accuracy(small, tokenizer, problems, tracks=8, seed=3),
            "judge": judge_metrics(big, small, tokenizer, problems),
            "deepconf_auc": confidence_auc(small, tokenizer, problems[:100], tracks=16),
        }
        log("small", "evaluated", weights=name, **metrics[name])
    (weights / "metrics.json").write_text(json.dumps(metrics, indent=1))


def judge_metrics(big, small, tokenizer, problems: list[ToyProblem]) -> dict:
    """AUC of the big model's scores on the small model's own steps (T=0.6), labelled by recomputation."""
    texts = generate(small, tokenizer, solve_prompts(problems, tokenizer), temperature=0.6, seed=2)
    conversations, labels = [], []
    for problem, text in zip(problems, texts, strict=True):
        steps = text.split("\n\n")
        for i, step in enumerate(steps[: len(problem.operations) + 1]):
            conversations.append((problem, steps[:i], step))
            labels.append(judge_label(problem, steps[:i], step))
    scores = judge_scores(big, tokenizer, conversations)
    right = [s for s, ok in zip(scores, labels, strict=True) if ok]
    wrong = [s for s, ok in zip(scores, labels, strict=True) if not ok]
    return {
        "steps": len(labels),
        "wrong_steps": len(wrong),
        "auc": auc(right, wrong),
        "right_kept_at_7": sum(s >= 7 for s in right) / max(1, len(right)),
        "wrong_caught_below_7": sum(s < 7 for s in wrong) / max(1, len(wrong)),
    }


def confidence_auc(model, tokenizer, problems: list[ToyProblem], *, tracks: int, top_k: int = 20) -> dict:
    """Within-problem AUC of DeepConf's trace confidence (the mean over the trace's tokens of minus the
    mean top-k logprob) on `tracks` samples a problem at T=0.6: the chance that a right trace of a
    problem is more confident than a wrong one of the same problem."""
    import torch

    prompts = [p for p in solve_prompts(problems, tokenizer) for _ in range(tracks)]
    texts = generate(model, tokenizer, prompts, temperature=0.6, seed=4)
    confidences = []
    for prompt, text in zip(prompts, texts, strict=True):
        prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
        text_ids = tokenizer(text, add_special_tokens=False)["input_ids"]
        ids = torch.tensor([prompt_ids + text_ids], device=model.device)
        with torch.no_grad():
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
        top = torch.log_softmax(logits, dim=-1).topk(top_k, dim=-1).values
        confidences.append(float((-top.mean(-1)).mean()) if len(text_ids) else 0.0)
    pairs = right_wins = 0.0
    for i, problem in enumerate(problems):
        window = slice(i * tracks, (i + 1) * tracks)
        scored = [(c, boxed(t) == problem.answer) for c, t in zip(confidences[window], texts[window], strict=True)]
        right = [c for c, ok in scored if ok]
        wrong = [c for c, ok in scored if not ok]
        pairs += len(right) * len(wrong)
        right_wins += sum((r > w) + 0.5 * (r == w) for r in right for w in wrong)
    return {"pairs": pairs, "auc": right_wins / pairs if pairs else None}


# ---- tokenizer ----


def tokenizer_corpus(prompts_dir: Path) -> list[str]:
    """Prompt texts many times over, plus problems and solutions, so prompts become few tokens."""
    texts = load_texts(prompts_dir)
    prompt_texts = [
        *(t.replace("{problem}", "") for t in texts["problem_templates"]),
        *texts["instructions"],
        *texts["method_descriptions"],
        *texts["score"],
        *texts["score_prefix"],
        texts["answer"],
        texts["select_methods"],
    ]
    stream = problem_stream(TRAIN_SEED + 7)
    solved = [f"{p.text}\n<think>\n{p.solution()}" for p in (next(stream) for _ in range(3000))]
    return prompt_texts * 40 + solved


def make_tokenizer(args: argparse.Namespace) -> None:
    from engine.toy.trained import build_toy_tokenizer

    tokenizer = build_toy_tokenizer(tokenizer_corpus(Path(args.prompts)))
    tokenizer.save_pretrained(args.directory)
    print(f"tokenizer: {len(tokenizer)} tokens -> {args.directory}")


def main() -> None:
    parser = argparse.ArgumentParser(allow_abbrev=False, prog="python -m engine.toy.trainer")
    commands = parser.add_subparsers(dest="command", required=True)
    tok = commands.add_parser("tokenizer", allow_abbrev=False)
    tok.add_argument("directory")
    tok.add_argument("--prompts", default=str(REPO / "prompts"))
    tr = commands.add_parser("train", allow_abbrev=False)
    tr.add_argument("--role", choices=tuple(SETTINGS), required=True)
    tr.add_argument("--out", required=True)
    tr.add_argument("--seed", type=int, default=0)
    tr.add_argument("--tokenizer", default=str(REPO / "engine" / "toy" / "weights" / "tokenizer"))
    tr.add_argument("--prompts", default=str(REPO / "prompts"))
    tr.add_argument("--init", help="start from these weights (the big model's second stage)")
    tr.add_argument("--steps", type=int)
    tr.add_argument("--batch", type=int)
    tr.add_argument("--examples", type=int)
    tr.add_argument("--slip_rate", type=float, help="the small model's chance of a slipped digit a step")
    tr.add_argument("--stop_at", type=int, help="stop after this step (reproduces a run the time guard cut)")
    tr.add_argument("--max_seconds", type=float, default=1e9)
    tr.add_argument("--device", default="cuda")
    ev = commands.add_parser("evaluate", allow_abbrev=False)
    ev.add_argument("--weights", required=True)
    ev.add_argument("--tokenizer", default=str(REPO / "engine" / "toy" / "weights" / "tokenizer"))
    ev.add_argument("--count", type=int, default=500)
    ev.add_argument("--device", default="cuda")
    args = parser.parse_args()
    {"tokenizer": make_tokenizer, "train": train, "evaluate": evaluate}[args.command](args)


if __name__ == "__main__":
    main()
