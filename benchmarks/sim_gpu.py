"""The sim server's GPU: continuous batching, iteration by iteration, at costs measured on a GPU.

A model with a `GpuCost` in the sim's config is served as vLLM's engine serves it. Requests wait
for a place in the running batch (at most `max_sequences` sequences whose contexts fit in
`kv_tokens`); while any sequence runs, the engine runs iterations back to back. One iteration
gives every running sequence its next token and prefills the prompts admitted to it (the prefill
gives their first token; a pooling request ends with its prefill). It takes

    decode_ms(sequences) + kv_ms_per_token * (their context tokens - sequences * reference_context)
    + the sum over admitted prompts of prefill_ms(cached, prompt tokens)

`decode_ms` interpolates the decode figures measured at `reference_context` tokens a sequence
(batch -> ms; beyond the last, the last segment's slope); the KV term moves each sequence's cost
with its context; only the uncached part of a prompt is prefilled, tokens c .. n costing
`prefill_ms_per_token * (n - c) + prefill_ms_per_token_squared * (n^2 - c^2)` (the second term is
attention's, which grows with each token's position). The prefix cache keeps blocks of
`block_tokens` tokens, each keyed by itself and everything before it (as vLLM's), up to
`kv_tokens` tokens, least recently used out first; at least a prompt's last token is computed.
A model without `prefix_cache` prefills every prompt whole: vLLM caches no prefix for a pooling
model with step pooling, such as Qwen2.5-Math-PRM.
Tokens are white-space separated words, as the sim's `/tokenize` counts them.
"""

from __future__ import annotations

import asyncio
import bisect
import dataclasses
from collections import OrderedDict, deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from engine.clock import WALL_CLOCK, Clock
from engine.errors import UsageError


@dataclass(frozen=True)
class GpuCost:
    """One model's cost on a GPU (`benchmarks.gpu_decode` measures the figures)."""

    decode_ms: tuple[tuple[int, float], ...]
    prefill_ms_per_token: float
    kv_ms_per_token: float = 0.0
    prefill_ms_per_token_squared: float = 0.0
    prefix_cache: bool = True
    reference_context: int = 2000
    max_sequences: int = 256
    kv_tokens: int = 1_000_000
    block_tokens: int = 16

    def __post_init__(self) -> None:
        batches = [batch for batch, _ in self.decode_ms]
        if not batches or batches != sorted(set(batches)) or batches[0] < 1:
            raise UsageError(f"decode_ms needs increasing batch sizes from 1 up, not {batches}")
        rates = (self.prefill_ms_per_token, self.prefill_ms_per_token_squared, self.kv_ms_per_token)
        if min(*rates, *(ms for _, ms in self.decode_ms)) < 0:
            raise UsageError("GPU costs cannot be negative")
        if min(self.max_sequences, self.kv_tokens, self.block_tokens) < 1:
            raise UsageError("max_sequences, kv_tokens and block_tokens must be at least 1")

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> GpuCost:
        return cls(**{**data, "decode_ms": tuple((int(b), float(ms)) for b, ms in data["decode_ms"])})

    def batch_ms(self, sequences: int) -> float:
        """Decode ms of an iteration of `sequences` at the reference context, interpolated."""
        batches = [batch for batch, _ in self.decode_ms]
        if len(batches) == 1:
            return self.decode_ms[0][1]
        right = min(max(bisect.bisect_left(batches, sequences), 1), len(batches) - 1)
        (b0, ms0), (b1, ms1) = self.decode_ms[right - 1], self.decode_ms[right]
        return ms0 + (ms1 - ms0) * (sequences - b0) / (b1 - b0)

    def prefill_ms(self, cached: int, tokens: int) -> float:
        """Ms to compute a prompt's tokens `cached .. tokens` (the first `cached` from the cache)."""
        squared = self.prefill_ms_per_token_squared * (tokens**2 - cached**2)
        return self.prefill_ms_per_token * (tokens - cached) + squared

    def iteration_ms(self, sequences: int, context_tokens: int, prefills: Iterable[tuple[int, int]] = ()) -> float:
        """One iteration's ms: `sequences` in it, their `context_tokens` in all, and the admitted
        prompts' prefills, (cached tokens, prompt tokens) each."""
        kv = self.kv_ms_per_token * (context_tokens - sequences * self.reference_context)
        return max(0.0, self.batch_ms(sequences) + kv) + sum(self.prefill_ms(c, n) for c, n in prefills)

    def scaled(self, factor: float) -> GpuCost:
        """The same GPU `factor` times faster (a benchmark runs a projection in less wall time)."""
        return dataclasses.replace(
            self,
            decode_ms=tuple((b, ms / factor) for b, ms in self.decode_ms),
            prefill_ms_per_token=self.prefill_ms_per_token / factor,
            kv_ms_per_token=self.kv_ms_per_token / factor,
            prefill_ms_per_token_squared=self.prefill_ms_per_token_squared / factor,
        )


class PrefixCache:
    """vLLM's automatic prefix cache, by blocks: which leading blocks of a prompt are cached."""

    def __init__(self, block_tokens: int, capacity_tokens: int):
        self.block_tokens = block_tokens
        self.capacity_blocks = max(1, capacity_tokens // block_tokens)
        self._blocks: OrderedDict[int, None] = OrderedDict()

    def _keys(self, words: list[str]) -> list[int]:
        keys, key = [], 0
        for start in range(0, len(words) - self.block_tokens + 1, self.block_tokens):
            key = hash((key, *words[start : start + self.block_tokens]))
            keys.append(key)
        return keys

    def lookup(self, words: list[str]) -> int:
        """Tokens of `words` served from the cache (whole leading blocks; never the last token)."""
        hits = 0
        for key in self._keys(words):
            if key not in self._blocks:
                break
            self._blocks.move_to_end(key)
            hits += 1
        return min(hits * self.block_tokens, max(0, len(words) - 1))

    def insert(self, words: list[str]) -> None:
        """Keep the full blocks of `words` (their KV was computed), dropping the least recently used."""
        for key in self._keys(words):
            self._blocks[key] = None
            self._blocks.move_to_end(key)
        while len(self._blocks) > self.capacity_blocks:
            self._blocks.popitem(last=False)


class NoPrefixCache:
    """A model's prompts are never served from a cache (`GpuCost.prefix_cache` off)."""

    def lookup(self, words: list[str]) -> int:
        return 0

    def insert(self, words: list[str]) -> None:
        pass


@dataclass(eq=False)
class Sequence:
    """One request in the engine: its prompt's words, the words it will generate, how far it got."""

    prompt: list[str]
    reply: list[str]
    submitted_at: float
    cached: int = 0
    generated: int = 0
    finished_at: float | None = None
    left: bool = False
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    @property
    def context(self) -> int:
        return len(self.prompt) + self.generated


@dataclass
class EngineStats:
    iterations: int = 0
    busy_s: float = 0.0
    prompt_tokens: int = 0
    cached_tokens: int = 0
    peak_sequences: int = 0


class BatchEngine:
    """One model's GPU: admits requests into a running batch and runs its iterations on `clock`."""

    def __init__(self, cost: GpuCost, clock: Clock):
        self.cost, self.clock = cost, clock
        self.cache = PrefixCache(cost.block_tokens, cost.kv_tokens) if cost.prefix_cache else NoPrefixCache()
        self.stats = EngineStats()
        self._waiting: deque[Sequence] = deque()
        self._running: list[Sequence] = []
        self._work = asyncio.Event()
        self._loop: asyncio.Task | None = None
        # When the last iteration was due to end: back-to-back iterations start from there, not
        # from when the sim woke up, so its late wake-ups do not add up over a long run.
        self._free_at = 0.0

    def submit(self, prompt: list[str], reply: list[str]) -> Sequence:
        """Queue a request that will generate `reply` (none: a pooling request, prefill only)."""
        sequence = Sequence(prompt, reply, self.clock.now())
        self._waiting.append(sequence)
        self._work.set()
        if self._loop is None:
            self._loop = asyncio.create_task(self._run())
        return sequence

    async def wait(self, sequence: Sequence, tokens: int) -> None:
        """Until `sequence` has generated `tokens` tokens (or, for 0, finished its prefill)."""
        while sequence.finished_at is None and (tokens == 0 or sequence.generated < tokens):
            sequence.changed.clear()
            await sequence.changed.wait()

    def leave(self, sequence: Sequence) -> None:
        """The client went away (or was answered): the engine drops the sequence at its next iteration."""
        sequence.left = True

    async def close(self) -> None:
        if self._loop is not None:
            self._loop.cancel()
            await asyncio.gather(self._loop, return_exceptions=True)

    async def _run(self) -> None:
        while True:
            if not self._waiting and not self._running:
                self._work.clear()
                await self._work.wait()
            admitted = self._admit()
            batch = [s for s in self._running if not s.left] + admitted
            if not batch:
                self._running = []
                continue
            prefills = [(s.cached, len(s.prompt)) for s in admitted]
            context = sum(s.context for s in batch)
            seconds = self.cost.iteration_ms(len(batch), context, prefills) / 1e3
            # An idle GPU starts when the first request came, not when this loop got to run.
            ready = self._free_at if self._running else min(s.submitted_at for s in admitted)
            self._free_at = max(ready, self._free_at) + seconds
            await self.clock.sleep_until(self._free_at)
            self._account(batch, seconds)
            self._running = [s for s in batch if s.finished_at is None and not s.left]

    def _admit(self) -> list[Sequence]:
        """Waiting requests, in order, while the batch has room for them and their contexts."""
        admitted: list[Sequence] = []
        used = sum(s.context for s in self._running)
        while self._waiting and len(self._running) + len(admitted) < self.cost.max_sequences:
            head = self._waiting[0]
            fits = used + len(head.prompt) <= self.cost.kv_tokens
            if not fits and (self._running or admitted):
                break
            self._waiting.popleft()
            if head.left:
                continue
            head.cached = self.cache.lookup(head.prompt)
            self.cache.insert(head.prompt)
            self.stats.prompt_tokens += len(head.prompt)
            self.stats.cached_tokens += head.cached
            used += len(head.prompt)
            admitted.append(head)
        return admitted

    def _account(self, batch: list[Sequence], seconds: float) -> None:
        stats, now = self.stats, self.clock.now()
        stats.iterations += 1
        stats.busy_s += seconds
        stats.peak_sequences = max(stats.peak_sequences, len(batch))
        for sequence in batch:
            if sequence.reply and not sequence.left:
                sequence.generated += 1
            if sequence.generated >= len(sequence.reply):
                sequence.finished_at = now
                self.cache.insert(sequence.prompt + sequence.reply)
            sequence.changed.set()


class GpuPacer:
    """A request's tokens as the simulated GPU makes them."""

    def __init__(self, engine: BatchEngine, sequence: Sequence):
        self.engine, self.sequence = engine, sequence

    @property
    def cached_tokens(self) -> int:
        return self.sequence.cached

    async def until(self, tokens: int) -> None:
        await self.engine.wait(self.sequence, tokens)

    def due(self, tokens: int) -> float:
        return self.sequence.finished_at if self.sequence.finished_at is not None else self.engine.clock.now()

    def generated(self, tokens: int) -> int:
        return self.sequence.generated


class LagFreeClock(Clock):
    """A clock that forgives its own late wake-ups: when a sleep ends late (the sim's process
    waited for a CPU), the time it overslept is taken off `now()` from then on, as if the whole
    sim had paused. A projection on a loaded machine then counts the GPU's time, not the CPU's
    queue; the benchmarks that measure the engine against the sim keep the wall clock."""

    def __init__(self, inner: Clock = WALL_CLOCK):
        self.inner, self.forgiven = inner, 0.0

    def now(self) -> float:
        return self.inner.now() - self.forgiven

    async def sleep(self, seconds: float) -> None:
        await self.sleep_until(self.now() + seconds)

    async def sleep_until(self, deadline: float) -> None:
        await self.inner.sleep_until(deadline + self.forgiven)
        self.forgiven += max(0.0, self.now() - deadline)
