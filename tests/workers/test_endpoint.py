"""`/health` and `/metrics` listen on `health_host`: 127.0.0.1 by default, every
interface with "0.0.0.0" (containers, where Prometheus scrapes from another one).

No Temporal, no PostgreSQL: the ingest's endpoint and the gate's (started by
`run_gate` itself, with no accounts) on a free port, read over HTTP.
"""

from __future__ import annotations

import asyncio
import socket
from typing import Any, cast

import aiohttp
import pytest
from temporalio.client import Client

from signals_ingest.gate_process import HealthServer, run_gate
from tests.waiting import until
from workers.endpoint import url_host
from workers.health_command import default_urls
from workers.ingest import IngestEndpoint
from workers.settings import Settings


def outside_address() -> str | None:
    """An address of this host that is not a loopback one (None if it has none): the
    one it would send from to a documentation address (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.connect(("192.0.2.1", 9))
        except OSError:
            return None
        address = str(s.getsockname()[0])
    return None if address.startswith("127.") else address


async def status(host: str, port: int) -> int | None:
    """The HTTP status of `/health` at host:port; None when nothing answers there."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as http,
            http.get(f"http://{host}:{port}/health") as resp,
        ):
            return resp.status
    except aiohttp.ClientConnectionError:
        return None


def bound_hosts(runner: Any) -> set[str]:
    return {str(sock.getsockname()[0]) for site in runner.sites for sock in site._server.sockets}


def test_health_host_is_loopback_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("POSGUARD_CONFIG", "/nonexistent.toml")
    monkeypatch.delenv("POSGUARD_HEALTH_HOST", raising=False)
    assert Settings().health_host == "127.0.0.1"
    monkeypatch.setenv("POSGUARD_HEALTH_HOST", "0.0.0.0")
    assert Settings().health_host == "0.0.0.0"


def test_posguard_health_reads_this_host() -> None:
    assert url_host("0.0.0.0") == url_host("127.0.0.1") == "127.0.0.1"
    assert url_host("::") == "[::1]" and url_host("fd00::5") == "[fd00::5]"
    urls = dict(default_urls(Settings(health_host="0.0.0.0", health_port=9000)))
    assert urls["ingest"] == "http://127.0.0.1:9002/health"
    assert dict(default_urls(Settings(health_host="10.1.2.3", health_port=8081)))["worker"] == (
        "http://10.1.2.3:8081/health"
    )
    # the dashboard too, on its own port and host, unless it is turned off
    urls = dict(default_urls(Settings(web_host="0.0.0.0", web_port=8704)))
    assert urls["web"] == "http://127.0.0.1:8704/health"
    assert "web" not in dict(default_urls(Settings(web_port=-1)))


async def test_the_default_endpoint_answers_on_loopback_only() -> None:
    endpoint = IngestEndpoint([], 0)
    await endpoint.start()
    try:
        assert bound_hosts(endpoint._runner) == {"127.0.0.1"}
        assert await status("127.0.0.1", endpoint.port) == 200
        outside = outside_address()
        if outside is not None:
            assert await status(outside, endpoint.port) is None
    finally:
        await endpoint.stop()


async def test_an_endpoint_on_0_0_0_0_answers_on_every_interface() -> None:
    endpoint = IngestEndpoint([], 0, host="0.0.0.0")
    await endpoint.start()
    try:
        assert bound_hosts(endpoint._runner) == {"0.0.0.0"}
        assert await status("127.0.0.1", endpoint.port) == 200
        outside = outside_address()
        if outside is not None:
            assert await status(outside, endpoint.port) == 200
    finally:
        await endpoint.stop()


async def test_the_gate_listens_on_the_settings_health_host() -> None:
    settings = Settings(accounts=[], health_host="0.0.0.0", temporal_address="unused:0")
    healths: list[HealthServer] = []
    stop = asyncio.Event()
    # With no account the gate reads nothing: the client is never used.
    task = asyncio.create_task(
        run_gate(settings, stop, client=cast(Client, object()), health_port=0, health_out=healths)
    )
    try:
        await until(lambda: bool(healths) or task.done(), "the gate's endpoint")
        (health,) = healths
        assert health.host == "0.0.0.0" and bound_hosts(health._runner) == {"0.0.0.0"}
        assert await status("127.0.0.1", health.port) == 200
    finally:
        stop.set()
        await asyncio.wait_for(task, 10)
