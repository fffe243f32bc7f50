"""RAST's two decoding modes on vLLM-CPU (issue 19): tokens per second at short and long prefixes.

    python -m benchmarks.rast_vllm [--prefixes 100,1000,4000] [--tokens 64] [--repeats 3]

Serves the costly big toy model as RAST's base and two models that differ as positive and negative
(the small toy model and the trained big one: the toy world has one small model, and the trained
big model costs a small multiple of it, not of the base), all with spectra's CPU settings. For each
prefix length, a prefix of that many tokens of toy reasoning (distinct per repeat, so no repeat finds
another's cache) is first prefilled on all three servers, as a running sample's prefix is cached by
the time it is that long; then `--tokens` tokens are decoded by the base model alone (the ceiling),
by RAST in token mode (three one-token requests a token, which find the prefix cached) and in
speculative mode (a base draft of `gamma` + 1 tokens, then the positive and negative models score the
chunk with `prompt_logprobs`, which vLLM computes over the whole prompt). Prints the median tokens/s
of each at each prefix, and which mode is faster.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import aiohttp
from transformers import AutoTokenizer

from engine import loop
from engine.logging import configure_logging
from engine.reasoning.rast.decoding import ROLES, RastModels, RastSampling, rast_decode
from engine.reasoning.rast.vocab import rast_server_args, shared_token_space
from engine.serving.client import ModelClient
from engine.serving.models import NO_SPECIAL_TOKENS
from engine.serving.servers import serve_models
from engine.serving.vllm_command import ServerSpec
from engine.toy.task import held_out_problems
from engine.toy.trained import MAX_POSITIONS, make_toy_models

MODES = ("base alone", "token", "speculative")


def prefix_ids(tokenizer, length: int, repeat: int) -> list[int]:
    """`length` tokens of toy problems and their solutions, starting at a problem that depends on
    `repeat` (each repeat its own prefix)."""
    problems = held_out_problems()
    ids: list[int] = []
    i = 1000 * repeat
    while len(ids) < length:
        problem = problems[i % len(problems)]
        ids += tokenizer(f"{problem.text}\n{problem.solution()}\n\n")["input_ids"]
        i += 1
    return ids[:length]


async def tokens_per_s(models: RastModels, space, mode: str, ids: list[int], tokens: int, seed: int) -> float:
    for client in (models.base, models.positive, models.negative):  # the prefix, cached as in a run
        await client.complete(ids, max_tokens=1, temperature=0.0, extra=dict(NO_SPECIAL_TOKENS))
    started = time.perf_counter()
    if mode == "base alone":
        completion = await models.base.complete(
            ids, max_tokens=tokens, temperature=1.0, top_p=1.0, seed=seed, extra={"ignore_eos": True}
        )
        generated = completion.completion_tokens
    else:
        out = await rast_decode(models, ids, RastSampling(max_tokens=tokens, mode=mode), space, seed=seed)
        generated = len(out.token_ids)
    return generated / (time.perf_counter() - started)


async def bench(args: argparse.Namespace) -> list[tuple[int, dict[str, float]]]:
    toy = make_toy_models(Path(args.models_dir))
    paths = {"base": toy.costly_big, "positive": toy.small, "negative": toy.big}
    tokenizers = {role: AutoTokenizer.from_pretrained(path) for role, path in paths.items()}
    space = shared_token_space(tokenizers)
    specs = [
        ServerSpec(
            name=role,
            model=str(path),
            dtype="float32",
            max_model_len=MAX_POSITIONS,
            extra_args=rast_server_args(RastSampling().aux_logprobs),
        )
        for role, path in paths.items()
    ]
    table = []
    async with serve_models(specs, log_dir=Path(args.out) / "server-logs") as running:
        async with aiohttp.ClientSession() as session:
            models = RastModels(*(ModelClient(session, running[r].model, [running[r].url]) for r in ROLES))
            for length in args.prefixes:
                rates: dict[str, list[float]] = {mode: [] for mode in MODES}
                for repeat in range(args.repeats):
                    # Modes alternate within a repeat, each on its own prefix: drift hits all alike.
                    for m, mode in enumerate(MODES):
                        ids = prefix_ids(tokenizers["base"], length, 3 * repeat + m)
                        rates[mode].append(await tokens_per_s(models, space, mode, ids, args.tokens, seed=repeat))
                print(f"measured prefix {length}", file=sys.stderr, flush=True)
                table.append((length, {mode: statistics.median(r) for mode, r in rates.items()}))
    return table


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        allow_abbrev=False, prog="python -m benchmarks.rast_vllm", description=__doc__.splitlines()[0]
    )
    parser.add_argument(
        "--prefixes",
        type=lambda text: [int(x) for x in text.split(",")],
        default=[100, 1000, 4000],
        help="prefix lengths in tokens, comma-separated (default 100,1000,4000)",
    )
    parser.add_argument("--tokens", type=int, default=64, help="tokens decoded per measurement (default 64)")
    parser.add_argument("--repeats", type=int, default=3, help="measurements per prefix and mode; the median is kept")
    parser.add_argument("--out", default="results/rast_vllm", help="server logs")
    parser.add_argument("--models_dir", default=str(Path.home() / ".cache" / "spectra" / "toy-models"))
    args = parser.parse_args(argv)
    configure_logging(json=False, level="warning")
    table = loop.run(bench(args))
    print(f"RAST on vLLM-CPU: tokens/s over {args.tokens} tokens, median of {args.repeats}; costly big as base")
    print(f"{'prefix':>7}  " + "  ".join(f"{mode:>12}" for mode in MODES) + "  faster mode")
    for length, rates in table:
        faster = max(("token", "speculative"), key=lambda mode: rates[mode])
        print(f"{length:>7}  " + "  ".join(f"{rates[mode]:>12.1f}" for mode in MODES) + f"  {faster}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
