"""signals_ingest/ keeps to its layer (DESIGN.md, Layout): no simulator, and the
messages it shares with the position workflow come from domain/."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

import domain.position_messages as messages
import workflows.position_io as position_io
from signals_ingest.gate_process import PaperAccountError, exchange_market_data_client
from workers.exchanges import make_market_data_client
from workers.settings import AccountSettings

PACKAGE = Path(__file__).resolve().parents[2] / "signals_ingest"
# What signals_ingest may take from workflows/: the workflow's identity, not its messages.
WORKFLOW_CONTRACT = {"WORKFLOW_TYPE", "position_workflow_id"}


def imports(path: Path) -> list[tuple[str, str | None]]:
    """(module, name) for every import in `path`, at any depth (lazy ones too)."""
    found: list[tuple[str, str | None]] = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found += [(alias.name, None) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found += [(node.module, alias.name) for alias in node.names]
    return found


def sources() -> list[Path]:
    paths = sorted(PACKAGE.rglob("*.py"))
    assert paths
    return paths


@pytest.mark.parametrize("path", sources(), ids=lambda p: p.name)
def test_signals_ingest_never_imports_the_simulator(path: Path) -> None:
    bad = [m for m, _ in imports(path) if m == "simulator" or m.startswith("simulator.")]
    assert not bad, f"{path.name} imports {bad}: receive the paper client instead"


@pytest.mark.parametrize("path", sources(), ids=lambda p: p.name)
def test_signals_ingest_takes_only_the_workflow_contract_from_workflows(path: Path) -> None:
    for module, name in imports(path):
        if module == "workflows" or module.startswith("workflows."):
            assert module == "workflows.position_io" and name in WORKFLOW_CONTRACT, (
                f"{path.name} imports {name} from {module}; shared messages live in domain/"
            )


def test_running_the_gate_loads_no_simulator_module() -> None:
    code = (
        "import sys\n"
        "import signals_ingest.__main__, signals_ingest.gate_process\n"
        "import signals_ingest.market_feed, signals_ingest.price_gate\n"
        "import signals_ingest.temporal_waker, signals_ingest.user_stream\n"
        "loaded = sorted(m for m in sys.modules if m.split('.')[0] == 'simulator')\n"
        "assert not loaded, loaded\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        cwd=PACKAGE.parent,
        timeout=120,
    )
    assert out.returncode == 0, out.stderr


def test_the_workflow_module_re_exports_the_same_message_classes() -> None:
    # One class each: what the gate sends is what the workflow's handlers declare.
    assert position_io.BandView is messages.BandView
    assert position_io.PriceTick is messages.PriceTick
    assert position_io.ExchangeUpdate is messages.ExchangeUpdate


def paper_account() -> AccountSettings:
    return AccountSettings(
        name="paper",
        paper_url="http://127.0.0.1:1",
        paper_ws_url="ws://127.0.0.1:2",
        api_key=SecretStr("k"),
        secret=SecretStr("s"),
    )


def test_the_gates_own_factory_refuses_a_paper_account() -> None:
    with pytest.raises(PaperAccountError, match="paper exchange"):
        exchange_market_data_client(paper_account())


async def test_the_factory_the_workers_hand_in_reaches_the_paper_exchange() -> None:
    client = make_market_data_client(paper_account())
    try:
        assert type(client).__module__ == "simulator.client"
        assert client.apiKey == "k"
        assert client.urls["api"]["ws"]["linear"] == "ws://127.0.0.1:2/ws"
    finally:
        await client.close()
    real = make_market_data_client(AccountSettings(name="real", exchange="binanceusdm"))
    try:
        assert type(real).__module__.startswith("ccxt.pro")
    finally:
        await real.close()
