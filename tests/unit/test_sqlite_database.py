"""The embedded backend's database wrapper: group commit, isolation of failing jobs."""

import asyncio
import sqlite3
from pathlib import Path

import pytest

from callstream.store.sqlite.database import Database


@pytest.fixture
def db(tmp_path: Path):  # type: ignore[no-untyped-def]
    database = Database(tmp_path / "test.db")
    database.write_sync(lambda c: c.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INT)"))
    yield database
    database.close()


def _insert(key: str, value: int):  # type: ignore[no-untyped-def]
    def job(conn: sqlite3.Connection) -> int:
        conn.execute("INSERT INTO t VALUES (?, ?)", (key, value))
        return value

    return job


def _count(conn: sqlite3.Connection) -> int:
    return int(conn.execute("SELECT count(*) FROM t").fetchone()[0])


def test_concurrent_writes_are_all_committed_and_a_failing_job_is_undone_alone(
    db: Database,
) -> None:
    async def scenario() -> list[object]:
        jobs = [db.write(_insert(f"k{i}", i)) for i in range(200)]
        jobs.append(db.write(_insert("k7", 999)))  # duplicate key: this job alone fails
        return await asyncio.gather(*jobs, return_exceptions=True)

    results = asyncio.run(scenario())
    assert results[:200] == list(range(200))
    assert isinstance(results[200], sqlite3.IntegrityError)
    assert db.read_sync(_count) == 200
    assert db.read_sync(lambda c: c.execute("SELECT v FROM t WHERE k='k7'").fetchone()[0]) == 7


def test_committed_data_survives_reopening(tmp_path: Path) -> None:
    first = Database(tmp_path / "d.db")
    first.write_sync(lambda c: c.execute("CREATE TABLE t (k TEXT PRIMARY KEY, v INT)"))
    first.write_sync(_insert("a", 1))
    first.close()
    second = Database(tmp_path / "d.db")
    try:
        assert second.read_sync(_count) == 1
    finally:
        second.close()


def test_reads_see_a_consistent_snapshot(db: Database) -> None:
    db.write_sync(_insert("a", 1))

    async def scenario() -> int:
        return await db.read(_count)

    assert asyncio.run(scenario()) == 1


def test_writes_after_close_are_refused(tmp_path: Path) -> None:
    database = Database(tmp_path / "c.db")
    database.close()
    with pytest.raises(RuntimeError):
        asyncio.run(database.write(lambda c: None))
