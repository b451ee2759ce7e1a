"""`posguard health`: every posguard process's `/health`, printed for an operator.

It reads the worker (`health_port`), the price gate (`+ 1`) and the ingest (`+ 2`) on
this host (127.0.0.1, or `health_host` when that is one address), and the dashboard
(`web_port` on `web_host`; not when `web_port` is -1), or the `--url`s
given, and prints each process with each part it depends on and the age of that
part's last answer. Exit 0 when every process answers and all are healthy, 1 otherwise
(a process that does not answer is named).
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import aiohttp

from workers.endpoint import url_host
from workers.settings import Settings

PROCESSES = (("worker", 0), ("gate", 1), ("ingest", 2))


def default_urls(settings: Settings) -> list[tuple[str, str]]:
    """(process, URL) of each process's `/health` on this host: the worker, the gate,
    the ingest, and the dashboard unless its `web_port` is -1."""
    host = url_host(settings.health_host)
    urls = [
        (name, f"http://{host}:{settings.health_port + offset}/health")
        for name, offset in PROCESSES
    ]
    if settings.web_port >= 0:
        urls.append(("web", f"http://{url_host(settings.web_host)}:{settings.web_port}/health"))
    return urls


async def fetch(
    url: str, timeout_s: float = 5
) -> tuple[int | None, dict[str, Any] | None]:  # float ok
    """(HTTP status, body) of one `/health`; (None, None) when nothing answers."""
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=timeout_s)) as http,
            http.get(url) as resp,
        ):
            return resp.status, json.loads(await resp.text())
    except (aiohttp.ClientError, TimeoutError, ValueError):
        return None, None


def render(name: str, url: str, status: int | None, body: dict[str, Any] | None) -> list[str]:
    """The lines printed for one process."""
    if status is None or body is None:
        return [f"{name:<8} NOT ANSWERING  {url}"]
    verdict = "ok" if status == 200 else f"UNHEALTHY (down: {', '.join(body.get('down', []))})"
    lines = [f"{name:<8} {verdict}  {url}"]
    for part in body.get("parts", []):
        age = part.get("age_s")
        shown = "never answered" if age is None else f"answered {age:.1f} s ago"
        error = f"  last error: {part['error']}" if part.get("error") else ""
        lines.append(f"  {part['status']:<8} {part['name']:<40} {shown}{error}")
    return lines


async def health(settings: Settings, urls: list[str] | None = None) -> int:
    """Print every process's health; 0 when all answer and are healthy, else 1."""
    targets = [(f"#{i + 1}", u) for i, u in enumerate(urls)] if urls else default_urls(settings)
    answers = await asyncio.gather(*(fetch(url) for _, url in targets))
    failed = False
    for (name, url), (status, body) in zip(targets, answers, strict=True):
        print("\n".join(render(name, url, status, body)))
        failed = failed or status != 200
    return 1 if failed else 0
