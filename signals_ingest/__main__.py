"""`python -m signals_ingest gate [--shard i/n] [--health-port N]`: the market-data process.

Reads the same settings as every posguard process (POSGUARD_* environment,
posguard.toml). Runs until SIGINT/SIGTERM. Exit codes: 0 stopped, 2 Temporal
unreachable.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import sys

from signals_ingest.gate_process import run_gate
from signals_ingest.market_feed import Shard

__all__ = ["main", "run_gate"]


async def _gate(args: argparse.Namespace) -> int:
    # The process's composition root: settings, and the client factory that also
    # knows the paper exchange, come from workers/ (which may import everything).
    from workers.exchanges import make_market_data_client
    from workers.settings import Settings
    from workers.temporal import UnreachableError

    settings = Settings()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_gate(
            settings,
            stop,
            shard=Shard.parse(args.shard),
            health_port=args.health_port,
            market_data_client=make_market_data_client,
        )
    except UnreachableError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m signals_ingest")
    sub = parser.add_subparsers(dest="command", required=True)
    gate = sub.add_parser("gate", help="market-data feed + price gate")
    gate.add_argument("--shard", default="0/1", help="this process's symbols: i/n (default 0/1)")
    gate.add_argument(
        "--health-port",
        type=int,
        default=None,
        help="port of /health (default: settings.health_port + 1; 0 = any; -1 = none)",
    )
    gate.add_argument("--log-level", default="INFO")
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(_gate(args))


if __name__ == "__main__":
    sys.exit(main())
