"""Benchmark: the chaos suite, every fault at once, then the books (issue 16, item 3).

    .venv/bin/python bench/chaos.py --kills 200 --positions 24 --minutes 10 --seed 1

N positions (one symbol each, long and short alternately, every one with a
take-profit, every other one trailing) are opened by waves of the signal-service
simulator on a random walk with gaps, while at random: posguard's workers, its
price gate and its ingest are SIGKILLed and started again, the Temporal dev server
is restarted on its database file, PostgreSQL is stopped for up to 30 s, and the
paper exchange answers 5xx, 429 then 418, slowly, or executes an order and drops
or delays its answer. Then everything is healed, every position is closed through
its workflow's `close` update, and the exchange's ground truth and PostgreSQL are
judged (tests/chaos_world.py, `judge`).

Flags: `--kills N` disruptions of processes and servers (default 50), `--positions
N` (default 8), `--minutes M` of chaos (default: 2.2 s per kill), `--seed S`,
`--workers N` (default 2), `--pg-down-max S` seconds (default 30), `--harsh`
(the harsh paper market on top: mark, index and last apart, price protection,
slippage, liquidation, funding every minute, Binance's algo lifecycle, listen keys
that expire after 10 min and streams cut every 5 min), `--venue bybit` (the paper
exchange's Bybit v5 venue and a `bybit` account instead of Binance USD-M: the
faults on Bybit's endpoints, its rate limit answered with retCode 10006 then an
HTTP 403 ban, each entry sent with its stop attached, stops moved in place).

Prints progress on stderr and, as the last line of stdout, one JSON object:
`entries_per_position` (every position exactly 1), `positions_left_open` (0),
`unprotected_ms_after_first_stop` (0 on every position), `orders_left_open` (0),
`fills_mismatched` (0), `events_duplicated` and `events_missing` (0),
`workflows_stuck` and `workflows_failed` (0), `order_rows_filled_off` (the `orders`
rows whose filled quantity is not the exchange's: a figure, not a violation), the
counts of each kill and fault injected, and `violations` (empty). Exit status 1
when there is a violation; the world's directory (the Temporal database, the
history of a position that does not replay) is then kept and named on stderr.

Figures (2-core machine shared with other work, seed in brackets): `--kills 50
--positions 8` (the suite's variant, [7]): 0 violations, 113 s of chaos. `--kills 200
--positions 24` [11]: 0 violations, 519 s of chaos, 125 kills of processes and 40
server outages, 593 exchange faults, every position closed in 31 s. `--kills 1000
--positions 48` [3]: the chaos ran to its end (2704 s: 439 worker, 42 both-workers,
147 gate, 170 ingest kills, 122 Temporal restarts, 80 PostgreSQL outages, 3292
exchange faults) and every position closed (106 s), then the `state` query of an
ended position failed: its history did not replay (nondeterminism, event 57
TimerStarted). That run printed no JSON (the judge now records such a failure as a
violation and keeps the history).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from simulator.client import VENUE_EXCHANGES  # noqa: E402
from tests.chaos_world import ChaosPlan, run_chaos  # noqa: E402

SECONDS_PER_KILL = 2.2  # float ok: the default pace of the disruptions


def plan_of(argv: list[str] | None = None) -> ChaosPlan:
    """The plan the command line asks for."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=50)
    parser.add_argument("--positions", type=int, default=8)
    parser.add_argument("--minutes", type=float, default=None)  # float ok: a duration
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--pg-down-max", type=float, default=30.0)  # float ok: seconds
    parser.add_argument("--no-reconcile", action="store_true")
    parser.add_argument("--keep", action="store_true", help="keep the world's directory")
    parser.add_argument("--harsh", action="store_true", help="the harsh paper market on top")
    parser.add_argument(
        "--venue",
        choices=sorted(VENUE_EXCHANGES),
        default="binance",
        help="the paper exchange's venue (and the account's exchange)",
    )
    args = parser.parse_args(argv)
    seconds = args.minutes * 60 if args.minutes is not None else args.kills * SECONDS_PER_KILL
    return ChaosPlan(
        positions=args.positions,
        kills=args.kills,
        seconds=seconds,
        seed=args.seed,
        workers=args.workers,
        pg_down_max_s=args.pg_down_max,
        reconcile_every_s=0 if args.no_reconcile else 15,
        heal_timeout_s=max(420.0, seconds),
        keep_dir=args.keep,
        harsh=args.harsh,
        venue=args.venue,
    )


def main() -> None:
    result = asyncio.run(run_chaos(plan_of()))
    print(json.dumps(result), flush=True)
    sys.stderr.flush()
    # The Temporal SDK's native runtime can abort the interpreter at finalisation
    # (bench/running.py): leave at once, with the verdict as the status.
    os._exit(1 if result["violations"] else 0)


if __name__ == "__main__":
    main()
