"""What a watch wrote: the `alerts` rows of one condition's title, oldest first."""

from __future__ import annotations

from activities.store.repository import Store


async def alert_rows(store: Store, title: str) -> list[tuple[bool, str, str]]:
    """(resolution, severity, body) of each row titled `title`."""
    found = await store.pool.fetch(
        "SELECT resolution, severity, body FROM alerts WHERE title = $1 ORDER BY id", title
    )
    return [(r["resolution"], r["severity"], r["body"]) for r in found]
