"""``AlertSink``: Telegram's Bot API, a Slack incoming webhook and a JSON webhook,
on 127.0.0.1, keeping (and optionally printing) every message it is sent.

It stands in for the services posguard's alerts go to, in tests and in
``make dev``. Usage::

    async with AlertSink(telegram_token="123:abc") as sink:
        sink.telegram_api          # url of a telegram channel (token "123:abc")
        sink.slack_url             # url of a slack channel
        sink.webhook_url           # url of a webhook channel
        sink.fail(500, count=3)    # the next 3 requests answer HTTP 500
        sink.hold(5.0, count=1)    # the next request is answered after 5 s
        sink.messages              # every message taken: [Received(...)]

Endpoints:

- ``POST /bot<token>/sendMessage`` (Telegram): JSON ``{chat_id, text}``; a wrong
  token gets 401 ``{"ok": false, "error_code": 401, ...}``; else ``{"ok": true}``.
- ``POST /slack/<anything>`` (Slack): JSON ``{text}``; answers ``ok``.
- ``POST /webhook`` (generic): any JSON object; a repeated ``Idempotency-Key`` is
  answered 200 but not kept again (counted in ``duplicates``), as a receiver that
  honours the key does.

Run standalone (``make dev`` starts it on port 8703)::

    python -m simulator.alert_sink --port 8703
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

log = logging.getLogger("posguard.alert_sink")


@dataclass(frozen=True)
class Received:
    """One message the sink took: which service, its text, its JSON body."""

    service: str  # "telegram" | "slack" | "webhook"
    text: str
    body: dict[str, Any] = field(default_factory=dict)
    key: str | None = None  # the webhook's Idempotency-Key


class AlertSink:
    """The three alert services on one port (see the module docstring)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        telegram_token: str = "sink:token",
        printing: bool = False,
    ) -> None:
        self.host = host
        self._port = port
        self.telegram_token = telegram_token
        self.printing = printing
        self.messages: list[Received] = []
        self.requests = 0
        self.requests_to: dict[str, int] = {}
        self.duplicates = 0
        self._keys: set[str] = set()
        self._failures: list[tuple[str | None, int]] = []
        self._holds: list[float] = []  # float ok: seconds
        self.held = 0  # requests being held right now
        self._runner: web.AppRunner | None = None

    # --- faults --------------------------------------------------------------------------

    def fail(self, status: int, count: int = 1, service: str | None = None) -> None:
        """Answer the next `count` requests (to `service` only, if given: "telegram",
        "slack" or "webhook") with HTTP `status`; nothing is kept."""
        self._failures.extend([(service, status)] * count)

    def hold(self, seconds: float, count: int = 1) -> None:  # float ok: seconds
        """Keep the next `count` requests (they are kept) `seconds` before answering."""
        self._holds.extend([seconds] * count)

    # --- what was received ---------------------------------------------------------------

    def of(self, service: str) -> list[Received]:
        return [m for m in self.messages if m.service == service]

    @property
    def port(self) -> int:
        return self._port

    @property
    def telegram_api(self) -> str:
        return f"http://{self.host}:{self._port}"

    @property
    def slack_url(self) -> str:
        return f"http://{self.host}:{self._port}/slack/T000/B000/sinksecret"

    @property
    def webhook_url(self) -> str:
        return f"http://{self.host}:{self._port}/webhook"

    # --- server --------------------------------------------------------------------------

    async def start(self) -> AlertSink:
        app = web.Application()
        app.router.add_post("/bot{token}/sendMessage", self._telegram)
        app.router.add_post("/slack/{tail:.*}", self._slack)
        app.router.add_post("/webhook", self._webhook)
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self._port, reuse_address=True)
        await site.start()
        server = site._server  # aiohttp keeps the asyncio Server here
        assert server is not None
        self._port = int(server.sockets[0].getsockname()[1])  # type: ignore[attr-defined]
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> AlertSink:
        return await self.start()

    async def __aexit__(self, *_: object) -> None:
        await self.stop()

    async def _gate(self, service: str) -> web.Response | None:
        """A failure due for this request to `service`, if any."""
        self.requests += 1
        self.requests_to[service] = self.requests_to.get(service, 0) + 1
        for i, (only, status) in enumerate(self._failures):
            if only is None or only == service:
                del self._failures[i]
                return web.Response(status=status, text=f"sink fault {status}")
        return None

    async def _keep(self, received: Received) -> None:
        if self._holds:
            seconds = self._holds.pop(0)
            self.held += 1
            try:
                await asyncio.sleep(seconds)
            finally:
                self.held -= 1
        self.messages.append(received)
        if self.printing:
            print(f"--- alert via {received.service} ---\n{received.text}\n", flush=True)

    async def _telegram(self, request: web.Request) -> web.Response:
        if (failed := await self._gate("telegram")) is not None:
            return failed
        if request.match_info["token"] != self.telegram_token:
            return web.json_response(
                {"ok": False, "error_code": 401, "description": "Unauthorized"}, status=401
            )
        body = await request.json()
        if not body.get("chat_id") or not body.get("text"):
            return web.json_response(
                {"ok": False, "error_code": 400, "description": "Bad Request: text is empty"},
                status=400,
            )
        await self._keep(Received("telegram", str(body["text"]), body))
        return web.json_response({"ok": True, "result": {"message_id": len(self.messages)}})

    async def _slack(self, request: web.Request) -> web.Response:
        if (failed := await self._gate("slack")) is not None:
            return failed
        body = await request.json()
        if not body.get("text"):
            return web.Response(status=400, text="no_text")
        await self._keep(Received("slack", str(body["text"]), body))
        return web.Response(text="ok")

    async def _webhook(self, request: web.Request) -> web.Response:
        if (failed := await self._gate("webhook")) is not None:
            return failed
        body = await request.json()
        key = request.headers.get("Idempotency-Key")
        if key is not None and key in self._keys:
            self.duplicates += 1
            return web.json_response({"ok": True, "duplicate": True})
        if key is not None:
            self._keys.add(key)
        await self._keep(Received("webhook", str(body.get("text", "")), body, key))
        return web.json_response({"ok": True})


async def _serve(port: int) -> None:
    async with AlertSink(port=port, printing=True) as sink:
        print(f"alert sink on {sink.webhook_url} (telegram: {sink.telegram_api})", flush=True)
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.Event().wait()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="a local sink that prints posguard's alerts")
    parser.add_argument("--port", type=int, default=8703)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(_serve(args.port))


if __name__ == "__main__":
    main()


__all__ = ["AlertSink", "Received"]
