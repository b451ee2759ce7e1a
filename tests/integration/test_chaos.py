"""The chaos suite's short variant (issue 16, item 3): about 50 kills in two minutes.

Eight positions (long and short alternately, each with a take-profit, every other one
trailing) are opened by waves of signals on a random walk with gaps, while posguard's
workers, gate and ingest are SIGKILLed and started again, the Temporal dev server is
restarted on its database file, PostgreSQL is stopped for up to 10 s, and the paper
exchange answers 5xx, 429 then 418, slowly, or executes and drops or delays its
answer. Then everything is healed and every position closed through its `close`
update. The exchange's ground truth and PostgreSQL must show no violation: one entry
per position, nothing left open, no moment without a stop after the first, the
store's fills the exchange's, every lifecycle event once, no workflow stuck or failed
(and each ended position's history replays on the code: no nondeterminism), every
signal decided once. See tests/chaos_world.py; the long runs are
`bench/chaos.py` (e.g. `--kills 1000`).

The world is the test's own (its own Temporal dev server and PostgreSQL, which it
stops and restarts), so it uses none of the session's servers. A seed other than the
default: POSGUARD_CHAOS_SEED=5.
"""

from __future__ import annotations

import json
import os

import pytest

from tests.chaos_world import ChaosPlan, run_chaos

pytestmark = pytest.mark.integration

PLAN = ChaosPlan(
    positions=8,
    kills=50,
    seconds=110.0,
    seed=int(os.environ.get("POSGUARD_CHAOS_SEED", "7")),
    pg_down_max_s=10.0,
    heal_timeout_s=300.0,
)


async def test_every_fault_at_once_leaves_exact_books_and_nothing_unprotected() -> None:
    result = await run_chaos(PLAN)
    print(json.dumps(result))
    assert result["violations"] == [], "\n".join(result["violations"])
    assert result["kills"]["total"] == PLAN.kills
    assert result["positions"] >= PLAN.positions // 2, "the waves opened too few positions"
    assert set(result["entries_per_position"]) <= {"0", "1"}
    assert result["unprotected_ms_after_first_stop"]["max"] == 0
    assert result["workflows_stuck"] == result["workflows_failed"] == 0
