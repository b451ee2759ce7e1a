"""Run the paper exchange: ``python -m simulator [--venue bybit] [--port N] [--price-path X]``.

Prints the REST, WebSocket and admin URLs plus the API key/secret, then runs
until interrupted (Ctrl-C / SIGTERM). ``main(argv)`` returns the exit code.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import signal
import sys
from typing import Any

from simulator.harsh import PRESETS, preset
from simulator.markets import build_markets
from simulator.prices import SCENARIOS, make_source
from simulator.server import PaperExchange


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="posguard sim",
        description="Binance USD-M (default) or Bybit v5 linear paper exchange for ccxt.",
    )
    p.add_argument(
        "--venue",
        choices=("binance", "bybit"),
        default="binance",
        help="wire format served: binance (/fapi) or bybit (/v5)",
    )
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.add_argument("--port", type=int, default=0, help="REST+WS port (0 = ephemeral)")
    p.add_argument("--admin-port", type=int, default=0, help="admin API port (0 = ephemeral)")
    p.add_argument(
        "--symbols",
        default="",
        help="extra symbols, comma separated (the six defaults are always present)",
    )
    p.add_argument("--seed", type=int, default=0, help="seed of synthetic price paths")
    p.add_argument(
        "--price-path",
        default="none",
        help=f"none | {' | '.join(SCENARIOS)} | csv:PATH[@SPEED]",
    )
    p.add_argument("--tick-interval", type=int, default=1000, help="price tick interval in ms")
    p.add_argument(
        "--weight-limit", type=int, default=2400, help="request weight per IP per minute"
    )
    p.add_argument("--api-key", default=None, help="API key to accept (random if omitted)")
    p.add_argument("--api-secret", default=None, help="API secret (random if omitted)")
    p.add_argument(
        "--hedge-mode",
        action="store_true",
        help="start the account in hedge mode (a long and a short per symbol)",
    )
    p.add_argument(
        "--harsh",
        nargs="?",
        const="harsh",
        default="calm",
        choices=PRESETS,
        help="harsh-market preset: 'harsh' (alone: every behaviour on) or 'calm' (default)",
    )
    p.add_argument(
        "--harsh-set",
        action="append",
        default=[],
        metavar="FIELD=VALUE",
        help="one harsh-market switch, e.g. liquidation=true or stream_cut_ms=60000 (repeatable)",
    )
    return p


def harsh_from_args(args: argparse.Namespace) -> Any:
    """The HarshConfig of ``--harsh`` and ``--harsh-set`` (ValueError on a bad field)."""
    fields: dict[str, str] = {}
    for item in args.harsh_set:
        name, sep, value = item.partition("=")
        if not sep:
            raise ValueError(f"--harsh-set wants FIELD=VALUE, got {item!r}")
        fields[name.strip()] = value.strip()
    return preset(args.harsh, **fields)


async def _run(args: argparse.Namespace) -> int:
    symbols = [s.strip() for s in args.symbols.split(",") if s.strip()]
    markets = build_markets(symbols)
    source = make_source(args.price_path, markets, args.seed, args.tick_interval)
    harsh = harsh_from_args(args)
    sim = PaperExchange(
        host=args.host,
        port=args.port,
        admin_port=args.admin_port,
        markets=markets,
        seed=args.seed,
        price_source=source,
        tick_interval_ms=args.tick_interval,
        api_key=args.api_key,
        api_secret=args.api_secret,
        weight_limit=args.weight_limit,
        venue=args.venue,
        hedge_mode=args.hedge_mode,
        harsh=harsh,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError, RuntimeError):
            loop.add_signal_handler(sig, stop.set)
    async with sim:
        info = {
            "rest_url": sim.rest_url,
            "ws_url": sim.ws_url,
            "admin_url": sim.admin_url,
            "api_key": sim.api_key,
            "api_secret": sim.api_secret,
            "symbols": list(markets),
            "venue": args.venue,
            "harsh": {k: v for k, v in harsh.to_dict().items()},
        }
        print(f"paper exchange REST  {sim.rest_url}", flush=True)
        print(f"paper exchange WS    {sim.ws_url}", flush=True)
        print(f"paper exchange admin {sim.admin_url}", flush=True)
        print(json.dumps(info), flush=True)
        await stop.wait()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``), serve until interrupted, return 0."""
    args = _parser().parse_args(argv)
    try:
        return asyncio.run(_run(args))
    except KeyboardInterrupt:
        return 0


if __name__ == "__main__":
    sys.exit(main())
