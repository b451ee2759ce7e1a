"""The README's command blocks, run as written against `posguard dev`.

Every ```bash / ```sh block of README.md is run, command by command, in a shell whose
PATH has the project's `.venv/bin` first (as a user who activated it), against a
`posguard dev` stack this test starts. Only what a reader would change is changed:
the stack runs on free ports (each default port in a command is replaced by the
one in use) and a fresh state directory; optional parts written `[like this]` are
left out; a following command (`-f`) runs for two seconds and must still be running.
Where a block's commands need something first (a position to close), the test does
it with the README's own commands, and says so in `BEFORE`.

Each command must exit 0 (a pipeline: as the shell says). The only blocks not run
are the two at the top (`make dev`, `make test`: this is what they run).
"""

from __future__ import annotations

import asyncio
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import pytest
import pytest_asyncio

from tests.waiting import PATIENCE_S
from workers.embedded import stop_postgres

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[1]
README = ROOT / "README.md"
BIN = Path(sys.executable).parent
FOLLOW_S = 2  # how long a following command (`-f`) runs before it is stopped
BLOCK = re.compile(r"^```(?:bash|sh)\n(.*?)^```", re.MULTILINE | re.DOTALL)
# Default port -> the setting that moves it (see README: "Each port above is a setting").
PORTS = {
    7233: "POSGUARD_TEMPORAL_PORT",
    8233: "POSGUARD_UI_PORT",
    8081: "POSGUARD_HEALTH_PORT",  # the gate on +1, the ingest on +2
    8700: "POSGUARD_SIM_PORT",
    8701: "POSGUARD_SIM_ADMIN_PORT",
    8702: "POSGUARD_DEV_SIGNALS_PORT",
    8703: "POSGUARD_DEV_ALERT_SINK_PORT",
    8704: "POSGUARD_WEB_PORT",
}
NOT_RUN = ("make dev", "make test")
# What a command needs done first, with the README's own commands. The `temporal`
# block closes and then cancels the BTCUSDT position the block before it closed:
# each gets a position to act on.
OPEN_BTC = "posguard open BTCUSDT long --quote 1200 --stop 2%"
BEFORE = {
    "temporal workflow query -w 'position/paper/binanceusdm/BTCUSDT'": [OPEN_BTC],
    "temporal workflow cancel -w 'position/paper/binanceusdm/BTCUSDT'": [OPEN_BTC],
}


def commands(block: str) -> list[str]:
    """The block's commands: continuation lines joined, comments and blank lines gone."""
    joined = re.sub(r"\\\n\s*", " ", block)
    found = []
    for line in joined.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        found.append(line)
    return found


def readme_blocks() -> list[list[str]]:
    """Each runnable block of README.md, as its list of commands."""
    blocks = [commands(m.group(1)) for m in BLOCK.finditer(README.read_text())]
    return [b for b in blocks if b and not any(c.startswith(NOT_RUN) for c in b)]


def without_options(command: str) -> str:
    """`[--all]`-style optional parts left out (outside quotes only)."""
    return re.sub(r"\s\[[^\]'\"]*\]", "", command)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class Dev:
    """The running `posguard dev` and the environment a user's shell would have."""

    env: dict[str, str]
    ports: dict[int, int]
    log: Path

    def localised(self, command: str) -> str:
        """The command with each default port replaced by the one this stack uses."""
        for default, port in self.ports.items():
            command = re.sub(rf"(?<=[:/]){default}\b", str(port), command)
        return command

    async def run(self, command: str) -> tuple[int | None, str]:
        """Run one README command in bash; (exit code or None if it follows, output)."""
        line = self.localised(without_options(command))
        follows = re.search(r"\s-f\b", line) is not None
        proc = await asyncio.create_subprocess_exec(
            "bash",
            "-o",
            "pipefail",
            "-c",
            line,
            env=self.env,
            cwd=ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        try:
            out, _ = await asyncio.wait_for(
                proc.communicate(), FOLLOW_S if follows else 2 * PATIENCE_S
            )
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
            if follows:
                return None, out.decode()
            raise AssertionError(f"{line!r} did not finish in {2 * PATIENCE_S:g} s") from None
        return proc.returncode, out.decode()


async def wait_healthy(url: str, log: Path, proc: subprocess.Popen[bytes]) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 3 * PATIENCE_S
    async with aiohttp.ClientSession() as http:
        while True:
            if proc.poll() is not None:
                raise AssertionError(f"posguard dev exited {proc.returncode}:\n{log.read_text()}")
            try:
                async with http.get(url) as resp:
                    if resp.status == 200:
                        return
            except aiohttp.ClientError:
                pass
            if loop.time() > deadline:
                raise AssertionError(f"{url} not healthy:\n{log.read_text()[-5000:]}")
            await asyncio.sleep(0.5)


@pytest_asyncio.fixture(scope="module", loop_scope="session")
async def dev() -> AsyncIterator[Dev]:
    state = Path(tempfile.mkdtemp(prefix="posguard-readme-"))
    state.chmod(0o755)  # the embedded PostgreSQL runs as its own user
    ports = {default: free_port() for default in PORTS}
    # The gate and the ingest serve on health_port + 1 and + 2.
    ports[8082], ports[8083] = ports[8081] + 1, ports[8081] + 2
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("POSGUARD_") and k not in ("DATABASE_URL", "TEMPORAL_ADDRESS")
    }
    env.update(
        {setting: str(ports[default]) for default, setting in PORTS.items()},
        PATH=f"{BIN}{os.pathsep}{env.get('PATH', '')}",
        POSGUARD_CONFIG="/nonexistent.toml",
        POSGUARD_STATE_DIR=str(state),
        # Waves every few seconds, so `posguard waves` has some; none opens a position,
        # so the README's own BTCUSDT position is the only one.
        POSGUARD_DEV_SIGNALS_EVERY="3s",
        POSGUARD_WAVES__MAX_NEW_PER_WAVE="0",
        PYTHONUNBUFFERED="1",
    )
    log = state / "dev.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [str(BIN / "posguard"), "dev"], env=env, cwd=ROOT, stdout=out, stderr=out
        )
    # The README's commands name the shell's Temporal (TEMPORAL_ADDRESS, default
    # 127.0.0.1:7233): here the dev stack's, on its port. (`posguard dev` itself would
    # take a TEMPORAL_ADDRESS for a server of the user's own.)
    shell = {**env, "TEMPORAL_ADDRESS": f"127.0.0.1:{ports[7233]}"}
    try:
        await wait_healthy(f"http://127.0.0.1:{ports[8081]}/health", log, proc)
        yield Dev(shell, ports, log)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=PATIENCE_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        # A `posguard dev` that had to be killed could not stop its PostgreSQL.
        stop_postgres(state / "pg")
        shutil.rmtree(state, ignore_errors=True)


def test_the_readme_has_the_blocks_this_test_runs() -> None:
    """A block renamed or dropped from README.md is noticed here, not silently skipped."""
    runnable = [c for b in readme_blocks() for c in b]
    for needed in ("posguard open BTCUSDT long", "temporal workflow list", "curl -s"):
        assert any(c.startswith(needed) for c in runnable), needed
    assert len(readme_blocks()) >= 5


async def test_every_readme_command_works_as_written(dev: Dev) -> None:
    ran: list[str] = []
    for block in readme_blocks():
        for command in block:
            if "posguard wave wave/" in command:
                command = await _with_a_real_wave(dev, command)
            for first in BEFORE.get(command.split(" --", 1)[0].strip(), []):
                code, out = await dev.run(first)
                assert code == 0, f"{first!r} (before {command!r}) exited {code}:\n{out}"
            code, out = await dev.run(command)
            assert code in (0, None), (
                f"README command {command!r} exited {code}:\n{out}\n--- posguard dev log\n"
                + dev.log.read_text()[-3000:]
            )
            ran.append(command)
    assert len(ran) >= 20, ran


async def _with_a_real_wave(dev: Dev, command: str) -> str:
    """`posguard wave wave/paper/2026-12-02T04:15:00Z` names an example wave: the
    reader takes an id from `posguard waves`, and so does this test."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 2 * PATIENCE_S
    while True:
        code, out = await dev.run("posguard waves")
        assert code == 0, out
        ids = re.findall(r"wave/paper/\S+", out)
        if ids:
            break
        assert loop.time() < deadline, f"no wave recorded:\n{out}"
        await asyncio.sleep(1)
    example = shlex.split(command)[2]
    return command.replace(example, ids[0])
