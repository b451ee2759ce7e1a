"""Settings: environment with POSGUARD_ prefix, optional TOML, secrets never shown."""

from __future__ import annotations

from pathlib import Path

import pytest

from workers.settings import Settings


def test_defaults_use_the_embedded_stack(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("DATABASE_URL", raising=False)
    monkeypatch.delenv("TEMPORAL_ADDRESS", raising=False)
    monkeypatch.setenv("POSGUARD_CONFIG", "/nonexistent.toml")
    s = Settings()
    assert s.database_url is None and s.temporal_address is None
    assert s.ui_port == 8233


def test_environment_and_toml(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    config = tmp_path / "posguard.toml"
    config.write_text(
        'task_queue = "from-toml"\nui_port = 9000\n'
        '[[accounts]]\nname = "main"\nexchange = "binanceusdm"\n'
        'api_key = "KEY-123"\nsecret = "SECRET-456"\n'
    )
    monkeypatch.setenv("POSGUARD_CONFIG", str(config))
    monkeypatch.setenv("POSGUARD_UI_PORT", "9100")
    monkeypatch.setenv("DATABASE_URL", "postgresql://u:pw-789@db/posguard")
    s = Settings()
    assert s.task_queue == "from-toml"
    assert s.ui_port == 9100  # environment beats the file
    assert s.account("main").secret.get_secret_value() == "SECRET-456"
    shown = repr(s) + str(s) + s.model_dump_json()
    for secret in ("KEY-123", "SECRET-456", "pw-789"):
        assert secret not in shown
    with pytest.raises(KeyError):
        s.account("nope")
