"""Ask for a reconcile pass at once when the user stream sees something no workflow owns.

An order or position change on a symbol with no running position workflow (a
position opened by hand, an order left by a terminated workflow), or an order
whose client id is not the symbol's workflow's: the account's reconcile Schedule
is triggered, so an untracked position is protected within seconds instead of at
the next period. Requests within `debounce` make one trigger; a trigger while a
pass runs is buffered by the Schedule (run right after it, never beside it).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable
from datetime import timedelta

from temporalio.client import Client, ScheduleOverlapPolicy
from temporalio.service import RPCError, RPCStatusCode

from domain.reconcile_io import reconcile_schedule_id

log = logging.getLogger("posguard.reconcile_trigger")

Fire = Callable[[], Awaitable[None]]


def schedule_trigger(client: Client, account: str) -> Fire:
    """Trigger `reconcile/{account}` (overlap: buffer one)."""
    handle = client.get_schedule_handle(reconcile_schedule_id(account))

    async def fire() -> None:
        await handle.trigger(overlap=ScheduleOverlapPolicy.BUFFER_ONE)

    return fire


class ReconcileTrigger:
    """Debounced `fire()` for one account: `request(why)` returns at once."""

    def __init__(self, fire: Fire, *, account: str, debounce: timedelta) -> None:
        self._fire = fire
        self.account = account
        self._debounce_s = debounce.total_seconds()  # float ok: seconds
        self._pending: asyncio.Task[None] | None = None
        self._reasons: list[str] = []
        self.fired = 0
        self._missing_logged = False

    def request(self, why: str) -> None:
        """Ask for a pass; requests until the debounce ends are one."""
        self._reasons.append(why)
        if self._pending is None or self._pending.done():
            self._pending = asyncio.create_task(self._later())

    async def _later(self) -> None:
        await asyncio.sleep(self._debounce_s)
        reasons, self._reasons = self._reasons, []
        try:
            await self._fire()
        except RPCError as err:
            if err.status is RPCStatusCode.NOT_FOUND:
                if not self._missing_logged:
                    log.warning(
                        "no schedule %s: the user stream cannot ask for a pass "
                        "(is reconcile.every unset?)",
                        reconcile_schedule_id(self.account),
                    )
                    self._missing_logged = True
                return
            log.warning("could not trigger a reconcile pass of %s: %s", self.account, err)
            return
        except Exception as exc:
            log.warning("could not trigger a reconcile pass of %s: %r", self.account, exc)
            return
        self.fired += 1
        log.info("reconcile pass of %s asked for: %s", self.account, "; ".join(reasons)[:300])

    async def close(self) -> None:
        """Cancel a pending trigger (the process is stopping)."""
        if self._pending is not None and not self._pending.done():
            self._pending.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._pending
