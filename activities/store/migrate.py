"""Versioned SQL migrations, applied in one transaction under an advisory lock.

Migration files live in `migrations/` as `NNNN_name.sql`. Each applied version
is recorded in `schema_migrations` with the file's checksum; applying again is a
no-op, and a changed file of an applied version is refused (edit history by
adding a migration, never by rewriting one).
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
# Any constant works; it only has to be the same for every posguard process.
SCHEMA_LOCK_KEY = 0x706F7367  # "posg"


class MigrationError(RuntimeError):
    """A migration could not be applied, or an applied one was changed."""


@dataclass(frozen=True)
class Migration:
    """One migration file."""

    version: int
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """Read the migration files in version order; refuses gaps and duplicates."""
    found: list[Migration] = []
    for path in sorted(directory.glob("*.sql")):
        match = _NAME.match(path.name)
        if not match:
            raise MigrationError(f"badly named migration file: {path.name}")
        found.append(Migration(int(match.group(1)), match.group(2), path.read_text()))
    for expected, migration in enumerate(found, start=1):
        if migration.version != expected:
            raise MigrationError(f"migration {expected:04d} missing (found {migration.version})")
    return found


async def lock_schema(conn: Any) -> None:
    """Take the schema lock for the rest of `conn`'s current transaction.

    Every schema change posguard makes at run time holds it: migrations, and the
    event partitions created and dropped by every worker at start. Processes
    starting together then take turns, and each sees what the previous one did
    (DDL is not safe against a concurrent twin: two `CREATE TABLE` of one name
    both pass their "does it exist" check and the second fails on commit).
    """
    await conn.execute("SELECT pg_advisory_xact_lock($1)", SCHEMA_LOCK_KEY)


async def apply_migrations(conn: Any, directory: Path = MIGRATIONS_DIR) -> list[int]:
    """Apply the pending migrations on an asyncpg connection; returns the versions applied.

    Runs in a single transaction holding an advisory lock, so two workers
    starting together cannot both apply a migration, and a failure leaves the
    schema exactly as it was.
    """
    migrations = load_migrations(directory)
    applied_now: list[int] = []
    async with conn.transaction():
        await lock_schema(conn)
        await conn.execute(
            """CREATE TABLE IF NOT EXISTS schema_migrations (
                   version    integer PRIMARY KEY,
                   name       text NOT NULL,
                   checksum   text NOT NULL,
                   applied_at timestamptz NOT NULL DEFAULT now())"""
        )
        rows = await conn.fetch("SELECT version, checksum FROM schema_migrations")
        applied = {row["version"]: row["checksum"] for row in rows}
        for migration in migrations:
            if migration.version in applied:
                if applied[migration.version] != migration.checksum:
                    raise MigrationError(
                        f"migration {migration.version:04d}_{migration.name} was changed "
                        "after it was applied; add a new migration instead"
                    )
                continue
            await conn.execute(migration.sql)
            await conn.execute(
                "INSERT INTO schema_migrations (version, name, checksum) VALUES ($1, $2, $3)",
                migration.version,
                migration.name,
                migration.checksum,
            )
            applied_now.append(migration.version)
    return applied_now
