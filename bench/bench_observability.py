"""Benchmark: what metrics and tracing cost on the stop's critical path.

Runs phase (c) of bench_price_gate twice, side by side in one run: crossing tick →
new stop order at the exchange, 100 trailing positions, everything real (Temporal dev
server, PostgreSQL, a worker process, the paper exchange, the market-data process).

- `off`: no tracing, no Temporal SDK metrics exporter, nothing scrapes `/metrics`
  (posguard's own counters are always counted: they cannot be switched off);
- `on`: the worker and the gate trace every workflow, activity, exchange request and
  store write to an OTLP endpoint (a local sink that accepts them), the SDK's metrics
  are exported, and both `/metrics` pages are scraped every 5 s.

Goal (issue 14): the `on` p99 within 10 % of the `off` p99. Prints human lines, then
one JSON object as its last line.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_price_gate import C_POSITIONS, C_RATE_PER_S, crossing_phase
from bench.running import run

SAMPLES = int(os.environ.get("BENCH_OBS_SAMPLES", "300"))  # crossings per side
# BENCH_OBS_TRACING=0: "on" has the metrics only (the SDK's, and the scrapes)
TRACING = os.environ.get("BENCH_OBS_TRACING", "1") != "0"
GOAL_RATIO = 1.10  # float ok: on p99 / off p99


async def main() -> None:
    print(
        f"crossing -> new stop, {C_POSITIONS} trailing positions, {C_RATE_PER_S:g} crossings/s, "
        f"{SAMPLES} crossings per side"
    )
    off = await crossing_phase(observed=False, samples=SAMPLES)
    print(f"off: p50 {off['p50_ms']} ms, p99 {off['p99_ms']} ms, max {off['max_ms']} ms")
    on = await crossing_phase(observed=True, samples=SAMPLES, tracing=TRACING)
    print(
        f"on:  p50 {on['p50_ms']} ms, p99 {on['p99_ms']} ms, max {on['max_ms']} ms "
        f"({on['otlp_exports']} OTLP exports, {on['otlp_bytes']:,} bytes; "
        f"{on['scrapes']} scrapes, {on['scrape_failures']} failed, p50 {on['scrape_p50_ms']} ms, "
        f"max {on['scrape_max_ms']} ms)"
    )
    ratio_p99 = on["p99_ms"] / off["p99_ms"] if off["p99_ms"] > 0 else -1.0  # float ok
    ratio_p50 = on["p50_ms"] / off["p50_ms"] if off["p50_ms"] > 0 else -1.0  # float ok
    met = 0 < ratio_p99 <= GOAL_RATIO and not off["missing"] and not on["missing"]
    print(
        f"on/off p99 {ratio_p99:.3f}, p50 {ratio_p50:.3f} (goal p99 <= {GOAL_RATIO}: "
        f"{'met' if met else 'NOT met'})"
    )
    result = {
        "samples_per_side": SAMPLES,
        "on_tracing": TRACING,
        "off_p50_ms": off["p50_ms"],
        "off_p99_ms": off["p99_ms"],
        "off_max_ms": off["max_ms"],
        "off_missing": off["missing"],
        "on_p50_ms": on["p50_ms"],
        "on_p99_ms": on["p99_ms"],
        "on_max_ms": on["max_ms"],
        "on_missing": on["missing"],
        "on_otlp_exports": on["otlp_exports"],
        "on_scrapes": on["scrapes"],
        "on_scrape_failures": on["scrape_failures"],
        "on_scrape_p50_ms": on["scrape_p50_ms"],
        "on_scrape_max_ms": on["scrape_max_ms"],
        "ratio_p99": round(ratio_p99, 3),
        "ratio_p50": round(ratio_p50, 3),
        "goal_ratio_p99": GOAL_RATIO,
        "goal_met": met,
    }
    print(json.dumps(result), flush=True)


if __name__ == "__main__":
    run(main)
