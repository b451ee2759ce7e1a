"""Benchmark: crossing tick -> moved stop live at the exchange, trailing positions on
each exchange side by side (Binance USD-M, then Bybit v5, in one run; issue 13).

Each venue runs phase (c) of bench_price_gate with the same parameters: `BENCH_TRAILING_
POSITIONS` trailing positions (default 100) on as many symbols, everything real
(Temporal dev server, embedded PostgreSQL, a posguard worker in its own process, the
paper exchange serving that venue to unmodified ccxt, the market-data process with
the price gate in this process). At a steady rate an idle position's symbol is set
just beyond the profit side of its band; the crossing time is taken right before
`sim.set_price`. `BENCH_TRAILING_CROSSINGS` crossings per venue (default 3 per position).

* Binance moves a stop new-first: a new stop ("mv"), then the old one cancelled. The
  moved stop's time is the new order's createTime in the exchange's ground truth.
* Bybit amends the one stop in place (`exchange.amend_stop`). The ground truth only
  keeps each order's last updateTime, so the time is the exchange engine's own event
  of the amend (same clock; the last one per symbol is checked against the ground
  truth, and on Binance every one against the createTime: `truth_disagreements`).

Per venue, from the ground truth's episodes (one per position): the most stops open
at once (`maxStops`; Binance 2 expected for a position that moved, Bybit 1), and the
unprotected time after the first stop went live (the episode's unprotectedMs less
the window from the entry's fill to its first stop; must be 0).

The goal in issue 13 is a comparison, no number. Prints human lines, then one JSON
object (a section per venue and the bybit/binance p99 ratio) as its last line.
"""

from __future__ import annotations

import json
import os
import sys
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_price_gate import C_RATE_PER_S, crossing_phase, crossing_symbols
from bench.running import run

POSITIONS = int(os.environ.get("BENCH_TRAILING_POSITIONS", "100"))
CROSSINGS = int(os.environ.get("BENCH_TRAILING_CROSSINGS", str(3 * POSITIONS)))
VENUES = ("binance", "bybit")
EXPECTED_MAX_STOPS = {"binance": 2, "bybit": 1}
"""Stops open at once in an episode whose stop moved: new-first (2) or amended (1)."""


def episodes(truth: dict[str, Any], symbols: list[str]) -> dict[str, Any]:
    """Stops at once and unprotected time after the first stop, per episode."""
    moved = {
        a["symbol"] for a in truth["algoOrders"] if a["createTime"] != a["updateTime"]
    }  # Binance: an old stop cancelled; Bybit: the stop amended
    max_stops: Counter[int] = Counter()
    max_stops_moved: Counter[int] = Counter()
    after_first: list[int] = []
    problems: list[str] = []
    eps = [e for e in truth["episodes"] if e["symbol"] in symbols]
    for ep in eps:
        end = ep["closedMs"] if ep["closedMs"] is not None else truth["timeMs"]
        alive = [  # the symbol's stops that were open at some time during the episode
            a["createTime"]
            for a in truth["algoOrders"]
            if a["symbol"] == ep["symbol"]
            and a["createTime"] <= end
            and (a["algoStatus"] == "NEW" or a["updateTime"] >= ep["openedMs"])
        ]
        max_stops[ep["maxStops"]] += 1
        if ep["symbol"] in moved:
            max_stops_moved[ep["maxStops"]] += 1
        if not alive:
            problems.append(f"{ep['symbol']}: episode {ep['episodeId']} without a stop")
            after_first.append(ep["unprotectedMs"])
            continue
        before_first = max(0, min(alive) - ep["openedMs"])
        after_first.append(ep["unprotectedMs"] - before_first)
    per_symbol = Counter(e["symbol"] for e in eps)
    problems += [f"{s}: {n} episodes" for s, n in per_symbol.items() if n != 1]
    problems += [f"{s}: no episode" for s in symbols if s not in per_symbol]
    return {
        "episodes": len(eps),
        "episodes_moved": sum(max_stops_moved.values()),
        "max_stops": {str(k): v for k, v in sorted(max_stops.items())},
        "max_stops_moved": {str(k): v for k, v in sorted(max_stops_moved.items())},
        "unprotected_after_first_stop_ms": {
            "total": sum(after_first),
            "max": max(after_first, default=-1),
        },
        "problems": problems[:10],
    }


async def venue_run(venue: str) -> dict[str, Any]:
    truths: list[dict[str, Any]] = []
    c = await crossing_phase(venue=venue, positions=POSITIONS, samples=CROSSINGS, truth_out=truths)
    e = episodes(truths[0], crossing_symbols(POSITIONS))
    expected = EXPECTED_MAX_STOPS[venue]
    section = {
        "positions": POSITIONS,
        "crossings": c["crossings"],
        "moves_measured": c["measured"],
        "missing": c["missing"],
        "moves": c["moves"],
        "rate_per_s": c["rate_per_s"],
        "crossing_to_moved_stop_ms": {"p50": c["p50_ms"], "p99": c["p99_ms"], "max": c["max_ms"]},
        "time_source": "ground_truth_createTime" if venue == "binance" else "engine_amend_event",
        "truth_disagreements": c["truth_disagreements"],
        **e,
        "max_stops_expected": expected,
        "max_stops_as_expected": set(e["max_stops_moved"]) == {str(expected)}
        and max(int(k) for k in e["max_stops"]) == expected,
        "unprotected_after_first_stop_zero": e["unprotected_after_first_stop_ms"]["max"] == 0,
    }
    ms = section["crossing_to_moved_stop_ms"]
    print(f"[{venue}]")
    print(
        f"  {c['measured']}/{c['crossings']} crossings -> moved stop live: p50 {ms['p50']} ms, "
        f"p99 {ms['p99']} ms, max {ms['max']} ms at {c['rate_per_s']}/s "
        f"({c['moves']} moves, {c['missing']} missing, "
        f"{c['truth_disagreements']} disagreements of the exchange's records)"
    )
    print(
        f"  maxStops per episode {e['max_stops']} (moved {e['max_stops_moved']}, expected "
        f"{expected}); unprotected after the first stop: total "
        f"{e['unprotected_after_first_stop_ms']['total']} ms, max "
        f"{e['unprotected_after_first_stop_ms']['max']} ms"
    )
    for problem in e["problems"]:
        print(f"  problem: {problem}")
    return section


async def main() -> None:
    print(
        f"crossing -> moved stop, {POSITIONS} trailing positions per venue, "
        f"{C_RATE_PER_S:g} crossings/s, {CROSSINGS} crossings per venue",
        flush=True,
    )
    result: dict[str, Any] = {}
    for venue in VENUES:
        result[venue] = await venue_run(venue)
    b, y = result["binance"], result["bybit"]
    p99_b, p99_y = b["crossing_to_moved_stop_ms"]["p99"], y["crossing_to_moved_stop_ms"]["p99"]
    p50_b, p50_y = b["crossing_to_moved_stop_ms"]["p50"], y["crossing_to_moved_stop_ms"]["p50"]
    result["ratio_p99_bybit_binance"] = round(p99_y / p99_b, 3) if p99_b > 0 else -1
    result["ratio_p50_bybit_binance"] = round(p50_y / p50_b, 3) if p50_b > 0 else -1
    result["goal"] = "comparison (issue 13), no numeric goal"
    print(
        f"bybit/binance: p99 {result['ratio_p99_bybit_binance']}, "
        f"p50 {result['ratio_p50_bybit_binance']}"
    )
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    run(main)
