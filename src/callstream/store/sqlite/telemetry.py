"""The telemetry log in the embedded database: one row per chunk, offsets in arrival order."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Hashable, Sequence

from callstream.store.interfaces import LogEntry, TelemetryChunk
from callstream.store.signal import HighWater
from callstream.store.sqlite.database import Database

_COLUMNS = "offset, account_sid, received_at, records, body"


class SqliteTelemetryLog:
    def __init__(self, db: Database, partitions: int) -> None:
        self._db = db
        self.partitions = partitions
        self._high = HighWater(db.read_sync(_high_water_marks))

    async def append(self, account_sid: str, chunks: Sequence[TelemetryChunk]) -> None:
        received_at = time.time()
        rows = [(c.partition, account_sid, received_at, c.records, c.body) for c in chunks]

        def job(conn: sqlite3.Connection) -> dict[Hashable, int]:
            marks: dict[Hashable, int] = {}
            for row in rows:
                cursor = conn.execute(
                    "INSERT INTO telemetry (partition, account_sid, received_at, records, body) "
                    "VALUES (?, ?, ?, ?, ?)",
                    row,
                )
                assert cursor.lastrowid is not None
                marks[row[0]] = cursor.lastrowid
            return marks

        await self._high.advance(await self._db.write(job))

    async def read(self, partition: int, after: int, limit: int) -> Sequence[LogEntry]:
        def job(conn: sqlite3.Connection) -> list[LogEntry]:
            entries: list[LogEntry] = []
            total = 0
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM telemetry WHERE partition = ? AND offset > ? "
                "ORDER BY offset LIMIT ?",
                (partition, after, max(1, limit // 8)),
            )
            for row in rows:
                entries.append(LogEntry(*row))
                total += row[3]
                if total >= limit:
                    break
            return entries

        return await self._db.read(job)

    async def read_all(self, after: int, limit: int) -> Sequence[LogEntry]:
        def job(conn: sqlite3.Connection) -> list[LogEntry]:
            rows = conn.execute(
                f"SELECT {_COLUMNS} FROM telemetry WHERE offset > ? ORDER BY offset LIMIT ?",
                (after, limit),
            ).fetchall()
            return [LogEntry(*row) for row in rows]

        return await self._db.read(job)

    async def wait(self, partition: int, after: int, timeout: float) -> None:
        await self._high.wait(partition, after, timeout)

    def last_offset(self, partition: int) -> int:
        return self._high.get(partition)


def _high_water_marks(conn: sqlite3.Connection) -> dict[Hashable, int]:
    rows = conn.execute("SELECT partition, max(offset) FROM telemetry GROUP BY partition")
    return {int(p): int(o) for p, o in rows.fetchall()}
