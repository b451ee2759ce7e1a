"""The wave workflow's store activities: read the account, write the wave.

Each write is idempotent (activities/store/wave_rows.py), so Temporal retries
them freely; a database outage only delays a wave's records.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from temporalio import activity

from domain.wave_io import AccountStateRequest, ExchangePauseRequest, StoredAccount, WaveWrite

if TYPE_CHECKING:  # asyncpg stays out of importers (the workflow references these methods)
    from activities.store.repository import Store


class WaveActivities:
    """Activities bound to one `Store` (the worker's pool)."""

    def __init__(self, store: Store) -> None:
        self._store = store

    @activity.defn(name="waves.write")
    async def write(self, write: WaveWrite) -> int:
        """Write a wave's row, decisions, events and alerts atomically; new decisions."""
        from activities.store.wave_rows import write_wave

        return await write_wave(self._store, write)

    @activity.defn(name="waves.account")
    async def account(self, req: AccountStateRequest) -> StoredAccount:
        """The store's side of the account: open rows, recent closes, stoplist, pauses."""
        from activities.store.wave_rows import stored_account

        return await stored_account(
            self._store, req.account, req.exchange, req.cooldown, datetime.now(UTC)
        )

    @activity.defn(name="waves.exchange_pause")
    async def exchange_pause(self, req: ExchangePauseRequest) -> bool:
        """Set or clear the exchange's pause of new entries; True when it changed now."""
        from activities.store.wave_rows import set_exchange_pause

        return await set_exchange_pause(self._store, req)

    def all(self) -> list[Callable[..., Any]]:
        """Every activity method, for registration on a worker."""
        return [self.write, self.account, self.exchange_pause]
