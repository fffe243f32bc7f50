"""A simulated vLLM OpenAI-compatible server whose answers end spectra tracks deterministically.

It serves `/v1/completions` (streamed as server-sent events with `stream_options.include_usage`,
or whole), `/tokenize`, `/v1/models`, `/health`, and its counters at `GET /stats`. What it
answers, and its latency model, are in `benchmarks.sim_behaviour`: a request first takes its
model's `request_cpu_s` of serial work, one request at a time in arrival order (as vLLM's one
API-server process handles HTTP, JSON and tokenisation), then `request_s` plus `token_s` per
generated token, and up to `capacity` requests of a model decode at once at full speed while more
wait for a free slot (a simple model of continuous batching).

With `fault_rate` > 0 a completion request fails that often (drawn in arrival order from a
generator seeded with `seed`) in one of `fault_kinds`: HTTP 500 or 503, a connection reset
mid-stream, a stall of `stall_s` mid-stream (longer than the client's stall timeout), or a body
cut short (a stream without `[DONE]`, or half a JSON document).

A model with a `GpuCost` in `SimConfig.gpu` is served instead by a simulated GPU
(`benchmarks.sim_gpu`): continuous batching iteration by iteration at measured decode and prefill
costs, with a prefix cache whose hits the usage reports (`prompt_tokens_details.cached_tokens`).
`/pooling` serves a process reward model's step rows (`plan_pooling`).

Run it in its own process (`python -m benchmarks.sim_server --port 0 --config JSON`) so it does
not compete with the engine for the event loop; it prints one line `sim_server_ready <url>`.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import random
import signal
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import msgspec
from aiohttp import web

from benchmarks.sim_behaviour import (
    FAULT_KINDS,
    LatencyPacer,
    Reply,
    SimConfig,
    plan_pooling,
    plan_reply,
    prompt_words,
    request_kind,
    unit_hash,
)
from benchmarks.sim_gpu import BatchEngine, GpuPacer, LagFreeClock
from benchmarks.sim_payloads import completion_payload, pooling_payload
from engine.clock import WALL_CLOCK, Clock

READY_PREFIX = "sim_server_ready "
Pacer = LatencyPacer | GpuPacer
# msgspec, not the standard library: json.dumps of a RAST scoring answer (prompt_logprobs for every
# prefix token) took milliseconds of the sim's CPU, which the engine's process competes for.
_encode_json = msgspec.json.Encoder().encode
_decode_json = msgspec.json.decode


@dataclass
class SimStats:
    """What the sim served: requests by kind, faults by kind, peaks of concurrency."""

    requests: dict[str, int] = field(
        default_factory=lambda: {"step": 0, "score": 0, "answer": 0, "rast": 0, "pool": 0, "tokenize": 0}
    )
    served: int = 0
    faults: dict[str, int] = field(default_factory=lambda: {kind: 0 for kind in FAULT_KINDS})
    disconnects: int = 0
    queued: int = 0
    in_flight: int = 0
    peak_in_flight: int = 0
    # seconds (on the sim's clock) with at least one request in flight: a client's latency less
    # the time it had none at the sim (its own work between requests)
    occupied_s: float = 0.0
    decoding: dict[str, int] = field(default_factory=dict)
    peak_decoding: dict[str, int] = field(default_factory=dict)
    completion_tokens: int = 0
    aborted_tokens: int = 0
    late_s_total: float = 0.0
    late_s_max: float = 0.0
    serial_wait_s_total: float = 0.0
    # per model served by a simulated GPU: iterations, busy seconds, prompt and cached tokens
    gpu: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """The counters, and the CPU time the sim's process has used (it runs alone in it)."""
        return {**dataclasses.asdict(self), "cpu_s": time.process_time()}


class SimServer:
    """The simulated server; `async with SimServer(config) as server:` serves at `server.url`.
    Its latency model reads and waits on `clock` (a test passes one it moves itself)."""

    def __init__(self, config: SimConfig, clock: Clock = WALL_CLOCK):
        self.config = config
        self.clock = clock
        self.stats = SimStats(decoding={m: 0 for m in config.models}, peak_decoding={m: 0 for m in config.models})
        self.url = ""
        self._faults = random.Random(config.seed)
        self._slots = {name: asyncio.Semaphore(latency.capacity) for name, latency in config.models.items()}
        # When each model's serial worker is next free (on `clock`).
        self._serial_free = dict.fromkeys(config.models, 0.0)
        self._occupied_since = 0.0
        self.engines = {name: BatchEngine(cost, clock) for name, cost in config.gpu.items()}
        self._runner: web.AppRunner | None = None

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application()
        app.router.add_post("/v1/completions", self._completions)
        app.router.add_post("/pooling", self._pooling)
        app.router.add_post("/tokenize", self._tokenize)
        app.router.add_get("/v1/models", self._models)
        app.router.add_get("/health", self._health)
        app.router.add_get("/stats", self._stats)
        # handler_cancellation: a client that goes away cancels its handler, as vLLM aborts the request.
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port, backlog=1024)
        await site.start()
        bound_port = site._server.sockets[0].getsockname()[1]
        self.url = f"http://{host}:{bound_port}"
        return self.url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
        for engine in self.engines.values():
            await engine.close()

    async def __aenter__(self) -> SimServer:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    async def _health(self, request: web.Request) -> web.Response:
        return web.Response(text="")

    async def _stats(self, request: web.Request) -> web.Response:
        self.stats.gpu = {name: dataclasses.asdict(engine.stats) for name, engine in self.engines.items()}
        return _json_response(self.stats.to_dict())

    async def _models(self, request: web.Request) -> web.Response:
        data = [{"id": name, "object": "model", "owned_by": "sim"} for name in self.config.models]
        return _json_response({"object": "list", "data": data})

    async def _tokenize(self, request: web.Request) -> web.Response:
        body = _decode_json(await request.read())
        self.stats.requests["tokenize"] += 1
        tokens = [int(unit_hash(word) * 50_000) for word in str(body.get("prompt", "")).split()]
        return _json_response({"tokens": tokens, "count": len(tokens), "max_model_len": 32768})

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        # The latency model counts from here, so the sim's own parsing and planning come out of
        # `request_s` instead of adding to it.
        arrived = self.clock.now()
        body = _decode_json(await request.read())
        model = body.get("model")
        if model not in self.config.models:
            return _error(404, f"The model `{model}` does not exist.")
        kind = request_kind(body, self.config.delimiter)
        self.stats.requests[kind] += 1
        fault = self._draw_fault()
        stats = self.stats
        self._entered()
        try:
            arrived = await self._serial_work(model, arrived)
            if fault in ("http_500", "http_503"):
                return _error(int(fault[-3:]), "simulated server failure")
            reply = plan_reply(kind, body, self.config)
            async with self._pacer(model, body, reply, arrived) as pacer:
                try:
                    if body.get("stream"):
                        return await self._stream(request, body, reply, pacer, fault)
                    return await self._whole(request, body, reply, pacer, fault)
                except (asyncio.CancelledError, ConnectionResetError):
                    self.stats.aborted_tokens += pacer.generated(len(reply.tokens))
                    raise
        except (asyncio.CancelledError, ConnectionResetError):
            stats.disconnects += 1
            raise
        finally:
            self._left()

    def _entered(self) -> None:
        stats = self.stats
        if stats.in_flight == 0:
            self._occupied_since = self.clock.now()
        stats.in_flight += 1
        stats.peak_in_flight = max(stats.peak_in_flight, stats.in_flight)

    def _left(self) -> None:
        self.stats.in_flight -= 1
        if self.stats.in_flight == 0:
            self.stats.occupied_s += self.clock.now() - self._occupied_since

    async def _pooling(self, request: web.Request) -> web.Response:
        """A process reward model's rows for the step tags of `input` (vLLM's `/pooling`)."""
        arrived = self.clock.now()
        body = _decode_json(await request.read())
        model, text = body.get("model"), str(body.get("input", ""))
        if model not in self.config.models:
            return _error(404, f"The model `{model}` does not exist.")
        self.stats.requests["pool"] += 1
        self._entered()
        try:
            arrived = await self._serial_work(model, arrived)
            async with self._pacer(model, body, Reply([], "stop", None), arrived) as pacer:
                await pacer.until(0)
        finally:
            self._left()
        self.stats.served += 1
        payload = pooling_payload(model, plan_pooling(text, self.config), len(prompt_words(text)))
        return _json_response(payload)

    def _draw_fault(self) -> str | None:
        if self.config.fault_rate <= 0 or self._faults.random() >= self.config.fault_rate:
            return None
        fault = self._faults.choice(self.config.fault_kinds)
        self.stats.faults[fault] += 1
        return fault

    async def _serial_work(self, model: str, arrived: float) -> float:
        """Wait for the request's turn at the model's serial worker and its `request_cpu_s` there;
        when it is done. A virtual clock rather than a lock, so the sim's own late wake-ups do not
        add up over many requests."""
        cost = self.config.models[model].request_cpu_s
        if cost <= 0:
            return arrived
        start = max(arrived, self._serial_free[model])
        done = self._serial_free[model] = start + cost
        self.stats.serial_wait_s_total += start - arrived
        await self.clock.sleep_until(done)
        return done

    @asynccontextmanager
    async def _pacer(self, model: str, body: dict[str, Any], reply: Reply, arrived: float) -> AsyncIterator[Pacer]:
        """The request's pace: its place in the simulated GPU's batch, or one of the model's
        `capacity` decoding slots and its fixed latency from when it got it."""
        engine = self.engines.get(model)
        if engine is not None:
            sequence = engine.submit(prompt_words(body.get("prompt", body.get("input"))), reply.tokens)
            try:
                yield GpuPacer(engine, sequence)
            finally:
                engine.leave(sequence)
            return
        slots, stats = self._slots[model], self.stats
        waited = slots.locked()
        stats.queued += waited
        async with slots:
            stats.decoding[model] += 1
            stats.peak_decoding[model] = max(stats.peak_decoding[model], stats.decoding[model])
            try:
                yield LatencyPacer(self.clock, self.config.models[model], self.clock.now() if waited else arrived)
            finally:
                stats.decoding[model] -= 1

    async def _whole(
        self,
        request: web.Request,
        body: dict[str, Any],
        reply: Reply,
        pacer: Pacer,
        fault: str | None,
    ) -> web.StreamResponse:
        await pacer.until(len(reply.tokens))
        if fault == "stall":
            await self.clock.sleep(self.config.stall_s)
        if fault == "reset":
            request.transport.close()
            return web.Response()
        payload = _encode_json(completion_payload(body, reply, with_usage=True, cached_tokens=pacer.cached_tokens))
        if fault == "truncated":
            return web.Response(body=payload[: len(payload) // 2], content_type="application/json")
        self._served(reply, pacer.due(len(reply.tokens)))
        return web.Response(body=payload, content_type="application/json")

    async def _stream(
        self,
        request: web.Request,
        body: dict[str, Any],
        reply: Reply,
        pacer: Pacer,
        fault: str | None,
    ) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        cut_at = len(reply.tokens) // 2 if fault in ("reset", "stall", "truncated") else None
        count, every = len(reply.tokens), self.config.stream_interval
        for start in range(0, count, every):
            end = min(start + every, count)
            if cut_at is not None and start <= cut_at < end:
                if fault == "reset":
                    request.transport.close()
                    return response
                if fault == "truncated":
                    await response.write_eof()
                    return response
                await self.clock.sleep(self.config.stall_s)
            # Absolute deadlines: a late wake-up of the sim does not add up over a long answer.
            await pacer.until(end)
            last = end == count
            part = Reply(
                reply.tokens[start:end],
                reply.finish_reason if last else None,
                reply.stop_reason if last else None,
                reply.top_logprobs[start:end] if reply.top_logprobs else None,
            )
            await _send(response, completion_payload(body, part, with_usage=False))
        if (body.get("stream_options") or {}).get("include_usage"):
            usage = completion_payload(body, reply, with_usage=True, cached_tokens=pacer.cached_tokens)
            usage_chunk = {**usage, "choices": []}
            await _send(response, usage_chunk)
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        self._served(reply, pacer.due(len(reply.tokens)))
        return response

    def _served(self, reply: Reply, due: float) -> None:
        """Count a request served in full; `due` is when the latency model says it should end."""
        stats = self.stats
        stats.served += 1
        stats.completion_tokens += len(reply.tokens)
        late = max(0.0, self.clock.now() - due)
        stats.late_s_total += late
        stats.late_s_max = max(stats.late_s_max, late)


async def _send(response: web.StreamResponse, chunk: dict[str, Any]) -> None:
    await response.write(b"data: " + _encode_json(chunk) + b"\n\n")


def _error(status: int, message: str) -> web.Response:
    payload = {"object": "error", "message": message, "type": "SimError", "code": status}
    return _json_response(payload, status=status)


def _json_response(payload: dict[str, Any], status: int = 200) -> web.Response:
    return web.Response(body=_encode_json(payload), status=status, content_type="application/json")


async def serve(config: SimConfig, host: str, port: int) -> None:
    """Serve until SIGTERM or SIGINT; announce the URL on stdout for the process that started us."""
    server = SimServer(config, LagFreeClock() if config.lag_free else WALL_CLOCK)
    url = await server.start(host, port)
    print(READY_PREFIX + url, flush=True)
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stopping.set)
    await stopping.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    """`python -m benchmarks.sim_server [--host H] [--port P] [--config JSON]`."""
    from engine.loop import run

    parser = argparse.ArgumentParser(allow_abbrev=False, description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--config", default=None, help="a SimConfig as JSON (SimConfig.to_json)")
    args = parser.parse_args(argv)
    config = SimConfig.from_json(args.config) if args.config else SimConfig()
    run(serve(config, args.host, args.port))


if __name__ == "__main__":
    main()
