"""`posguard dev`'s embedded paper exchange serves the venue its accounts name."""

from __future__ import annotations

from decimal import Decimal

import pytest

from activities.exchange.gateway import ExchangeGateway
from workers.dev import start_paper_exchange
from workers.exchanges import make_exchange
from workers.settings import EMBEDDED_PAPER, AccountSettings, Settings


def settings_with(*exchanges: str) -> Settings:
    accounts = [
        AccountSettings(name=f"paper{n}", exchange=x, paper_url=EMBEDDED_PAPER)
        for n, x in enumerate(exchanges)
    ]
    return Settings(accounts=accounts, sim_port=0, sim_admin_port=0, health_port=-1)


@pytest.mark.parametrize(("exchange", "venue"), [("binanceusdm", "binance"), ("bybit", "bybit")])
async def test_the_embedded_exchange_serves_the_accounts_venue(exchange: str, venue: str) -> None:
    settings, sim = await start_paper_exchange(settings_with(exchange))
    assert sim is not None
    try:
        assert sim.venue == venue
        [account] = settings.accounts
        assert account.paper_url == sim.rest_url
        gateway = ExchangeGateway(make_exchange(account), account=account.name)
        try:
            readiness = await gateway.entry_readiness()
            assert "BTCUSDT" in readiness.listed
            assert (readiness.free_balance or Decimal(0)) > 0
        finally:
            await gateway.close()
    finally:
        await sim.stop()


async def test_embedded_accounts_of_two_venues_are_refused_with_the_reason() -> None:
    with pytest.raises(ValueError, match="serves one venue"):
        await start_paper_exchange(settings_with("binanceusdm", "bybit"))
