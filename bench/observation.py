"""Everything observability turns on, for a benchmark to run with it (bench_observability).

- an OTLP/HTTP sink on 127.0.0.1 that accepts and counts trace exports (it stands in
  for a collector: the exporters do their full work, encoding and sending);
- the worker's environment: tracing to that sink and `/metrics` on a free port (the
  SDK's metrics are on by default);
- a traced Temporal client for the in-process gate, exporting to the sink in batches;
- a scraper reading the worker's and the gate's `/metrics` every 5 s (Prometheus'
  default is 15 s), timing each scrape.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import time

import aiohttp
from aiohttp import web
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from activities.tracing import use_provider
from workers.temporal import connect
from workers.tracing import interceptor, span_processor

SCRAPE_EVERY_S = 5.0  # float ok: seconds


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Observation:
    """Start with `await Observation.start()`; `close()` when done. With `tracing`
    False only the metrics are on (the SDK's, and the scrapes)."""

    def __init__(self, tracing: bool = True) -> None:
        self.tracing = tracing
        self.exports = 0
        self.export_bytes = 0
        self.scrapes = 0
        self.scrape_failures = 0
        self.scrape_ms: list[float] = []  # float ok: durations
        self.worker_port = _free_port()
        self._runner: web.AppRunner | None = None
        self._url = ""
        self._provider: TracerProvider | None = None
        self._scraper: asyncio.Task[None] | None = None

    @classmethod
    async def start(cls, tracing: bool = True) -> Observation:
        self = cls(tracing)
        app = web.Application()
        app.router.add_post("/v1/traces", self._export)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        port = _free_port()
        await web.TCPSite(self._runner, "127.0.0.1", port).start()
        self._url = f"http://127.0.0.1:{port}"
        return self

    async def _export(self, request: web.Request) -> web.Response:
        self.exports += 1
        self.export_bytes += len(await request.read())
        return web.Response(body=b"", content_type="application/x-protobuf")

    def worker_env(self) -> dict[str, str]:
        env = {"POSGUARD_HEALTH_PORT": str(self.worker_port)}
        if self.tracing:
            env["OTEL_EXPORTER_OTLP_ENDPOINT"] = self._url
        return env

    async def client(self, env: WorkflowEnvironment) -> Client:
        """A client of `env`'s server tracing to the sink, as `posguard gate` would."""
        if not self.tracing:
            return env.client
        self._provider = TracerProvider(resource=Resource.create({"service.name": "bench-gate"}))
        self._provider.add_span_processor(
            span_processor(OTLPSpanExporter(endpoint=f"{self._url}/v1/traces"))
        )
        use_provider(self._provider)
        return await connect(
            env.client.service_client.config.target_host,
            env.client.namespace,
            interceptors=[interceptor(self._provider)],
        )

    def scrape(self, gate_port: int) -> None:
        """Scrape the worker's and the gate's `/metrics` every second from now on."""
        self._scraper = asyncio.get_running_loop().create_task(self._scrape(gate_port))

    async def _scrape(self, gate_port: int) -> None:
        async with aiohttp.ClientSession() as session:
            while True:
                for port in (self.worker_port, gate_port):
                    began = time.perf_counter()  # float ok: timing
                    try:
                        async with session.get(f"http://127.0.0.1:{port}/metrics") as response:
                            await response.read()
                            self.scrapes += 1
                            self.scrape_ms.append(1000 * (time.perf_counter() - began))
                    except aiohttp.ClientError:
                        self.scrape_failures += 1
                await asyncio.sleep(SCRAPE_EVERY_S)

    async def close(self) -> None:
        if self._scraper is not None:
            self._scraper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._scraper
        if self._provider is not None:
            self._provider.shutdown()  # flushes the last batch
            use_provider(None)
        if self._runner is not None:
            await self._runner.cleanup()

    def figures(self) -> dict[str, int | float]:  # float ok: durations
        timed = sorted(self.scrape_ms)
        return {
            "otlp_exports": self.exports,
            "otlp_bytes": self.export_bytes,
            "scrapes": self.scrapes,
            "scrape_failures": self.scrape_failures,
            "scrape_p50_ms": round(timed[len(timed) // 2], 1) if timed else -1,
            "scrape_max_ms": round(timed[-1], 1) if timed else -1,
        }
