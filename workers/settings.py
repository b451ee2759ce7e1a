"""Settings: environment variables with the POSGUARD_ prefix and an optional TOML file.

Secrets are `SecretStr`: they print as `**********` and are never put in logs,
events or workflow inputs (workflows receive an account *name*; the worker
looks the keys up here).
"""

from __future__ import annotations

import os
import re
from datetime import timedelta
from decimal import Decimal
from pathlib import Path
from typing import Annotated

from pydantic import AliasChoices, BaseModel, BeforeValidator, Field, SecretStr
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    TomlConfigSettingsSource,
)

from domain.alerts import AlertChannel, AlertPolicy
from domain.reconcile import ForeignOrderPolicy, ReconcilePolicy, UntrackedPolicy
from domain.reconcile_io import Adoption
from domain.signal_wire import FieldMapping
from domain.sizing import SizingMode, SizingRequest, StopRule, TakeProfitRule
from domain.trailing import TrailingRule
from domain.wave_io import PositionTemplate
from domain.waves import WaveRules

EMBEDDED_PAPER = "embedded"


class AccountSettings(BaseModel):
    """One exchange account. Keys stay in the worker; workflows only see `name`."""

    name: str = Field(
        default="paper",
        description="The account's name: what workflows, events and `--account` know it by.",
    )
    exchange: str = Field(
        default="binanceusdm",
        description="ccxt id of the exchange: `binanceusdm` (Binance USD-M futures) or "
        "`bybit` (Bybit v5 linear USDT perpetuals).",
    )
    api_key: SecretStr = Field(
        default=SecretStr("paper-key"),
        description="The exchange API key (a secret: never logged, recorded or put in a "
        "workflow input). The default only suits the paper exchange.",
    )
    secret: SecretStr = Field(
        default=SecretStr("paper-secret"),
        description="The exchange API secret (a secret, like `api_key`).",
    )
    testnet: bool = Field(default=False, description="Use the exchange's testnet (sandbox).")
    paper_url: str | None = Field(
        default=None,
        description="Base URL of a paper exchange (the simulator); None means the real "
        'exchange. "embedded" means the paper exchange `posguard dev` starts in-process.',
    )
    paper_ws_url: str | None = Field(
        default=None,
        description="WebSocket base URL of that paper exchange (None: derived from `paper_url`).",
    )
    max_requests_per_second: Decimal = Field(
        default=Decimal(20),
        gt=0,
        description="Request budget of the account: ccxt's limiter spaces requests by "
        "1000 / this ms (weighted by endpoint cost), and the server caps the account's "
        "exchange task queue at this many activities per second. 20 = ccxt's Binance "
        "default.",
    )
    recv_window_ms: int = Field(
        default=5000,
        ge=1000,
        le=60000,
        description="The exchange refuses a signed request that reaches it later than this "
        "after it was signed (Binance and Bybit `recvWindow`). It bounds how long an order "
        "sent by a worker that died can still arrive, so it is also how long a retried "
        "entry waits before it may send again (docs/safety.md). 5000 = both exchanges' own "
        "default; ccxt's Binance default (10000) would make that wait twice as long.",
    )
    hedge_mode: bool = Field(
        default=False,
        description="The account trades in hedge mode (Binance `dualSidePosition`, Bybit "
        "positionIdx 1/2): a long and a short may be held on one symbol, each its own "
        "position workflow (`position/{account}/{exchange}/{symbol}/{long|short}`) whose "
        "orders only ever reduce its own side. It must match the exchange: the mode is read "
        "from the exchange before the first order, and a mismatch is refused.",
    )
    stop_with_entry: bool = Field(
        default=True,
        description="Where the exchange can (Bybit), send each entry with its stop-loss "
        "attached, so the stop is live before the entry fills and the position is never "
        "without one (docs/safety.md). False: the stop follows the fill as an order of its "
        "own, as on Binance (for an account whose position TP/SL a trader sets by hand).",
    )


_DURATION = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h)")
_UNITS = {"ms": "milliseconds", "s": "seconds", "m": "minutes", "h": "hours"}


def _duration(value: object) -> object:
    """`30s`, `500ms`, `2m`, `1h`, a bare number of seconds, or what pydantic takes."""
    if isinstance(value, int | float):
        return timedelta(seconds=value)
    if not isinstance(value, str):
        return value
    text = value.strip().lower()
    if text in ("", "0", "off", "none"):
        return None
    if re.fullmatch(r"\d+(\.\d+)?", text):
        return timedelta(seconds=float(text))  # float ok: a duration setting
    parts = _DURATION.findall(text)
    if parts and "".join(n + u for n, u in parts) == text:
        return sum((timedelta(**{_UNITS[u]: float(n)}) for n, u in parts), timedelta())
    return value


Duration = Annotated[timedelta, BeforeValidator(_duration)]


class ReconcileSettings(BaseModel):
    """The account reconciler (docs/reconcile.md), TOML table `[reconcile]`.

    `every`: the period of each account's Schedule `reconcile/{account}`; unset
    (or 0) means no Schedule is created (passes run only when asked for).
    """

    every: Annotated[timedelta | None, BeforeValidator(_duration)] = Field(
        default=timedelta(seconds=30),
        description="The period of each account's Schedule `reconcile/{account}`; unset "
        "(or 0) means no Schedule is created (passes run only when asked for).",
    )
    untracked: UntrackedPolicy = Field(
        default="adopt",
        description="A position no workflow owns: `adopt` it (a position workflow in adopt "
        "mode protects and manages it) or only `alert`.",
    )
    foreign_orders: ForeignOrderPolicy = Field(
        default="zombies",
        description="Orders placed by hand: `leave` them all, cancel only those that are "
        "`zombies` (reduce-only with no position, or that would flip a managed position), "
        "or cancel `all` (docs/reconcile.md).",
    )
    alert_after_passes: int = Field(
        default=3,
        ge=1,
        description="A finding that persists for this many passes raises one alert.",
    )
    adopt_stop_percent: Decimal = Field(
        default=Decimal(2),
        gt=0,
        lt=100,
        description="How an adopted position is protected: its stop, in percent from its "
        "entry price.",
    )
    adopt_emergency_stop_percent: Decimal = Field(
        default=Decimal(5),
        gt=0,
        lt=100,
        description="The emergency stop of an adopted position (used only if its stop "
        "cannot be placed), in percent from its entry price.",
    )
    trigger_debounce: Duration = Field(
        default=timedelta(milliseconds=500),
        description="The user stream asks for a pass when it reports an order or position "
        "no workflow owns; requests within this window make one pass.",
    )
    pass_timeout: Duration = Field(
        default=timedelta(minutes=5),
        description="A pass that has not finished after this long is given up (the next "
        "one starts).",
    )
    call_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="One activity attempt of a pass (a read, a cancel): one lost with a "
        "crashed worker is retried elsewhere after this long.",
    )

    @property
    def scheduled(self) -> bool:
        return self.every is not None and self.every > timedelta(0)

    def policy(self) -> ReconcilePolicy:
        """The decision policy of `domain.reconcile`."""
        return ReconcilePolicy(
            untracked=self.untracked,
            foreign_orders=self.foreign_orders,
            alert_after_passes=self.alert_after_passes,
        )

    def adoption(self, trailing: TrailingRule | None) -> Adoption:
        """How an adopted position is protected."""
        return Adoption(
            stop=StopRule(percent=self.adopt_stop_percent),
            emergency_stop_percent=self.adopt_emergency_stop_percent,
            trailing=trailing,
        )


class WaveSettings(BaseModel):
    """How waves of signals select and open positions (TOML `[waves]`).

    A wave collects its signals for `window` after the first one, then selects
    (domain.waves): scores at least `min_score_week` / `min_score_month`, at most
    `max_open_positions` per account, `max_new_per_wave`, total notional
    `max_exposure`, and no symbol again within `cooldown` of its last close.
    A signal older than `max_signal_age` at selection opens nothing. Each position
    is `notional_per_position` (quote currency) with its stop `stop_percent` from
    the entry (emergency stop `emergency_stop_percent`), an optional take-profit,
    and the global `[trailing]` settings. New entries pause while the free balance
    is below `min_free_balance`.
    """

    window: Duration = Field(
        default=timedelta(seconds=5),
        description="A wave collects its signals for this long after its first one, then selects.",
    )
    min_score_week: Decimal = Field(
        default=Decimal(50), description="A signal's weekly score must be at least this."
    )
    min_score_month: Decimal = Field(
        default=Decimal(30), description="A signal's monthly score must be at least this."
    )
    max_open_positions: int = Field(
        default=10,
        ge=0,
        description="At most this many positions per account, open and opening.",
    )
    max_new_per_wave: int = Field(
        default=3, ge=0, description="At most this many positions opened by one wave."
    )
    max_exposure: Decimal = Field(
        default=Decimal(5000),
        ge=0,
        description="Total notional per account, quote currency, that waves may reach.",
    )
    notional_per_position: Decimal = Field(
        default=Decimal(100),
        gt=0,
        description="Each position's size (notional), quote currency.",
    )
    cooldown: Duration = Field(
        default=timedelta(minutes=30),
        description="No symbol is opened again within this long of its last close.",
    )
    max_signal_age: Annotated[timedelta | None, BeforeValidator(_duration)] = Field(
        default=timedelta(minutes=5),
        description="A signal older than this at selection opens nothing (expired); "
        "unset: no limit.",
    )
    stop_percent: Decimal = Field(
        default=Decimal(2),
        gt=0,
        lt=100,
        description="Each position's stop, in percent from its entry price.",
    )
    emergency_stop_percent: Decimal = Field(
        default=Decimal(5),
        gt=0,
        lt=100,
        description="Each position's emergency stop (used only if its stop cannot be "
        "placed), in percent from its entry price.",
    )
    take_profit_percent: Decimal | None = Field(
        default=None,
        gt=0,
        lt=100,
        description="An optional take-profit, in percent from the entry price (None: none).",
    )
    max_position_age: Annotated[timedelta | None, BeforeValidator(_duration)] = Field(
        default=None,
        description="A wave's position is closed after this long (None: never).",
    )
    min_free_balance: Decimal = Field(
        default=Decimal(10),
        ge=0,
        description="New entries pause while the account's free balance is below this "
        "(`insufficient_balance`).",
    )
    call_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="One activity attempt of a wave (its reads of the account, its store "
        "writes): one lost with a crashed worker is retried elsewhere after this long.",
    )
    sweep_every: Annotated[timedelta | None, BeforeValidator(_duration)] = Field(
        default=timedelta(seconds=30),
        description="How often the ingest hands undecided stored signals to their waves "
        "again (signals stored just before a crash); 0/off: only at start.",
    )

    def rules(self) -> WaveRules:
        """The selection rules of `domain.waves`."""
        return WaveRules(
            min_score_week=self.min_score_week,
            min_score_month=self.min_score_month,
            max_open_positions=self.max_open_positions,
            max_new_per_wave=self.max_new_per_wave,
            max_exposure=self.max_exposure,
            notional_per_position=self.notional_per_position,
            cooldown=self.cooldown,
            max_signal_age=self.max_signal_age,
        )

    def template(self, trailing: TrailingRule | None) -> PositionTemplate:
        """How a selected signal's position is sized and protected."""
        return PositionTemplate(
            sizing=SizingRequest(mode=SizingMode.QUOTE, amount=self.notional_per_position),
            stop=StopRule(percent=self.stop_percent),
            emergency_stop_percent=self.emergency_stop_percent,
            take_profit=(
                None
                if self.take_profit_percent is None
                else TakeProfitRule(percent=self.take_profit_percent)
            ),
            trailing=trailing,
            max_age=self.max_position_age,
        )


class SignalServiceSettings(BaseModel):
    """One signal service posguard reads (TOML `[[signal_services]]`).

    `token` is a secret: it is never logged or recorded. `mapping` names the
    service's fields, exchange names and action words (domain.signal_wire), so a
    service other than the audit's can be read without code.
    """

    name: str = Field(
        min_length=1,
        max_length=100,
        description="The service's name: the store's key with each signal id.",
    )
    url: str = Field(description="The service's WebSocket URL.")
    token: SecretStr = Field(
        description="The service's access token (a secret: never logged or recorded)."
    )
    resume: bool = Field(
        default=True,
        description="The service supports `?after=<last id>`: on reconnect, resume after "
        "the last stored signal.",
    )
    idle_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="A connection silent for longer than this counts as dead and is reopened.",
    )
    wave_period: Duration = Field(
        default=timedelta(minutes=15),
        description="The service's scoring period: the signals of one period form a wave.",
    )
    accounts: list[str] | None = Field(
        default=None,
        description="The accounts this service's signals go to (each account's wave "
        "decides each signal); None: every configured account.",
    )
    mapping: FieldMapping = Field(
        default_factory=FieldMapping,
        description="How the service names its fields, exchanges and action words "
        "(domain/signal_wire.py).",
    )


class HealthSettings(BaseModel):
    """How each process judges its dependencies (TOML `[health]`, docs/health.md).

    A dependency is down once it has not answered for `max_age`. The worker asks
    each exchange account something cheap (the exchange's time) when nothing else
    has reached it for `probe_every`, and pings PostgreSQL and Temporal as often.
    """

    probe_every: Duration = Field(
        default=timedelta(seconds=10),
        gt=timedelta(0),
        description="The worker probes each exchange account (the exchange's time) when "
        "nothing else has reached it for this long, and pings PostgreSQL and Temporal as "
        "often.",
    )
    max_age: Duration = Field(
        default=timedelta(seconds=30),
        gt=timedelta(0),
        description="A dependency is down once it has not answered for this long; "
        "`/health` then answers 503 naming it.",
    )
    frozen_after: Duration = Field(
        default=timedelta(minutes=5),
        ge=timedelta(minutes=1),  # well past any workflow task timeout (10 s)
        description="A workflow whose task Temporal has held as started for this long "
        "(past any task timeout) is frozen: alerted, and reset when `reset_frozen`. The "
        "worker looks for them every fifth of this.",
    )
    reset_frozen: bool = Field(
        default=True,
        description="Reset a frozen workflow to its last completed task (as `temporal "
        "workflow reset --type LastWorkflowTask`); false: the alert only.",
    )


class AlertSettings(BaseModel):
    """How alerts reach people (TOML `[alerts]`; channels are `[[alert_channels]]`).

    docs/alerts.md: a condition's first alert is sent at once; its repeats as one
    reminder every `remind_every`; "resolved" when its raiser says so. A condition
    not raised for `quiet_after` is closed without a message. A delivery is tried
    `delivery_attempts` times (1 s doubling to 1 min) before it is recorded failed.
    """

    remind_every: Duration = Field(
        default=timedelta(minutes=15),
        description="A condition's repeats are sent as one reminder this often.",
    )
    quiet_after: Duration = Field(
        default=timedelta(minutes=30),
        description="A condition not raised for this long is closed without a message.",
    )
    delivery_attempts: int = Field(
        default=8,
        ge=1,
        description="A delivery is tried this many times before it is recorded failed.",
    )
    delivery_first_retry: Duration = Field(
        default=timedelta(seconds=1),
        description="The wait before a delivery's first retry; it doubles after each.",
    )
    delivery_max_retry: Duration = Field(
        default=timedelta(minutes=1),
        description="The longest wait between two tries of a delivery.",
    )
    delivery_timeout: Duration = Field(
        default=timedelta(seconds=30),
        description="One try's limit (a channel answers within 10 s): a worker that dies "
        "while it delivers is noticed after this long, and another worker tries again.",
    )
    dispatch_poll: Duration = Field(
        default=timedelta(seconds=5),
        description="The dispatcher looks at the outbox at least this often (LISTEN wakes "
        "it at once).",
    )

    def policy(self) -> AlertPolicy:
        return AlertPolicy(remind_every=self.remind_every, quiet_after=self.quiet_after)


def _config_file() -> Path:
    return Path(os.environ.get("POSGUARD_CONFIG", "posguard.toml"))


class Settings(BaseSettings):
    """Everything a posguard process reads at start."""

    model_config = SettingsConfigDict(
        env_prefix="POSGUARD_", env_nested_delimiter="__", extra="ignore"
    )

    database_url: SecretStr | None = Field(
        default=None,
        validation_alias=AliasChoices("POSGUARD_DATABASE_URL", "DATABASE_URL"),
        description="PostgreSQL URL of the store (a secret). With DATABASE_URL unset, the "
        "embedded PostgreSQL in `state_dir` is used.",
    )
    temporal_address: str | None = Field(
        default=None,
        validation_alias=AliasChoices("POSGUARD_TEMPORAL_ADDRESS", "TEMPORAL_ADDRESS"),
        description="host:port of the Temporal frontend. Unset: the embedded dev server "
        "on 127.0.0.1:`temporal_port`.",
    )
    temporal_namespace: str = Field(default="default", description="The Temporal namespace.")
    task_queue: str = Field(
        default="posguard",
        description="The task queue of workflows and store activities; every worker polls it.",
    )
    state_dir: Path = Field(
        default=Path(".posguard"),
        description="Where the embedded stack keeps its state (Temporal history in "
        "`temporal.db`, PostgreSQL data in `pg/`).",
    )
    temporal_port: int = Field(
        default=7233,
        description="gRPC port of the embedded Temporal dev server (and the address used "
        "when `temporal_address` is unset).",
    )
    ui_port: int = Field(default=8233, description="Port of the embedded Temporal server's Web UI.")
    health_port: int = Field(
        default=8081,
        description="Worker /health and /metrics (-1: none); the price gate uses "
        "health_port + 1, the ingest health_port + 2.",
    )
    health_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="The address the worker's, the gate's and the ingest's /health and "
        '/metrics listen on: 127.0.0.1 (this host only), or "0.0.0.0" (every interface) in '
        "containers, where Prometheus scrapes them from another container.",
    )
    web_port: int = Field(
        default=8704,
        description="Port of the dashboard (`posguard web`, and `posguard dev`; -1: none in "
        "`posguard dev`). It also serves the dashboard process's /health and /metrics.",
    )
    web_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="The address the dashboard listens on: 127.0.0.1 (this host only), or "
        '"0.0.0.0" (every interface) in containers, where the host publishes its port.',
    )
    web_refresh: Duration = Field(
        default=timedelta(seconds=1),
        description="How often the dashboard reads the positions' workflows, the store and "
        "the mark prices (one public request per open symbol and account each time); the "
        "page asks for the result as often.",
    )
    web_actions: bool = Field(
        default=False,
        description="The dashboard offers close and trail on open positions. Off by default "
        "(read-only): without it, or without `web_token`, the page shows no buttons and the "
        "action endpoints answer 403.",
    )
    web_token: SecretStr | None = Field(
        default=None,
        description="The token (a secret) a dashboard action must carry (`Authorization: "
        "Bearer ...`) when `web_actions` is on. Choose a long random one.",
    )
    sdk_metrics: bool = Field(
        default=True,
        description="The Temporal SDK's own metrics (temporal_*) on each process's /metrics.",
    )
    sim_port: int = Field(
        default=8700,
        description="Port of the embedded paper exchange (`posguard dev`).",
    )
    sim_admin_port: int = Field(
        default=8701, description="Port of the embedded paper exchange's admin API."
    )
    event_retention_days: int = Field(
        default=365,
        ge=1,
        description="Event partitions (whole months) older than this are dropped.",
    )
    event_partition_months_ahead: int = Field(
        default=3,
        ge=0,
        description="Monthly event partitions created ahead of time at every start.",
    )
    connect_timeout_seconds: int = Field(
        default=15,
        ge=1,
        description="How long a command waits for PostgreSQL or Temporal before it exits "
        "with code 2.",
    )
    accounts: list[AccountSettings] = Field(
        default_factory=lambda: [
            AccountSettings(paper_url=EMBEDDED_PAPER, max_requests_per_second=Decimal(200))
        ],
        description="The exchange accounts (TOML `[[accounts]]`). Default: one account "
        "`paper` on the embedded paper exchange.",
    )
    trailing: TrailingRule | None = Field(
        default=None,
        description="Trailing settings a new position gets unless told otherwise (None: no "
        "trailing).",
    )
    reconcile: ReconcileSettings = Field(
        default_factory=ReconcileSettings,
        description="The account reconciler (TOML `[reconcile]`).",
    )
    signal_services: list[SignalServiceSettings] = Field(
        default_factory=list,
        description="The signal services to read (TOML `[[signal_services]]`; none by default).",
    )
    alerts: AlertSettings = Field(
        default_factory=AlertSettings,
        description="How alerts reach people (TOML `[alerts]`).",
    )
    health: HealthSettings = Field(
        default_factory=HealthSettings,
        description="How each process judges its dependencies (TOML `[health]`).",
    )
    alert_channels: list[AlertChannel] = Field(
        default_factory=list,
        description="Where alerts are sent (TOML `[[alert_channels]]`: Telegram, Slack, "
        "JSON webhook).",
    )
    dev_alert_sink_port: int = Field(
        default=8703,
        description="`make dev`: a local webhook sink that prints every alert (port, or -1: none).",
    )
    waves: WaveSettings = Field(
        default_factory=WaveSettings,
        description="How waves of signals select and open positions (TOML `[waves]`).",
    )
    dev_signals: bool = Field(
        default=True,
        description="`posguard dev` starts a signal-service simulator emitting a small "
        "wave every `dev_signals_every` (and reads it) when no signal service is "
        "configured.",
    )
    dev_signals_every: Duration = Field(
        default=timedelta(minutes=3),
        description="How often the dev signal-service simulator emits a wave.",
    )
    dev_signals_port: int = Field(
        default=8702, description="Port of the dev signal-service simulator."
    )
    sim_price_path: str = Field(
        default="random_walk",
        description="Price path of the embedded paper exchange (see `posguard sim --help`).",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Precedence: explicit arguments, then environment, then the TOML file.
        return (
            init_settings,
            env_settings,
            TomlConfigSettingsSource(settings_cls, toml_file=_config_file()),
        )

    def account(self, name: str) -> AccountSettings:
        """The account called `name`; KeyError if it is not configured."""
        for acct in self.accounts:
            if acct.name == name:
                return acct
        raise KeyError(f"no account named {name!r} (configured: {[a.name for a in self.accounts]})")
