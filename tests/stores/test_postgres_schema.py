"""PostgreSQL migrations: applied once, safe when workers start together, refused when the
database is newer than the code; and `callstream db upgrade`."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import UTC, datetime

import psycopg
import pytest

from callstream.insights.engine import output_event
from callstream.model.insights import CallEvent
from callstream.store.postgres import SchemaTooNew, migrate, open_postgres
from callstream.store.postgres.schema import latest_version
from tests.stores.postgres_server import PostgresServer

SOME_EVENT = CallEvent(
    account_sid="AC" + "1" * 32,
    call_sid="CA" + "1" * 32,
    time=datetime(2025, 3, 1, tzinfo=UTC),
    seq=1,
    edge="sip_edge",
    group="connection",
    name="ringing",
)

CATALOGUE = """
    SELECT table_name, column_name, data_type, is_nullable
      FROM information_schema.columns WHERE table_schema = 'public'
     UNION ALL
    SELECT tablename, indexname, indexdef, '' FROM pg_indexes WHERE schemaname = 'public'
     ORDER BY 1, 2
"""


def catalogue(url: str) -> list[tuple[str, ...]]:
    with psycopg.connect(url) as conn:
        return [tuple(row) for row in conn.execute(CATALOGUE).fetchall()]


def versions(url: str) -> list[int]:
    with psycopg.connect(url) as conn:
        return [row[0] for row in conn.execute("SELECT version FROM schema_version ORDER BY 1")]


def test_migrations_apply_once_and_a_second_run_changes_nothing(postgres_url: str) -> None:
    first = asyncio.run(migrate(postgres_url))
    assert first.applied == tuple(range(1, latest_version() + 1))
    assert first.version == latest_version()
    shape = catalogue(postgres_url)
    assert {"accounts", "sinks", "sink_outbox", "insight_events", "call_summaries"} <= {
        row[0] for row in shape
    }
    second = asyncio.run(migrate(postgres_url))
    assert second.applied == () and second.version == latest_version()
    assert catalogue(postgres_url) == shape
    assert versions(postgres_url) == list(range(1, latest_version() + 1))


def test_workers_starting_together_migrate_once(postgres_url: str) -> None:
    async def start_together() -> list[tuple[int, ...]]:
        results = await asyncio.gather(*(migrate(postgres_url) for _ in range(4)))
        assert {r.version for r in results} == {latest_version()}
        return [r.applied for r in results]

    applied = asyncio.run(start_together())
    # One of them applied everything; the others waited on the lock and found nothing to do.
    assert sorted(applied, key=len) == [(), (), (), tuple(range(1, latest_version() + 1))]
    assert versions(postgres_url) == list(range(1, latest_version() + 1))


def test_a_database_from_a_newer_callstream_is_refused(postgres_url: str) -> None:
    asyncio.run(migrate(postgres_url))
    newer = latest_version() + 1
    with psycopg.connect(postgres_url) as conn:
        conn.execute(
            "INSERT INTO schema_version (version, name) VALUES (%s, '9999_future.sql')", (newer,)
        )
    shape = catalogue(postgres_url)
    with pytest.raises(SchemaTooNew, match=f"schema version {newer}, newer than this callstream"):
        asyncio.run(open_postgres(postgres_url))
    assert catalogue(postgres_url) == shape


def callstream(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "callstream", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **(env or {})},
    )


def test_db_upgrade_applies_migrations_and_prints_the_version(
    postgres_url: str, postgres_server: PostgresServer
) -> None:
    done = callstream("db", "upgrade", "--database-url", postgres_url)
    assert done.returncode == 0, done.stderr
    assert f"schema version {latest_version()}" in done.stdout and "applied" in done.stdout
    again = callstream("db", "upgrade", env={"CALLSTREAM_DATABASE_URL": postgres_url})
    assert again.returncode == 0, again.stderr
    assert f"schema version {latest_version()} (up to date)" in again.stdout
    with psycopg.connect(postgres_url) as conn:
        conn.execute("INSERT INTO schema_version (version, name) VALUES (999, 'x')")
    refused = callstream("db", "upgrade", "--database-url", postgres_url)
    assert refused.returncode == 1
    assert "newer than this callstream" in refused.stderr
    missing = postgres_server.url("no_such_database")
    unreachable = callstream("db", "upgrade", "--database-url", missing)
    assert unreachable.returncode == 1 and "no_such_database" in unreachable.stderr
    env = {k: v for k, v in os.environ.items() if k != "CALLSTREAM_DATABASE_URL"}
    usage = subprocess.run(
        [sys.executable, "-m", "callstream", "db", "upgrade"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
    )
    assert usage.returncode == 2 and "--database-url" in usage.stderr


def test_a_worker_role_without_create_privilege_starts_on_a_current_database(
    postgres_url: str,
) -> None:
    """docs/deploy.md: migrations need CREATE, running workers only need DML."""
    asyncio.run(migrate(postgres_url))
    database = postgres_url.rsplit("/", 1)[1]
    role = f"worker_{database}"
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN")
        conn.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
        conn.execute(
            f"GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {role}"
        )
    worker_url = postgres_url.replace("postgres@", f"{role}@", 1)

    async def start() -> int:
        stores = await open_postgres(worker_url)
        try:
            # Writes too, into tables whose ids come from identity columns.
            await stores.insights.index([output_event(e) for e in (SOME_EVENT,)])
            assert await stores.insights.has_call(SOME_EVENT.account_sid, str(SOME_EVENT.call_sid))
            return stores.schema_version
        finally:
            await stores.close()

    assert asyncio.run(start()) == latest_version()
    with psycopg.connect(postgres_url, autocommit=True) as conn:
        conn.execute("DELETE FROM schema_version")  # as if nothing had been applied
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        asyncio.run(migrate(worker_url))
