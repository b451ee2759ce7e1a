"""Settings: environment with POSGUARD_ prefix, optional TOML, secrets never shown."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
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


def test_the_reconciler_runs_every_30_s_by_default(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("POSGUARD_RECONCILE__EVERY", raising=False)  # tests/conftest.py sets it
    monkeypatch.setenv("POSGUARD_CONFIG", "/nonexistent.toml")
    r = Settings().reconcile
    assert r.scheduled and r.every == timedelta(seconds=30)
    assert r.untracked == "adopt" and r.foreign_orders == "zombies"
    policy, adoption = r.policy(), r.adoption(None)
    assert policy.alert_after_passes == 3 and adoption.stop.percent == Decimal(2)


@pytest.mark.parametrize(
    ("text", "every"),
    [
        ("10s", timedelta(seconds=10)),
        ("2m", timedelta(minutes=2)),
        ("1m30s", timedelta(seconds=90)),
        ("45", timedelta(seconds=45)),
        ("off", None),
    ],
)
def test_reconcile_settings_from_toml_and_environment(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, text: str, every: timedelta | None
) -> None:
    config = tmp_path / "posguard.toml"
    config.write_text(
        f'[reconcile]\nevery = "{text}"\nuntracked = "alert"\ntrigger_debounce = "250ms"\n'
    )
    monkeypatch.setenv("POSGUARD_CONFIG", str(config))
    monkeypatch.delenv("POSGUARD_RECONCILE__EVERY", raising=False)
    r = Settings().reconcile
    assert r.every == every and r.scheduled is (every is not None)
    assert r.untracked == "alert" and r.trigger_debounce == timedelta(milliseconds=250)
    monkeypatch.setenv("POSGUARD_RECONCILE__FOREIGN_ORDERS", "leave")
    assert Settings().reconcile.foreign_orders == "leave"  # environment beats the file
    monkeypatch.setenv("POSGUARD_RECONCILE__FOREIGN_ORDERS", "everything")
    with pytest.raises(ValueError, match="foreign_orders"):
        Settings()


def test_signal_services_from_toml_keep_their_token_secret(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    config = tmp_path / "posguard.toml"
    config.write_text(
        "[[signal_services]]\n"
        'name = "fas"\nurl = "wss://signals.example/ws"\ntoken = "TOKEN-abc"\n'
        'wave_period = "5m"\nresume = false\n'
        "[signal_services.mapping]\n"
        'symbol = "ticker"\n'
        "[signal_services.mapping.actions]\n"
        'UP = "BUY"\nDOWN = "SELL"\n'
    )
    monkeypatch.setenv("POSGUARD_CONFIG", str(config))
    [svc] = Settings().signal_services
    assert (svc.name, svc.resume, svc.wave_period) == ("fas", False, timedelta(minutes=5))
    assert svc.mapping.symbol == "ticker" and svc.mapping.actions["UP"].value == "BUY"
    assert svc.token.get_secret_value() == "TOKEN-abc"
    assert "TOKEN-abc" not in repr(svc) + svc.model_dump_json()


def test_health_durations_read_like_the_others(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """docs/health.md's `[health]` example, as written there, and the environment."""
    config = tmp_path / "posguard.toml"
    config.write_text('[health]\nprobe_every = "10s"\nmax_age = "1m30s"\n')
    monkeypatch.setenv("POSGUARD_CONFIG", str(config))
    monkeypatch.delenv("POSGUARD_HEALTH__PROBE_EVERY", raising=False)
    monkeypatch.delenv("POSGUARD_HEALTH__MAX_AGE", raising=False)
    h = Settings().health
    assert (h.probe_every, h.max_age) == (timedelta(seconds=10), timedelta(seconds=90))
    monkeypatch.setenv("POSGUARD_HEALTH__PROBE_EVERY", "500ms")
    monkeypatch.setenv("POSGUARD_HEALTH__MAX_AGE", "PT20S")  # ISO 8601 still reads
    h = Settings().health
    assert (h.probe_every, h.max_age) == (timedelta(milliseconds=500), timedelta(seconds=20))
    monkeypatch.setenv("POSGUARD_HEALTH__PROBE_EVERY", "off")  # never probing is no option
    with pytest.raises(ValueError, match="probe_every"):
        Settings()
