"""Fixtures for the store contract tests: each test gets the store under test on a fresh
database of the backend it is parametrised with.

``backend`` is ``sqlite`` (the embedded backend, a database file in the test's tmp dir) or
``postgres`` (a fresh database on the one PostgreSQL server this session starts). Stores are
opened inside the test's event loop (``async with backend.open() as stores``) because a
PostgreSQL pool belongs to the loop that opened it.
"""

from __future__ import annotations

import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest

from callstream.store.control import ControlStore
from callstream.store.insights import InsightsStore
from callstream.store.interfaces import AccountStore, OutputEvent, PartitionCommit, StoredCall
from callstream.store.postgres import open_postgres
from callstream.store.signal import HighWater
from callstream.store.sqlite.accounts import SqliteAccountStore
from callstream.store.sqlite.control import SqliteControlStore
from callstream.store.sqlite.database import Database
from callstream.store.sqlite.engine import SqliteEngineStore
from callstream.store.sqlite.insights import SqliteInsightsStore
from callstream.store.sqlite.schema import migrate
from tests.stores.postgres_server import PostgresServer

Index = Callable[[Sequence[OutputEvent]], Awaitable[None]]


@dataclass(frozen=True)
class Stores:
    accounts: AccountStore
    control: ControlStore
    insights: InsightsStore
    index: Index
    """Make events visible to ``insights`` as the backend's own write path does."""


class SqliteBackend:
    """The embedded backend. One process holds one set of stores, so every ``open`` gives the
    same ones (as every stage of ``callstream serve`` shares them)."""

    name = "sqlite"

    def __init__(self, path: Path) -> None:
        self._db = Database(path)
        self._db.write_sync(migrate)
        engine = SqliteEngineStore(self._db, HighWater())

        async def index(events: Sequence[OutputEvent]) -> None:
            # The engine holds a state for every call it has seen events of: that is what
            # makes a call "active" in the embedded store until its summary is indexed.
            calls = {(e.account_sid, e.call_sid): StoredCall(b"", b"") for e in events}
            await engine.commit(PartitionCommit(partition=0, calls=calls, events=list(events)))

        self._stores = Stores(
            accounts=SqliteAccountStore(self._db),
            control=SqliteControlStore(self._db),
            insights=SqliteInsightsStore(self._db),
            index=index,
        )

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Stores]:
        yield self._stores

    def close(self) -> None:
        self._db.close()


class PostgresBackend:
    """The distributed backend's PostgreSQL: every ``open`` is a separate pool (and outbox
    listener), as a separate worker process would have."""

    name = "postgres"

    def __init__(self, url: str) -> None:
        self.url = url

    @asynccontextmanager
    async def open(self) -> AsyncIterator[Stores]:
        stores = await open_postgres(self.url, max_connections=4)
        try:
            yield Stores(
                accounts=stores.accounts,
                control=stores.control,
                insights=stores.insights,
                index=stores.insights.index,
            )
        finally:
            await stores.close()


Backend = SqliteBackend | PostgresBackend


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    server = PostgresServer()
    try:
        yield server.start()
    finally:
        server.stop()


_numbers = itertools.count(1)


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> str:
    """The URL of a new, empty database on the session's server."""
    name = f"test_{next(_numbers)}"
    with psycopg.connect(postgres_server.url(), autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_server.url(name)


@pytest.fixture(params=["sqlite", "postgres"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        sqlite = SqliteBackend(tmp_path / "callstream.db")
        yield sqlite
        sqlite.close()
    else:
        yield PostgresBackend(request.getfixturevalue("postgres_url"))
