"""Mark prices for the dashboard: sampled by this process, kept in memory, bounded.

Neither the workflow's `state` query nor the store carries a position's mark over
time, so the dashboard asks each account's exchange for the mark of every symbol it
holds, once a refresh (public market data: no order is ever sent from here), and
keeps the last `MAX_POINTS` samples of each position. The series starts when the
dashboard starts and is lost when it stops; the page says so. The marks the price
gate recorded (`price_band_crossed` events) are added from the store by the chart.
"""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict, deque
from collections.abc import Iterable
from datetime import UTC, datetime
from decimal import Decimal

from activities.exchange.gateway import ExchangeGateway
from workers.settings import EMBEDDED_PAPER, AccountSettings, Settings

log = logging.getLogger("posguard.dashboard")

MAX_POINTS = 3600
"""Samples kept per position: an hour at the default refresh of 1 s."""
MAX_POSITIONS = 500
"""Positions whose samples are kept; the one sampled longest ago is forgotten first."""
MARK_TIMEOUT_S = 3
"""How long one mark request may take before it counts as failed this refresh."""

MARK_NOTE = (
    "Mark prices are sampled by the dashboard itself at each refresh while it runs "
    f"(the last {MAX_POINTS} samples of each position, kept in memory, lost when it "
    "restarts), plus the marks the price gate recorded when a price left a position's "
    "band. Stop and entry come from the recorded events."
)


def market_account(account: AccountSettings, settings: Settings) -> AccountSettings:
    """`account` as this process reaches its exchange: an account on the embedded paper
    exchange reads the one `posguard dev` serves on `sim_port`."""
    if account.paper_url != EMBEDDED_PAPER:
        return account
    return account.model_copy(
        update={"paper_url": f"http://127.0.0.1:{settings.sim_port}", "paper_ws_url": None}
    )


class MarkSampler:
    """Reads the mark price of (account, symbol) pairs through each account's gateway."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._gateways: dict[str, ExchangeGateway] = {}

    def _gateway(self, account: str) -> ExchangeGateway:
        gateway = self._gateways.get(account)
        if gateway is None:
            from workers.exchanges import make_exchange

            acct = market_account(self._settings.account(account), self._settings)
            gateway = ExchangeGateway(make_exchange(acct), account=account)
            self._gateways[account] = gateway
        return gateway

    async def _one(self, account: str, symbol: str) -> Decimal | str:
        try:
            return await asyncio.wait_for(self._gateway(account).mark_price(symbol), MARK_TIMEOUT_S)
        except Exception as exc:  # any failure: no mark this time, and why (no secrets)
            log.debug("mark of %s on %s: %r", symbol, account, exc)
            return f"mark unavailable ({type(exc).__name__})"

    async def sample(
        self, pairs: Iterable[tuple[str, str]]
    ) -> dict[tuple[str, str], Decimal | str]:
        """The mark of each (account, symbol) now, all asked at once: a Decimal, or the
        text of why there is none this time."""
        wanted = sorted(set(pairs))
        found = await asyncio.gather(*(self._one(a, s) for a, s in wanted))
        return dict(zip(wanted, found, strict=True))

    async def close(self) -> None:
        """Close every gateway's connections."""
        for gateway in self._gateways.values():
            try:
                await gateway.close()
            except Exception as exc:  # closing is best effort
                log.debug("closing a gateway: %r", exc)
        self._gateways.clear()


class MarkHistory:
    """The sampled marks of each position, oldest first, at most one a second.

    Bounded twice: `max_points` per position and `max_positions` positions.
    """

    def __init__(self, max_points: int = MAX_POINTS, max_positions: int = MAX_POSITIONS) -> None:
        self._max_points = max_points
        self._max_positions = max_positions
        self._series: OrderedDict[str, deque[tuple[datetime, Decimal]]] = OrderedDict()

    def add(self, position_id: str, mark: Decimal, at: datetime | None = None) -> None:
        """Record `mark` of `position_id` at `at` (now); a second sample within the same
        second replaces the first, so the chart gets one point a second."""
        at = at or datetime.now(UTC)
        series = self._series.get(position_id)
        if series is None:
            series = deque(maxlen=self._max_points)
            self._series[position_id] = series
        self._series.move_to_end(position_id)
        if series and int(series[-1][0].timestamp()) == int(at.timestamp()):
            series.pop()
        series.append((at, mark))
        while len(self._series) > self._max_positions:
            self._series.popitem(last=False)

    def of(self, position_id: str) -> list[tuple[datetime, Decimal]]:
        """The samples of `position_id`, oldest first (empty when none)."""
        return list(self._series.get(position_id, ()))
