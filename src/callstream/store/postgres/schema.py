"""The PostgreSQL tables, as numbered migrations applied by callstream itself.

Each file in ``migrations/`` (``NNNN_name.sql``) is one migration. ``migrate`` applies the
ones a database lacks, in order, in ONE transaction that first takes a transaction-level
advisory lock: workers that start at the same moment queue on the lock, and each one after
the first finds nothing left to do. ``schema_version`` holds one row per applied migration.
A database migrated by a newer callstream (a version this code does not know) is refused,
because this code would misread tables it does not know the shape of.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from importlib import resources

import psycopg
from psycopg.rows import TupleRow

_NAME = re.compile(r"^(\d{4})_[a-z0-9_]+\.sql$")

# The advisory lock every migrating session takes (any 64-bit number unique to this use:
# "callstrm" in ASCII), so that concurrent upgrades of one database run one after another.
MIGRATION_LOCK = 0x63616C6C7374726D

_CREATE_VERSION_TABLE = b"""
CREATE TABLE IF NOT EXISTS schema_version (
    version    integer PRIMARY KEY,
    name       text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class SchemaTooNew(RuntimeError):
    """The database was migrated by a newer callstream than this one."""


DatabaseError = psycopg.Error
"""What ``migrate`` raises when the database cannot be reached or migrated (callers outside
``store/`` catch this name, not the driver's)."""


@dataclass(frozen=True, slots=True)
class Migration:
    version: int
    name: str
    script: str


@dataclass(frozen=True, slots=True)
class MigrationResult:
    version: int
    """The database's schema version afterwards."""
    applied: tuple[int, ...]
    """The versions this call applied (empty when the database was current)."""


@cache
def migrations() -> tuple[Migration, ...]:
    """The migration scripts, in order (checked to be numbered 1, 2, 3, ...)."""
    folder = resources.files(__package__).joinpath("migrations")
    found = sorted(
        (
            Migration(int(match.group(1)), entry.name, entry.read_text("utf-8"))
            for entry in folder.iterdir()
            if (match := _NAME.match(entry.name))
        ),
        key=lambda m: m.version,
    )
    numbers = [m.version for m in found]
    if numbers != list(range(1, len(found) + 1)):
        raise RuntimeError(f"migrations must be numbered 1, 2, 3, ... without gaps: {numbers}")
    return tuple(found)


def latest_version() -> int:
    return len(migrations())


async def migrate(conninfo: str) -> MigrationResult:
    """Bring the database at ``conninfo`` to this code's schema; SchemaTooNew if it is ahead."""
    async with await psycopg.AsyncConnection.connect(conninfo) as conn:
        return await migrate_connection(conn)


async def migrate_connection(conn: psycopg.AsyncConnection[TupleRow]) -> MigrationResult:
    scripts = migrations()
    async with conn.transaction():
        await conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK,))
        current = await schema_version(conn)
        if current > len(scripts):
            raise SchemaTooNew(
                f"the database is at schema version {current}, newer than this callstream "
                f"knows (version {len(scripts)}): it was upgraded by a newer callstream. "
                "Run that version (or newer) instead; downgrading is not supported."
            )
        if current == 0:
            # Only now: a current database needs no CREATE privilege to start a worker.
            await conn.execute(_CREATE_VERSION_TABLE)
        applied: list[int] = []
        for migration in scripts[current:]:
            # No parameters: psycopg sends the script as one simple query, many statements.
            await conn.execute(migration.script.encode("utf-8"))
            await conn.execute(
                "INSERT INTO schema_version (version, name) VALUES (%s, %s)",
                (migration.version, migration.name),
            )
            applied.append(migration.version)
    return MigrationResult(version=len(scripts), applied=tuple(applied))


async def schema_version(conn: psycopg.AsyncConnection[TupleRow]) -> int:
    """The database's schema version (0 before the first migration)."""
    cursor = await conn.execute("SELECT to_regclass('schema_version') IS NOT NULL")
    exists = await cursor.fetchone()
    if not exists or not exists[0]:
        return 0
    cursor = await conn.execute("SELECT coalesce(max(version), 0) FROM schema_version")
    row = await cursor.fetchone()
    return int(row[0]) if row is not None else 0
