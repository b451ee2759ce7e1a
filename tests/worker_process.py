"""A posguard process of its own (the worker, or the ingest), to be SIGKILLed and started again.

Used by the crash tests (tests/integration) and the crash benchmark
(bench/bench_entry_crash.py): `python -m workers.cli worker` (or another command,
e.g. `ingest`) with the given environment, its output kept for the failure message.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path

from tests.waiting import PATIENCE_S

REPO = Path(__file__).resolve().parents[1]


@dataclass
class WorkerProcess:
    """`python -m workers.cli <command>` in its own process, with its log kept.

    `command` is the CLI's command line after `workers.cli` (default: the worker);
    `ready_line` is the text of the log line that says the process is ready (the
    worker's "worker polling task queue"; the ingest's "reading signal service").
    """

    env: dict[str, str]
    name: str
    command: str = "worker"
    ready_line: str = "worker polling task queue"
    proc: asyncio.subprocess.Process | None = None
    lines: list[str] = field(default_factory=list)
    _reader: asyncio.Task[None] | None = None

    async def start(self, *, wait: bool = True) -> None:
        """Start the process; with `wait`, return once it logs its `ready_line`."""
        self.proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "workers.cli",
            *self.command.split(),
            cwd=str(REPO),
            env=self.env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        self._reader = asyncio.create_task(self._read())
        if wait:
            await self.ready()

    async def ready(self) -> None:
        """Wait until the process logs its `ready_line` (for the worker: it polls its
        task queues)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + PATIENCE_S
        while not any(self.ready_line in line for line in self.lines):
            assert self.proc is not None
            if self.proc.returncode is not None or loop.time() > deadline:
                raise AssertionError(f"{self.command} {self.name} did not start:\n{self.log()}")
            await asyncio.sleep(0.05)

    async def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        while line := await self.proc.stdout.readline():
            self.lines.append(line.decode(errors="replace").rstrip())

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.returncode is None

    def log(self) -> str:
        return "\n".join(self.lines[-60:])

    async def kill(self) -> None:
        """SIGKILL: the process gets no chance to finish anything."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        await self._stop_reader()

    async def stop(self) -> None:
        """Graceful stop (SIGTERM), SIGKILL if it takes too long."""
        if self.alive:
            assert self.proc is not None
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 15)
            except TimeoutError:
                self.proc.send_signal(signal.SIGKILL)
                await self.proc.wait()
        await self._stop_reader()

    async def _stop_reader(self) -> None:
        if self._reader is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._reader, 5)
            self._reader = None
