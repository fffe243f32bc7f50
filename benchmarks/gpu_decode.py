"""What to expect on an H100 (issue 34, point 5): the seeds' model shapes, random bf16 weights,
decode captured in a CUDA graph as vLLM runs it.

For each shape (`benchmarks.gpu_shapes`; the forward pass is `benchmarks.gpu_model`):
- decode ms a token at batch 1, 4 and 16 at a 2,000-token context (and 8,000 where it fits), each
  with PyTorch's eager kernels and with the elementwise ops fused by torch.compile, the whole step
  captured in a `torch.cuda.CUDAGraph` and replayed; against the bandwidth bound (the bytes a step
  must move: weights, KV cache read / 3.35 TB/s) and the weights-only bound issue 34 names;
- a judge score: `score_tokens` new tokens on a cached 2,000-token prefix, giving the next token
  (SpecReason's score prompt after the step, its 0-9 answer from that prefill), graph-captured;
- an uncached prefill of 2,000 and 8,000 tokens (a PRM score; the others' prefill by length);
- memory: what the weights take, and the longest context at which batch 16 fits, raw and under
  vLLM's default `--gpu-memory-utilization 0.9` less the activations of the 8,000-token prefill.

Run on the GPU machine from the repository root: `python -m benchmarks.gpu_decode --out gpu.json`
(about 2 minutes on an H100). `--device cpu --shapes tiny tiny-prm` checks the script on a CPU
(no graphs, float32). The JSON is written after each shape, so a run cut short keeps what it had.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.gpu_model import Ops, forward, fused_ops, new_step, random_weights
from benchmarks.gpu_shapes import SHAPES, TINY_SHAPES, VLLM_MEMORY_SHARE, Shape

EAGER = Ops()
BATCHES = (1, 4, 16, 64)
CONTEXTS = (2000, 8000)
PREFILLS = (512, 2000, 8000)
SCORE_TOKENS = 50
PREFILL_REPEATS = 3
GIB = 2**30
# Tiny kernels in the graph that measures what one costs when replayed (`graph_kernel_us`).
FLOOR_KERNELS = 1000


class Timer:
    """Median ms of a function on `device`: captured in a CUDA graph and replayed when `graph`."""

    def __init__(self, device: str, repeats: int):
        self.device, self.repeats = device, repeats

    def median_ms(self, run: Callable[[], torch.Tensor], graph: bool, repeats: int = 0) -> float:
        repeats = repeats or self.repeats
        if self.device == "cpu":
            check_finite(run())  # warm-up: compiles, first-touch allocations
            return statistics.median(self._cpu_ms(run) for _ in range(repeats))
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for _ in range(2):  # warm-up off the default stream, as graph capture wants
                check_finite(run())
        torch.cuda.current_stream().wait_stream(stream)
        if graph:
            captured = torch.cuda.CUDAGraph()
            with torch.cuda.graph(captured):
                out = run()
            replay = captured.replay
        else:
            replay = run
        times = [self._cuda_ms(replay) for _ in range(repeats)]
        if graph:
            check_finite(out)
            del captured
        return statistics.median(times)

    @staticmethod
    def _cpu_ms(run: Callable[[], Any]) -> float:
        started = time.perf_counter()
        check_finite(run())
        return 1e3 * (time.perf_counter() - started)

    @staticmethod
    def _cuda_ms(run: Callable[[], Any]) -> float:
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        run()
        end.record()
        end.synchronize()
        return begin.elapsed_time(end)


def check_finite(out: torch.Tensor | None) -> None:
    if out is not None and out.is_floating_point() and not torch.isfinite(out).all():
        raise RuntimeError("the forward pass gave a non-finite value: the random weights overflowed")


class Bench:
    """Measures one shape with its weights in place."""

    def __init__(self, shape: Shape, device: str, dtype: torch.dtype, timer: Timer):
        self.shape, self.device, self.dtype, self.timer = shape, device, dtype, timer
        self.graph = device != "cpu"
        self.weights = random_weights(shape, device, dtype)

    def run(
        self, batch: int, new: int, start: int, cached: bool, ops: Ops = EAGER, graph: bool = True, repeats: int = 0
    ) -> float:
        """Median ms of a step of `new` tokens at `start` for `batch` sequences."""
        step = new_step(self.shape, batch, new, start, cached, self.device, self.dtype, ops)
        ms = self.timer.median_ms(lambda: forward(self.shape, self.weights, step), graph, repeats)
        step = None  # its KV cache goes before the next point allocates its own
        empty_cache(self.device)
        return ms

    def decode(self, batch: int, context: int) -> dict[str, Any]:
        """A decode step of `batch` sequences at `context` tokens, eager kernels in a graph."""
        point: dict[str, Any] = {"batch": batch, "context": context, "bound_ms": self.shape.bound_ms(batch, context)}
        if not self.fits(batch * (context + 1) * self.shape.kv_bytes_per_token):
            return {**point, "fits": False}
        point["eager_ms"] = self.run(batch, 1, context, True, graph=self.graph)
        if batch == 1:
            # for comparison with issue 34's eager figures: no graph, every kernel launched from Python
            point["no_graph_ms"] = self.run(batch, 1, context, True, graph=False)
            if self.graph:
                point["kernels"] = self.kernels(context)
        return {**point, "fits": True, "over_bound": point["eager_ms"] / point["bound_ms"]}

    def fused(self, point: dict[str, Any], ops: Ops) -> None:
        """Adds a decode point's time with the elementwise ops fused (torch.compile)."""
        if point["fits"]:
            point["fused_ms"] = self.run(point["batch"], 1, point["context"], True, ops, self.graph)
            if "kernels" in point:
                point["fused_kernels"] = self.kernels(point["context"], ops)
            point["over_bound"] = min(point["eager_ms"], point["fused_ms"]) / point["bound_ms"]

    def kernels(self, context: int, ops: Ops = EAGER) -> int:
        """GPU operations one decode step of one sequence at `context` launches."""
        step = new_step(self.shape, 1, 1, context, True, self.device, self.dtype, ops)
        count = kernels_launched(lambda: forward(self.shape, self.weights, step))
        step = None
        empty_cache(self.device)
        return count

    def score(self, context: int, tokens: int, ops: Ops = EAGER) -> float:
        """A judge's score: `tokens` new tokens after a cached `context`, batch 1."""
        return self.run(1, tokens, context, True, ops, self.graph)

    def prefill(self, tokens: int) -> dict[str, Any]:
        """An uncached prefill of `tokens` (kernels large enough that no graph is needed), batch 1."""
        reset_peak(self.device)
        ms = self.run(1, tokens, 0, False, graph=False, repeats=PREFILL_REPEATS)
        return {"tokens": tokens, "ms": ms, "peak_bytes": peak_bytes(self.device)}

    def fits(self, extra_bytes: int) -> bool:
        return self.device == "cpu" or extra_bytes < 0.95 * torch.cuda.mem_get_info()[0]

    def memory(self, activation_bytes: int) -> dict[str, Any]:
        """The longest context batch 16 fits at: in the memory left after the weights, and in vLLM's
        default share less the weights and the activations of the longest prefill."""
        if self.device == "cpu":
            return {}
        free, total = torch.cuda.mem_get_info()
        weights = self.shape.params * 2
        vllm_kv = VLLM_MEMORY_SHARE * total - weights - activation_bytes
        return {
            "total_bytes": total,
            "weight_bytes": weights,
            "batch16_context_raw": self.shape.context_that_fits(16, free - activation_bytes),
            "batch16_context_vllm": self.shape.context_that_fits(16, vllm_kv),
            "kv_tokens_vllm": self.shape.context_that_fits(1, vllm_kv),
        }


def measure_shape(shape: Shape, args: argparse.Namespace, timer: Timer) -> dict:
    """Everything about one shape with PyTorch's eager kernels (graph-captured where it counts)."""
    started = time.perf_counter()
    bench = Bench(shape, args.device, args.dtype, timer)
    result: dict[str, Any] = {
        "params": shape.params,
        "step_weight_bytes": shape.step_weight_bytes,
        "kv_bytes_per_token": shape.kv_bytes_per_token,
        "weights_bound_ms": shape.weights_bound_ms(),
    }
    result["prefill"] = [bench.prefill(tokens) for tokens in args.prefills]
    if not shape.reward_head:
        result["decode"] = [bench.decode(b, c) for c in args.contexts for b in args.batches]
        context = args.contexts[0]
        result["score"] = {"context": context, "tokens": args.score_tokens}
        result["score"]["eager_ms"] = bench.score(context, args.score_tokens)
    result["memory"] = bench.memory(max(p["peak_bytes"] for p in result["prefill"]) - shape.params * 2)
    result["seconds"] = time.perf_counter() - started
    del bench
    empty_cache(args.device)
    return result


def add_fused(result: dict[str, Any], shape: Shape, args: argparse.Namespace, timer: Timer, ops: Ops) -> None:
    """The decode points and the score again with the elementwise ops fused."""
    bench = Bench(shape, args.device, args.dtype, timer)
    for point in result["decode"]:
        bench.fused(point, ops)
    result["score"]["fused_ms"] = bench.score(result["score"]["context"], args.score_tokens, ops)
    del bench
    empty_cache(args.device)


def copy_bandwidth(device: str, timer: Timer) -> float | None:
    """Bytes read and written a second by a device-to-device copy of 2 GiB (None on a CPU)."""
    if device == "cpu":
        return None
    source = torch.randn(GIB // 4, device=device)
    target = torch.empty_like(source)
    ms = timer.median_ms(lambda: target.copy_(source), graph=False)
    return 2 * GIB / (ms / 1e3)


def kernels_launched(run: Callable[[], Any]) -> int:
    """Kernels, copies and fills one call of `run` puts on the GPU (after a warm-up call), by the profiler."""
    run()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as profile:
        run()
        torch.cuda.synchronize()
    return sum(event.device_type == torch.autograd.DeviceType.CUDA for event in profile.events())


def graph_kernel_us(device: str, timer: Timer) -> float | None:
    """Microseconds one tiny kernel takes in a replayed CUDA graph: the floor under a decode step of
    many small kernels, whatever bytes they move (None on a CPU)."""
    if device == "cpu":
        return None
    x = torch.randn(1, device=device)

    def run() -> torch.Tensor:
        for _ in range(FLOOR_KERNELS):
            x.add_(1.0)
        return x

    return 1e3 * timer.median_ms(run, graph=True) / FLOOR_KERNELS


def empty_cache(device: str) -> None:
    if device != "cpu":
        torch.cuda.empty_cache()


def reset_peak(device: str) -> None:
    if device != "cpu":
        torch.cuda.reset_peak_memory_stats()


def peak_bytes(device: str) -> int:
    return torch.cuda.max_memory_allocated() if device != "cpu" else 0


def environment(device: str) -> dict[str, Any]:
    info: dict[str, Any] = {"torch": torch.__version__, "device": device}
    if device != "cpu":
        info["gpu"] = torch.cuda.get_device_name()
        info["multiprocessors"] = torch.cuda.get_device_properties(0).multi_processor_count
    return info


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    shapes = {**SHAPES, **TINY_SHAPES}
    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, required=True, help="the JSON file to write")
    parser.add_argument("--device", default="cuda", choices=["cuda", "cpu"])
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), choices=list(shapes))
    parser.add_argument("--batches", nargs="+", type=int, default=list(BATCHES))
    parser.add_argument("--contexts", nargs="+", type=int, default=list(CONTEXTS))
    parser.add_argument("--prefills", nargs="+", type=int, default=list(PREFILLS))
    parser.add_argument("--score_tokens", type=int, default=SCORE_TOKENS)
    parser.add_argument("--repeats", type=int, default=10, help="timed runs of each point; the median is kept")
    parser.add_argument("--no_fused", action="store_true", help="eager kernels only (no torch.compile)")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here: pass --device cpu to check the script on tiny shapes")
    args.shape_table = shapes
    args.dtype = torch.bfloat16 if args.device == "cuda" else torch.float32
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    timer = Timer(args.device, args.repeats)
    report: dict[str, Any] = {**environment(args.device), "copy_bytes_per_s": copy_bandwidth(args.device, timer)}
    report["graph_kernel_us"] = graph_kernel_us(args.device, timer)
    report["shapes"] = {}
    # First every shape with eager kernels, then the fused ops (torch.compile takes a while): a run
    # cut short by the lease keeps what it measured first (the JSON is written after each shape).
    for name in args.shapes:
        report["shapes"][name] = measure_shape(args.shape_table[name], args, timer)
        args.out.write_text(json.dumps(report, indent=1))
        print(summary_line(name, report["shapes"][name]), file=sys.stderr, flush=True)
    fused, report["fused_error"] = (None, "--no_fused") if args.no_fused else checked_fused_ops(args.device, args.dtype)
    for name in args.shapes if fused else []:
        if "decode" in report["shapes"][name]:
            add_fused(report["shapes"][name], args.shape_table[name], args, timer, fused)
            args.out.write_text(json.dumps(report, indent=1))
            print(summary_line(name, report["shapes"][name]), file=sys.stderr, flush=True)
    return 0


def checked_fused_ops(device: str, dtype: torch.dtype) -> tuple[Ops | None, str | None]:
    """The torch.compile'd ops, tried once on a small input: a GPU machine is lent for one call,
    so a compiler failure there leaves the eager figures, with the error in the report."""
    ops = fused_ops()
    try:
        x = torch.randn(2, 3, 64, device=device, dtype=dtype)
        ops.add_norm(x, x, torch.ones(64, device=device, dtype=dtype))
        ops.silu_mul(x)
    except Exception as exc:  # noqa: BLE001 - any compiler failure is reported, not raised
        print(f"torch.compile failed, eager kernels only: {exc!r}", file=sys.stderr)
        return None, repr(exc)
    return ops, None


def summary_line(name: str, result: dict[str, Any]) -> str:
    decode = ", ".join(
        f"b{p['batch']}@{p['context']}: {p['over_bound'] * p['bound_ms']:.2f} ms ({p['over_bound']:.2f}x bound)"
        for p in result.get("decode", [])
        if p["fits"]
    )
    prefill = ", ".join(f"{p['tokens']}: {p['ms']:.1f} ms" for p in result["prefill"])
    return f"{name}: decode {decode}; prefill {prefill}; {result['seconds']:.0f} s"


if __name__ == "__main__":
    sys.exit(main())
