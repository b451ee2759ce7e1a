"""Metrics and a span of every REST request a ccxt client makes (docs/metrics.md).

ccxt sends each request through the client's `fetch(url, method, headers, body)`;
`instrument` wraps that one method of one client instance. A request is labelled
by its account, exchange, lane (the gateway's main client or its protective one)
and endpoint: the URL's path only, since the query of a signed request carries
the key and the signature. Binance reports the request weight used in the current
minute in `X-MBX-USED-WEIGHT-1M`; it is kept as a gauge per account. Each request
is also a span (`activities.tracing`) named by method and path, and its outcome
tells `/health` when the account's exchange last answered (`REACHABILITY`).
A ban the exchange reports is kept (`BANS`): until it ends, requests are refused
here without being sent.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

from opentelemetry.trace import SpanKind, Status, StatusCode
from prometheus_client import Counter, Gauge, Histogram

from activities.exchange.ccxt_logs import scrub_ccxt_logs
from activities.tracing import tracer
from domain.errors import ErrorType, ban_end_ms, classify_exception

REQUESTS = Counter(
    "posguard_exchange_requests_total",
    "REST requests sent to an exchange",
    ["account", "exchange", "lane", "endpoint"],
)
ERRORS = Counter(
    "posguard_exchange_errors_total",
    "REST requests that failed, by posguard's error class",
    ["account", "exchange", "endpoint", "error"],
)
SECONDS = Histogram(
    "posguard_exchange_request_seconds",
    "Time from sending a REST request to its answer (or failure)",
    ["account", "exchange", "lane"],
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0),
)
USED_WEIGHT = Gauge(
    "posguard_exchange_used_weight",
    "Request weight used in the current minute, as the exchange reports it (Binance)",
    ["account", "exchange"],
)

_WEIGHT_HEADER = "x-mbx-used-weight-1m"
# ccxt's family of "the exchange did not answer" (timeouts, refused connections,
# 5xx, maintenance, rate-limit bans): anything else is an answer, even a refusal.
_UNREACHABLE = "NetworkError"


class Reachability:
    """When an account's exchange last answered a request, and its last failure to."""

    __slots__ = ("error", "last_failure", "last_ok")

    def __init__(self) -> None:
        self.last_ok: datetime | None = None
        self.last_failure: datetime | None = None
        self.error: str | None = None


REACHABILITY: dict[str, Reachability] = {}
"""Per account, across every client of the process (read by `/health`)."""


class KnownBan:
    """An IP ban the exchange reported (Binance's 418 "banned until <ms>"), shared by
    every client of an account on one exchange host: until it ends, a request is
    refused here, unsent, with the same words. Every order is refused during a ban
    anyway, and requests sent into one lengthen it on Binance; the refusal names the
    ban's end, so the activity's retry waits for it (`ban_wait`)."""

    __slots__ = ("until_ms",)

    def __init__(self) -> None:
        self.until_ms = 0

    def check(self, exchange: str, endpoint: str) -> None:
        """Raise DDoSProtection, unsent, while the ban lasts."""
        if self.until_ms > time.time() * 1000:  # float ok: epoch ms
            import ccxt  # the gateway's dependency; not imported by workflow code

            raise ccxt.DDoSProtection(
                f"{exchange} {endpoint} not sent: IP banned until {self.until_ms} "
                "(a ban the exchange reported)"
            )

    def note(self, exc: BaseException) -> None:
        """Remember the end of the ban `exc` reports, if it names one."""
        if classify_exception(exc).type is ErrorType.RATE_LIMITED:
            end = ban_end_ms(str(exc))
            if end is not None:
                self.until_ms = max(self.until_ms, end)


BANS: dict[tuple[str, str], KnownBan] = {}
"""Per (account, exchange host), across every client of the process."""


def instrument(client: Any, *, account: str, lane: str) -> None:
    """Count, time and classify every request `client` sends; idempotent per client.
    ccxt's own request log is scrubbed from then on (`scrub_ccxt_logs`)."""
    scrub_ccxt_logs()
    original: Callable[..., Awaitable[Any]] | None = getattr(client, "fetch", None)
    if original is None or getattr(client, "_posguard_instrumented", False):
        return  # not a ccxt client (a test's stand-in), or counted already
    exchange = str(getattr(client, "id", ""))
    seconds = SECONDS.labels(account, exchange, lane)
    weight = USED_WEIGHT.labels(account, exchange)
    reach = REACHABILITY.setdefault(account, Reachability())

    async def fetch(url: str, method: str = "GET", headers: Any = None, body: Any = None) -> Any:
        parts = urlsplit(url)
        path = parts.path
        endpoint = f"{method} {path}"
        ban = BANS.setdefault((account, parts.netloc), KnownBan())
        REQUESTS.labels(account, exchange, lane, endpoint).inc()
        with tracer().start_as_current_span(
            f"exchange {endpoint}",
            kind=SpanKind.CLIENT,
            attributes={
                "posguard.account": account,
                "posguard.exchange": exchange,
                "posguard.lane": lane,
                "http.request.method": method,
                "url.path": path,
            },
            record_exception=False,  # an exception's text may quote a signed URL
            set_status_on_exception=False,
        ) as span:
            began = time.perf_counter()  # float ok: timing
            try:
                ban.check(exchange, endpoint)
                answer = await original(url, method, headers, body)
            except Exception as exc:
                ban.note(exc)
                error = classify_exception(exc).type.value
                ERRORS.labels(account, exchange, endpoint, error).inc()
                span.set_attribute("error.type", error)
                span.set_status(Status(StatusCode.ERROR, error))
                if any(c.__name__ == _UNREACHABLE for c in type(exc).__mro__):
                    reach.last_failure, reach.error = datetime.now(UTC), f"{endpoint}: {error}"
                else:
                    reach.last_ok = datetime.now(UTC)
                raise
            else:
                reach.last_ok = datetime.now(UTC)
                return answer
            finally:
                seconds.observe(time.perf_counter() - began)  # float ok: timing
                used = _used_weight(getattr(client, "last_response_headers", None))
                if used is not None:
                    weight.set(used)

    client.fetch = fetch
    client._posguard_instrumented = True


def _used_weight(headers: Any) -> int | None:
    if not headers:
        return None
    for name, value in dict(headers).items():
        if str(name).lower() == _WEIGHT_HEADER:
            try:
                return int(value)
            except (TypeError, ValueError):
                return None
    return None
