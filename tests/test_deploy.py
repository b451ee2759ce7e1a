"""The deployment (docker-compose.yml, Dockerfile, deploy/) checked without Docker.

No Docker engine exists on the development machines, so this reads the files:
- the compose file has compose's structure, and its YAML (and deploy/'s) parses;
- every posguard service runs a real `posguard` command (the CLI's own parser);
- every POSGUARD_* / DATABASE_URL / TEMPORAL_ADDRESS it sets is a real setting, and the
  environment, filled from deploy/env.example, is valid Settings;
- the ports agree: Prometheus' targets (static, and DNS service discovery of the scaled
  workers) are each process's own health port, on 0.0.0.0 in its own container, as are
  the healthchecks; TEMPORAL_ADDRESS, DATABASE_URL, the OTLP endpoint;
- the workers are one service that scales (`deploy.replicas`, `--scale`): no fixed
  name, host port or proxy stands in the way;
- the Grafana dashboard and the alerting rules name only metrics docs/metrics.md lists;
- the Dockerfile's entrypoint is the installed console script.

PyYAML is not a dependency of the project, so `load_yaml` below reads the YAML subset
these files are written in (block mappings and sequences, flow collections, quoted and
plain scalars, anchors, aliases and `<<` merges) and refuses anything else. When PyYAML
happens to be importable, its reading is compared with ours.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import click
import pytest
from pydantic import BaseModel

from workers.cli import Invocation, parse
from workers.embedded import TIMER_PRECISION_ARGS
from workers.settings import Settings
from workers.settings_reference import _model_of
from workflows.search_attributes import ALL_KEYS

ROOT = Path(__file__).resolve().parents[1]
COMPOSE = ROOT / "docker-compose.yml"
DEPLOY = ROOT / "deploy"

# --------------------------------------------------------------------------- YAML subset


class YamlError(ValueError):
    pass


_PLAIN_BOOL = {"true": True, "false": False}
_AMBIGUOUS = {"yes", "no", "on", "off", "y", "n"}  # booleans in YAML 1.1 only: quote them


def _strip_comment(text: str) -> str:
    quote = None
    for i, ch in enumerate(text):
        if quote:
            if ch == quote:
                quote = None
        elif ch in "'\"" and (i == 0 or text[i - 1] in " [{,:-"):
            quote = ch
        elif ch == "#" and (i == 0 or text[i - 1] in " \t"):
            return text[:i].rstrip()
    return text.rstrip()


def _split_key(content: str) -> tuple[str, str] | None:
    """`key: rest` → (key, rest); None when the line is not a mapping entry."""
    if content[:1] in "[{":
        return None
    if content[:1] in "'\"":
        end = content.find(content[0], 1)
        if end < 0:
            raise YamlError(f"unterminated quote: {content}")
        key, after = content[1:end], content[end + 1 :]
        if after == ":" or after.startswith(": "):
            return key, after[1:].strip()
        return None
    match = re.match(r"^([^\s:#][^:#]*?|<<)\s*:(?:\s+(.*)|)$", content)
    if match is None:
        return None
    return match.group(1).strip(), (match.group(2) or "").strip()


def _scalar(text: str) -> Any:
    if text[:1] == '"':
        try:
            value = json.loads(text)
        except json.JSONDecodeError as exc:
            raise YamlError(f"bad double-quoted scalar: {text}") from exc
        return value
    if text[:1] == "'":
        if not (len(text) >= 2 and text.endswith("'")):
            raise YamlError(f"bad single-quoted scalar: {text}")
        return text[1:-1].replace("''", "'")
    if text[:1] in "|>!%@`":
        raise YamlError(f"unsupported YAML ({text[:1]}): {text}")
    if text in ("null", "~", "Null", "NULL"):
        return None
    if text.lower() in _PLAIN_BOOL:
        return _PLAIN_BOOL[text.lower()]
    if text.lower() in _AMBIGUOUS:
        raise YamlError(f"{text!r} is a boolean in YAML 1.1 and a string in 1.2: quote it")
    if re.fullmatch(r"[-+]?(0|[1-9][0-9]*)", text):
        return int(text)
    if re.fullmatch(r"[-+]?([0-9]+\.[0-9]*|\.[0-9]+)([eE][-+]?[0-9]+)?", text):
        return float(text)
    if re.fullmatch(r"0[0-9]+", text):
        raise YamlError(f"{text!r}: octal in YAML 1.1, quote it")
    return text


class _Flow:
    """A flow collection: `[a, "b", {c: d}]`, `{}`."""

    def __init__(self, text: str, aliases: dict[str, Any]) -> None:
        self.text, self.pos, self.aliases = text, 0, aliases

    def parse(self) -> Any:
        value = self._value()
        self._ws()
        if self.pos != len(self.text):
            raise YamlError(f"trailing text in flow collection: {self.text}")
        return value

    def _ws(self) -> None:
        while self.pos < len(self.text) and self.text[self.pos] == " ":
            self.pos += 1

    def _value(self) -> Any:
        self._ws()
        ch = self.text[self.pos : self.pos + 1]
        if ch == "[":
            return self._collection("]", self._value)
        if ch == "{":
            return dict(self._collection("}", self._pair))
        if ch in "'\"":
            end = self.pos + 1
            while True:
                end = self.text.index(ch, end)
                if ch == '"' and self.text[end - 1] == "\\":
                    end += 1
                    continue
                if ch == "'" and self.text[end + 1 : end + 2] == "'":
                    end += 2
                    continue
                break
            token, self.pos = self.text[self.pos : end + 1], end + 1
            return _scalar(token)
        match = re.compile(r"[^,\[\]{}]+").match(self.text, self.pos)
        if match is None:
            raise YamlError(f"bad flow collection: {self.text}")
        self.pos = match.end()
        token = match.group(0).strip()
        if token.startswith("*"):
            return self.aliases[token[1:]]
        return _scalar(token)

    def _pair(self) -> tuple[Any, Any]:
        self._ws()
        match = re.compile(r"([^:,\[\]{}]+):\s").match(self.text, self.pos)
        if match is None:
            raise YamlError(f"bad flow mapping: {self.text}")
        self.pos = match.end()
        return _scalar(match.group(1).strip()), self._value()

    def _collection(self, close: str, item: Any) -> list[Any]:
        self.pos += 1
        items: list[Any] = []
        self._ws()
        if self.text[self.pos : self.pos + 1] == close:
            self.pos += 1
            return items
        while True:
            items.append(item())
            self._ws()
            ch = self.text[self.pos : self.pos + 1]
            self.pos += 1
            if ch == close:
                return items
            if ch != ",":
                raise YamlError(f"expected , or {close} in {self.text}")


class _Block:
    def __init__(self, text: str) -> None:
        self.lines: list[tuple[int, str]] = []
        for raw in text.splitlines():
            if "\t" in raw[: len(raw) - len(raw.lstrip())]:
                raise YamlError("tab in indentation")
            content = _strip_comment(raw)
            if content.strip() in ("", "---"):
                continue
            self.lines.append((len(content) - len(content.lstrip()), content.strip()))
        self.aliases: dict[str, Any] = {}

    def parse(self) -> Any:
        if not self.lines:
            return None
        value, i = self._block(0, self.lines[0][0])
        if i != len(self.lines):
            raise YamlError(f"bad indentation at: {self.lines[i][1]}")
        return value

    def _is_item(self, i: int) -> bool:
        content = self.lines[i][1]
        return content == "-" or content.startswith("- ")

    def _block(self, i: int, indent: int) -> tuple[Any, int]:
        if self._is_item(i):
            return self._sequence(i, indent)
        return self._mapping(i, indent)

    def _inline(self, text: str) -> Any:
        if text.startswith("*"):
            try:
                return self.aliases[text[1:]]
            except KeyError as exc:
                raise YamlError(f"unknown alias {text}") from exc
        if text[:1] in "[{":
            return _Flow(text, self.aliases).parse()
        return _scalar(text)

    def _value(self, rest: str, i: int, indent: int) -> tuple[Any, int]:
        """The value after `key:` or `-` (on line i - 1), nested lines included."""
        anchor = None
        if rest.startswith("&"):
            anchor, _, rest = rest.partition(" ")
            anchor, rest = anchor[1:], rest.strip()
        if rest:
            value = self._inline(rest)
        elif i < len(self.lines) and (
            self.lines[i][0] > indent or (self.lines[i][0] == indent and self._is_item(i))
        ):
            value, i = self._block(i, self.lines[i][0])
        else:
            value = None
        if anchor:
            self.aliases[anchor] = value
        return value, i

    def _mapping(self, i: int, indent: int) -> tuple[dict[str, Any], int]:
        explicit: dict[str, Any] = {}
        merged: dict[str, Any] = {}
        while i < len(self.lines) and self.lines[i][0] == indent and not self._is_item(i):
            entry = _split_key(self.lines[i][1])
            if entry is None:
                raise YamlError(f"expected `key: value`: {self.lines[i][1]}")
            key, rest = entry
            value, i = self._value(rest, i + 1, indent)
            if key == "<<":
                for source in value if isinstance(value, list) else [value]:
                    if not isinstance(source, dict):
                        raise YamlError("<< merges a mapping")
                    merged.update({k: v for k, v in source.items() if k not in merged})
            elif key in explicit:
                raise YamlError(f"duplicate key {key!r}")
            else:
                explicit[_scalar(key) if key[:1] not in "'\"" else key] = value
        if i < len(self.lines) and self.lines[i][0] > indent:
            raise YamlError(f"bad indentation at: {self.lines[i][1]}")
        return {**merged, **explicit}, i

    def _sequence(self, i: int, indent: int) -> tuple[list[Any], int]:
        items: list[Any] = []
        while i < len(self.lines) and self.lines[i][0] == indent and self._is_item(i):
            rest = self.lines[i][1][1:].lstrip()
            if rest and not rest.startswith("&") and _split_key(rest) is not None:
                # `- key: value` opens a mapping indented like its first key
                inner = indent + len(self.lines[i][1]) - len(rest)
                self.lines[i] = (inner, rest)
                value, i = self._mapping(i, inner)
            else:
                value, i = self._value(rest, i + 1, indent)
            items.append(value)
        return items, i


def load_yaml(path: Path) -> Any:
    """The YAML file, read as the subset described in the module's docstring."""
    text = path.read_text(encoding="utf-8")
    ours = _Block(text).parse()
    try:
        import yaml  # type: ignore[import-untyped]
    except ImportError:
        return ours
    assert yaml.safe_load(text) == ours, f"{path}: the YAML subset reader disagrees with PyYAML"
    return ours


def test_the_yaml_reader_reads_what_it_claims() -> None:
    text = """
x-a: &a
  image: "img:1"   # a comment
  environment: &env
    A: "1"
    B: http://h:1/p#frag
s:
  one:
    <<: *a
    image: other
    command: ["worker", '--x', 3]
    list:
      - k: v
        k2: [a, {b: c}]
      - plain
    empty: {}
    env: *env
"""
    loaded = _Block(text).parse()
    one = loaded["s"]["one"]
    assert one["image"] == "other" and one["environment"] == {"A": "1", "B": "http://h:1/p#frag"}
    assert one["command"] == ["worker", "--x", 3]
    assert one["list"] == [{"k": "v", "k2": ["a", {"b": "c"}]}, "plain"]
    assert one["empty"] == {} and one["env"] is one["environment"]
    for bad in ("a: |\n  text\n", "a: yes\n", "a: 1\na: 2\n", "a:\n  b: 1\n   c: 2\n"):
        with pytest.raises(YamlError):
            _Block(bad).parse()


# --------------------------------------------------------------------------- the compose file

COMPOSE_TOP_LEVEL = {"version", "name", "services", "networks", "volumes", "configs", "secrets"}
COMPOSE_SERVICE_KEYS = {
    "image", "build", "command", "entrypoint", "environment", "env_file", "depends_on",
    "restart", "init", "healthcheck", "volumes", "ports", "expose", "network_mode",
    "networks", "deploy", "labels", "user", "working_dir", "logging", "profiles",
    "stop_grace_period", "stop_signal", "ulimits", "read_only", "tmpfs", "hostname",
    "container_name", "extra_hosts", "cap_add", "cap_drop", "security_opt", "pull_policy",
}  # fmt: skip


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = load_yaml(COMPOSE)
    assert isinstance(loaded, dict)
    return loaded


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return dict(compose["services"])


def posguard_services(services: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The services that run the posguard image (built from this repo)."""
    return {name: s for name, s in services.items() if s.get("build") == "."}


def env_example() -> dict[str, str]:
    """deploy/env.example as compose reads a .env (single quotes taken literally)."""
    values: dict[str, str] = {}
    for line in (DEPLOY / "env.example").read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, _, value = line.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's `${VAR}`, `${VAR:-default}`, `${VAR-default}`, `${VAR:?error}`, `$$`."""

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        name, op, arg = match.group(1), match.group(2) or "", match.group(3) or ""
        have = env.get(name)
        if op in (":-", "-"):
            return have if have or (op == "-" and have is not None) else arg
        if op in (":?", "?") and not have:
            raise AssertionError(f"${{{name}}} is required: {arg}")
        return have or ""

    return re.sub(r"\$\$|\$\{([A-Za-z_][A-Za-z0-9_]*)(?:(:?[-?])([^}]*))?\}", one, value)


def test_compose_structure(compose: dict[str, Any], services: dict[str, Any]) -> None:
    unknown = {k for k in compose if k not in COMPOSE_TOP_LEVEL and not k.startswith("x-")}
    assert not unknown, f"unknown top-level keys: {unknown}"
    assert services
    for name, service in services.items():
        assert isinstance(service, dict), name
        assert "image" in service or "build" in service, f"{name}: no image or build"
        assert set(service) <= COMPOSE_SERVICE_KEYS, (
            f"{name}: {set(service) - COMPOSE_SERVICE_KEYS}"
        )
        for dep in service.get("depends_on", []):
            assert dep in services, f"{name} depends on unknown service {dep}"
        mode = service.get("network_mode", "")
        if mode.startswith("service:"):
            assert mode.removeprefix("service:") in services, f"{name}: {mode}"
            assert not {"ports", "expose", "networks"} & set(service), f"{name}: {mode}"
        for volume in service.get("volumes", []):
            source = volume.split(":")[0]
            if source.startswith("./"):
                assert (ROOT / source).exists(), f"{name}: {source} does not exist"
            else:
                assert source in compose.get("volumes", {}), f"{name}: undeclared volume {source}"


def parse_posguard_command(command: list[str]) -> Invocation:
    """The command as `posguard` itself parses it; fails the test if it does not."""
    assert isinstance(command, list) and all(isinstance(a, str) for a in command), command
    try:
        return parse(command)
    except (click.UsageError, click.exceptions.Exit) as exc:
        raise AssertionError(f"`posguard {' '.join(command)}` does not parse") from exc


def test_every_posguard_service_runs_a_real_posguard_command(services: dict[str, Any]) -> None:
    ours = posguard_services(services)
    commands = {name: parse_posguard_command(s["command"]).command for name, s in ours.items()}
    assert sorted(set(commands.values())) == ["db", "gate", "ingest", "web", "worker"], commands
    assert parse_posguard_command(services["migrate"]["command"]).path == ("db", "migrate")
    for name, service in ours.items():
        if name == "migrate":
            continue
        assert service["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert service["depends_on"]["temporal-setup"]["condition"] == (
            "service_completed_successfully"
        )
        test = service["healthcheck"]["test"]
        assert test[0] == "CMD" and test[1] == "posguard", name
        parse_posguard_command(test[2:])
    assert services["migrate"].get("restart", "no") != "unless-stopped"


def _settings_field(model: type[BaseModel], path: list[str]) -> bool:
    """True when `path` (lower-case segments) names a field, a nested one included."""
    head, rest = path[0], path[1:]
    if head not in model.model_fields:
        return False
    if not rest:
        return True
    sub, is_list = _model_of(model.model_fields[head].annotation)
    return sub is not None and not is_list and _settings_field(sub, rest)


def setting_exists(variable: str) -> bool:
    """Whether posguard's settings read this environment variable."""
    aliases = {
        str(choice).lower()
        for info in Settings.model_fields.values()
        if info.validation_alias is not None
        for choice in getattr(info.validation_alias, "choices", [info.validation_alias])
    }
    if variable.lower() in aliases:
        return True
    prefix = Settings.model_config.get("env_prefix", "")
    delimiter = Settings.model_config.get("env_nested_delimiter") or "__"
    if not variable.upper().startswith(prefix):
        return False
    return _settings_field(Settings, variable[len(prefix) :].lower().split(delimiter))


def test_setting_exists_knows_real_and_unreal_names() -> None:
    for real in (
        "DATABASE_URL",
        "TEMPORAL_ADDRESS",
        "POSGUARD_TEMPORAL_ADDRESS",
        "POSGUARD_HEALTH_PORT",
        "POSGUARD_ACCOUNTS",
        "POSGUARD_RECONCILE__EVERY",
        "POSGUARD_TRAILING__VOLATILITY__MULTIPLE",
    ):
        assert setting_exists(real), real
    for unreal in (
        "POSGUARD_HEALTHPORT",
        "POSGUARD_RECONCILE__NOPE",
        "POSGUARD_ACCOUNTS__NAME",
        "POSGUARD_HEALTH_PORT__X",
    ):
        assert not setting_exists(unreal), unreal


def test_every_posguard_variable_is_a_real_setting(services: dict[str, Any]) -> None:
    for name, service in posguard_services(services).items():
        for variable in service["environment"]:
            if variable.startswith("POSGUARD_") or variable in ("DATABASE_URL", "TEMPORAL_ADDRESS"):
                assert setting_exists(variable), f"{name}: {variable} is not a setting"
            else:
                assert variable.startswith("OTEL_"), f"{name}: what reads {variable}?"


def service_settings(service: dict[str, Any], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The service's Settings, its environment filled from deploy/env.example."""
    env = env_example()
    for variable in [*Settings.model_fields, "DATABASE_URL", "TEMPORAL_ADDRESS"]:
        monkeypatch.delenv(variable.upper(), raising=False)
        monkeypatch.delenv(f"POSGUARD_{variable.upper()}", raising=False)
    monkeypatch.setenv("POSGUARD_CONFIG", str(ROOT / "no-posguard.toml-in-containers"))
    for variable, value in service["environment"].items():
        monkeypatch.setenv(variable, interpolate(str(value), env))
    return Settings()


def test_the_environment_is_valid_settings(services: dict[str, Any], monkeypatch) -> None:
    for service in posguard_services(services).values():
        with monkeypatch.context() as patch:
            settings = service_settings(service, patch)
        assert settings.database_url is not None and settings.temporal_address
        assert settings.accounts and all(a.paper_url is None for a in settings.accounts)
        assert settings.account("main").api_key.get_secret_value() == "your-api-key"


def _health_port(service: dict[str, Any], settings: Settings) -> int:
    parsed = parse_posguard_command(service["command"])
    args = parsed.args
    if parsed.command == "gate" and args.health_port is not None:
        return int(args.health_port)
    if parsed.command == "web":  # the dashboard serves /health and /metrics beside its page
        return int(args.port) if args.port is not None else settings.web_port
    offset = {"worker": 0, "gate": 1, "ingest": 2}[parsed.command]
    return settings.health_port + offset


def _exposed(service: dict[str, Any]) -> set[int]:
    ports = {int(p) for p in service.get("expose", [])}
    for mapping in service.get("ports", []):
        ports.add(int(str(mapping).rsplit(":", 1)[-1]))
    return ports


def scrape_targets(job: dict[str, Any]) -> list[tuple[str, int, str, bool]]:
    """(host, port, its `process` label, found by DNS) of each target of a scrape job:
    its static targets, and each name its DNS service discovery looks up (an A record
    per container of that service), labelled by the job's relabelling."""
    targets: list[tuple[str, int, str, bool]] = []
    for group in job.get("static_configs", []):
        for target in group["targets"]:
            host, port = target.rsplit(":", 1)
            targets.append((host, int(port), group["labels"]["process"], False))
    for sd in job.get("dns_sd_configs", []):
        assert sd["type"] == "A", "Docker's DNS answers a service's name with A records"
        for name in sd["names"]:
            labels = [
                rule["replacement"]
                for rule in job.get("relabel_configs", [])
                if rule.get("source_labels") == ["__meta_dns_name"]
                and rule.get("target_label") == "process"
                and re.fullmatch(rule["regex"], name)
                and re.fullmatch(rule["regex"], f"{name}.")
            ]
            assert len(labels) == 1, f"{name}: which process label do its targets get?"
            targets.append((name, int(sd["port"]), labels[0], True))
    return targets


def test_ports_agree(services: dict[str, Any], monkeypatch) -> None:
    ours = {n: s for n, s in posguard_services(services).items() if n != "migrate"}
    prometheus = load_yaml(DEPLOY / "prometheus.yml")
    job = next(j for j in prometheus["scrape_configs"] if j["job_name"] == "posguard")
    scraped: set[str] = set()
    for host, port, process, by_dns in scrape_targets(job):
        assert host in ours, f"{host}:{port}: not a posguard process"
        service = ours[host]
        with monkeypatch.context() as patch:
            settings = service_settings(service, patch)
        assert port == _health_port(service, settings), f"{host} listens elsewhere than {port}"
        assert port in _exposed(service), f"{host} does not expose {port}"
        assert parse_posguard_command(service["command"]).command == process, host
        replicas = service.get("deploy", {}).get("replicas", 1)
        assert by_dns or replicas == 1, f"{host}: a static target reaches one of its replicas"
        assert host not in scraped, f"{host} is scraped twice"
        scraped.add(host)
    assert scraped == set(ours), f"not scraped by Prometheus: {set(ours) - scraped}"

    for name, service in ours.items():
        with monkeypatch.context() as patch:
            settings = service_settings(service, patch)
        # every interface of its own container: Prometheus' container reaches it, and so
        # does its healthcheck on 127.0.0.1
        assert settings.health_host == "0.0.0.0", name
        if parse_posguard_command(service["command"]).command == "web":
            assert settings.web_host == "0.0.0.0", name
            assert f"127.0.0.1:{settings.web_port}:{settings.web_port}" in service["ports"]
        assert "network_mode" not in service, f"{name}: shares another's network"
        url = urlsplit(service["healthcheck"]["test"][-1])
        assert (url.hostname, url.port, url.path) == (
            "127.0.0.1",
            _health_port(service, settings),
            "/health",
        ), name

        assert settings.temporal_address is not None
        host, port = settings.temporal_address.rsplit(":", 1)
        assert int(port) in _exposed(services[host]), f"{name}: TEMPORAL_ADDRESS"
        assert services["temporal-ui"]["environment"]["TEMPORAL_ADDRESS"] == (
            settings.temporal_address
        )
        assert settings.database_url is not None
        db = urlsplit(settings.database_url.get_secret_value())
        assert db.hostname in services and db.port in _exposed(services[db.hostname])
        assert services[db.hostname]["environment"]["POSTGRES_DB"] == db.path.lstrip("/")
        assert services[db.hostname]["environment"]["POSTGRES_USER"] == db.username

        otlp = urlsplit(service["environment"]["OTEL_EXPORTER_OTLP_ENDPOINT"])
        assert otlp.hostname in services and otlp.port in _exposed(services[otlp.hostname])

    temporal = load_yaml(DEPLOY / "prometheus.yml")["scrape_configs"]
    temporal_target = next(j for j in temporal if j["job_name"] == "temporal")
    host, port = temporal_target["static_configs"][0]["targets"][0].rsplit(":", 1)
    assert services[host]["environment"]["PROMETHEUS_ENDPOINT"] == f"0.0.0.0:{port}"

    collector = load_yaml(DEPLOY / "otel-collector.yaml")
    endpoint = collector["receivers"]["otlp"]["protocols"]["http"]["endpoint"]
    assert int(endpoint.rsplit(":", 1)[1]) in _exposed(services["otel-collector"])
    for exporter in collector["exporters"].values():
        host, port = exporter["endpoint"].rsplit(":", 1)
        assert int(port) in _exposed(services[host])

    datasources = load_yaml(DEPLOY / "grafana/provisioning/datasources/prometheus.yml")
    url = urlsplit(datasources["datasources"][0]["url"])
    assert url.hostname in services and url.port in _exposed(services[url.hostname])


def test_the_workers_are_one_scalable_service(services: dict[str, Any]) -> None:
    ours = posguard_services(services)
    workers = [
        n for n, s in ours.items() if parse_posguard_command(s["command"]).command == "worker"
    ]
    assert workers == ["worker"], workers
    assert services["worker"]["deploy"]["replicas"] == 2
    for name, service in services.items():
        if service.get("deploy", {}).get("replicas", 1) > 1:
            # one name, host port or network namespace for all would admit one replica
            fixed = {"container_name", "hostname", "ports", "network_mode"} & set(service)
            assert not fixed, f"{name} cannot scale with {fixed}"
    # no proxy in front of the processes any more
    assert not [n for n, s in services.items() if "nginx" in str(s.get("image", ""))]
    assert not (DEPLOY / "node-proxy.conf").exists()
    assert not any("service:" in str(s.get("network_mode", "")) for s in services.values())


def test_temporal_gets_posguards_search_attributes() -> None:
    script = (DEPLOY / "temporal" / "setup-namespace.sh").read_text(encoding="utf-8")
    declared = re.search(r'SEARCH_ATTRIBUTES="([^"]+)"', script)
    assert declared is not None
    assert set(declared.group(1).split()) == {key.name for key in ALL_KEYS}
    dynamic = load_yaml(DEPLOY / "temporal" / "dynamicconfig.yaml")
    assert dynamic["history.timerProcessorMaxTimeShift"][0]["value"] == "20ms"


def test_the_deployed_temporal_has_the_embedded_servers_dynamic_config() -> None:
    """docker-compose's Temporal gets every value `make dev` gives its dev server."""
    dynamic = load_yaml(DEPLOY / "temporal" / "dynamicconfig.yaml")
    embedded = dict(
        arg.split("=", 1) for arg in TIMER_PRECISION_ARGS if arg != "--dynamic-config-value"
    )
    deployed = {key: str(rows[0]["value"]) for key, rows in dynamic.items()}
    assert {k: v.strip('"') for k, v in embedded.items()} == deployed
    assert deployed["history.workflowTaskRetryMaxInterval"] == "10s"


# --------------------------------------------------------------------------- metrics


def documented_metrics() -> set[str]:
    text = (ROOT / "docs" / "metrics.md").read_text(encoding="utf-8")
    return set(re.findall(r"^\| `(posguard_[a-z0-9_]+)` \|", text, re.M))


def used_metrics(expr: str) -> set[str]:
    names = set(re.findall(r"\bposguard_[a-z0-9_]+", expr))
    return {re.sub(r"_(bucket|count|sum)$", "", n) for n in names}


def test_the_dashboard_and_rules_use_documented_metrics() -> None:
    documented = documented_metrics()
    assert len(documented) > 30
    dashboard = json.loads((DEPLOY / "grafana/dashboards/posguard.json").read_text("utf-8"))
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert exprs
    used = set().union(*(used_metrics(e) for e in exprs))
    assert used and used <= documented, f"not in docs/metrics.md: {used - documented}"
    rules = load_yaml(DEPLOY / "prometheus-rules.yml")
    for rule in (r for g in rules["groups"] for r in g["rules"]):
        assert used_metrics(rule["expr"]) <= documented, rule["alert"]
    provider = load_yaml(DEPLOY / "grafana/provisioning/dashboards/posguard.yml")
    mounted = {
        v.split(":")[1]: v.split(":")[0]
        for v in load_yaml(COMPOSE)["services"]["grafana"]["volumes"]
    }
    assert mounted[provider["providers"][0]["options"]["path"]] == "./deploy/grafana/dashboards"


# --------------------------------------------------------------------------- the image


def test_the_dockerfile_runs_the_console_script() -> None:
    dockerfile = (ROOT / "Dockerfile").read_text(encoding="utf-8")
    scripts = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))["project"]["scripts"]
    entrypoint = re.findall(r"^ENTRYPOINT\s+(\[.*\])\s*$", dockerfile, re.M)
    assert len(entrypoint) == 1 and json.loads(entrypoint[0]) == ["posguard"]
    assert scripts["posguard"] == "workers.cli:main"
    bases = re.findall(r"^FROM\s+python:3\.(\d+)-slim", dockerfile, re.M)
    assert bases and all(int(minor) >= 11 for minor in bases)
    users = re.findall(r"^USER\s+(\S+)", dockerfile, re.M)
    assert users and users[-1] not in ("root", "0")
    assert re.search(r"pip install [^\n]*\.\s", dockerfile), "the package itself is installed"
    assert "posguard.toml" in (ROOT / ".dockerignore").read_text(encoding="utf-8")
