"""How the position commands print a position: exact numbers, ages, ids, events and
the `position` block (see workers/position_commands.py; tables: workers/terminal.py).

Every price, quantity and amount prints exactly (Decimal, never float).
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any
from urllib.parse import quote

from domain.position import is_terminal
from domain.records import PositionRecord
from domain.sizing import LevelRule
from domain.trailing import TrailingRule
from workers.settings import Settings
from workers.terminal import fields


class CommandError(RuntimeError):
    """The command could not do what was asked; the CLI prints it and exits 1."""


def dec(value: Decimal | None) -> str:
    """Exact decimal text without exponent or trailing zeros; `-` for None."""
    if value is None:
        return "-"
    text = format(value, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return "0" if text in ("", "-0") else text


def level(rule: LevelRule | None) -> str:
    if rule is None:
        return "-"
    return f"{dec(rule.percent)}%" if rule.percent is not None else dec(rule.price)


def age(delta: timedelta | None) -> str:
    """`3d4h`, `4h`, `4h12m`, `12m5s`, `42s` (two units at most); `-` when unknown."""
    if delta is None:
        return "-"
    seconds = max(int(delta.total_seconds()), 0)
    units: list[tuple[int, str]] = []
    for size, unit in ((86400, "d"), (3600, "h"), (60, "m"), (1, "s")):
        count, seconds = divmod(seconds, size)
        if count or units:
            units.append((count, unit))
    shown = "".join(f"{n}{u}" for n, u in units[:2] if n)
    return shown or "0s"


SHORT_ID_LEN = 8


def short_position_id(position_id: str | None) -> str:
    """A position id as the tables print it: the last 8 characters of its run.

    A position id is `{workflow id}/{first run id}`; the workflow id is shown beside
    it (or, in `events tail`, its exchange and symbol), so the run's random tail is
    what tells two lifecycles of one workflow id apart (the head of a UUIDv7 run id
    is its start time, the same for runs a minute apart). `-` for None.
    """
    if not position_id:
        return "-"
    run = position_id.rsplit("/", 1)[-1]
    return run[-SHORT_ID_LEN:]


def format_event(event: Any) -> str:
    """One recorded event as a line of `events tail`: time, severity, type, where,
    whose (the short position id, see `short_position_id`), payload."""
    payload = json.dumps(event.payload, separators=(",", ":"))
    where = " ".join(x for x in (event.exchange, event.symbol) if x)
    whose = short_position_id(event.position_id)
    return (
        f"{event.occurred_at:%Y-%m-%d %H:%M:%S.%f}"[:-3]
        + f"  {event.severity.value:<8} {event.type.value:<28} {where:<22} "
        + f"{whose:<{SHORT_ID_LEN}} {payload}"
    )


def resolve_position_id(given: str, position_ids: Sequence[str]) -> str:
    """`--position` as typed: a full position id, or the short one the tables print.

    A full id (it contains `/`) is returned as given; a short one must end exactly
    one of `position_ids` (CommandError when none or several do).
    """
    if "/" in given:
        return given
    found = [pid for pid in position_ids if pid.endswith(given)]
    if len(found) == 1:
        return found[0]
    if not found:
        raise CommandError(f"no recorded position id ends in {given!r}")
    raise CommandError(
        f"{given!r} ends {len(found)} position ids; give more of it: " + ", ".join(found[:5])
    )


def chronological(event: Any) -> tuple[datetime, str]:
    """Sort key: time, then event id (a position's ids end in a zero-padded sequence).

    The store's newest-first order breaks ties by ascending id, so a reversed
    page would show same-millisecond events of one transition backwards.
    """
    return (event.occurred_at, event.event_id)


def ui_url(settings: Settings, workflow_id: str) -> str:
    """The workflow's page in the Temporal Web UI (it opens the latest run)."""
    return (
        f"http://127.0.0.1:{settings.ui_port}/namespaces/"
        f"{quote(settings.temporal_namespace, safe='')}/workflows/{quote(workflow_id, safe='')}"
    )


def describe_view(view: Any, settings: Settings) -> str:
    """A PositionView as the block `open` and `position` print."""
    spec, s = view.spec, view.snapshot
    pairs = [
        (
            "position",
            f"{spec.side.value} {dec(s.qty)} {spec.symbol} on {spec.account} "
            f"({spec.exchange.value})",
        ),
        ("entry", dec(s.avg_entry_price)),
        ("stop", f"{dec(s.stop_price)}  (rule {level(spec.stop)})"),
    ]
    if s.emergency_stop is not None and s.emergency_stop.trigger_price is not None:
        pairs.append(("emergency stop", dec(s.emergency_stop.trigger_price)))
    else:
        pairs.append(("emergency stop", f"{dec(spec.emergency_stop_percent)}% if ever needed"))
    rule = getattr(view, "trailing_rule", None)
    if rule is not None:
        text = rule_text(rule)
        measured = getattr(view, "measured_callback_pct", None)
        if rule.volatility is not None:
            now = "not measured yet" if measured is None else f"now {dec(measured)}%"
            text += f" ({now})"
        trail = getattr(view, "trailing", None)
        if trail is not None:
            text += f"; {trail.phase.value}, best {dec(trail.best_price)}"
        pairs.append(("trailing", text))
    if spec.take_profit is not None:
        pairs.append(("take-profit", level(spec.take_profit)))
    if spec.max_age is not None:
        pairs.append(("max age", age(spec.max_age)))
    if s.avg_exit_price is not None:
        pairs.append(("exit", dec(s.avg_exit_price)))
    pairs += [("realised pnl", dec(s.realised_pnl)), ("fees", dec(s.fees))]
    if s.funding != 0 or is_terminal(s.state):  # booked at the close
        pairs += [("funding", dec(s.funding)), ("net pnl", dec(s.net_pnl))]
    if s.close_reason is not None:
        pairs.append(("reason", s.close_reason.value))
    if s.opened_at is not None:
        opened = f"{s.opened_at:%Y-%m-%d %H:%M:%S} UTC ({age(datetime.now(UTC) - s.opened_at)} ago)"
        pairs.append(("opened", opened))
    pairs += [("position id", view.position_id), ("Web UI", ui_url(settings, view.workflow_id))]
    return f"{view.workflow_id}  {s.state.value}\n{fields(pairs)}"


def describe_record(rec: PositionRecord, settings: Settings) -> str:
    """A store row (a position whose workflow is no longer running)."""
    pairs = [
        (
            "position",
            f"{rec.side} {dec(rec.quantity)} {rec.symbol} on {rec.account} ({rec.exchange})",
        ),
        ("entry", dec(rec.entry_price)),
        ("stop", dec(rec.stop_price)),
        ("exit", dec(rec.exit_price)),
        ("realised pnl", dec(rec.realized_pnl)),
        ("fees", dec(rec.fees)),
        ("funding", dec(rec.funding)),
        ("net pnl", dec(rec.realized_pnl - rec.fees + rec.funding)),
        ("reason", rec.exit_reason or "-"),
        ("opened", "-" if rec.opened_at is None else f"{rec.opened_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("closed", "-" if rec.closed_at is None else f"{rec.closed_at:%Y-%m-%d %H:%M:%S} UTC"),
        ("position id", rec.id),
        ("Web UI", ui_url(settings, rec.workflow_id)),
    ]
    return f"{rec.workflow_id}  {rec.status}\n{fields(pairs)}"


def rule_text(rule: TrailingRule | None) -> str:
    """A trailing rule as `posguard position` and `trail` say it; `off` for None."""
    if rule is None:
        return "off"
    parts = [f"callback {dec(rule.callback_pct)}%"]
    vol = rule.volatility
    if vol is not None:
        parts = [
            f"callback {dec(vol.multiple)} x ATR({vol.period}, {vol.timeframe}) "
            f"in [{dec(vol.min_pct)}%, {dec(vol.max_pct)}%], "
            f"{dec(rule.callback_pct)}% until measured"
        ]
    if rule.activation_pct is not None:
        parts.append(f"from +{dec(rule.activation_pct)}%")
    if rule.breakeven_trigger_pct is not None:
        parts.append(f"breakeven at +{dec(rule.breakeven_trigger_pct)}%")
    return ", ".join(parts)
