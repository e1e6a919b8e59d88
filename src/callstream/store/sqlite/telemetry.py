"""The telemetry log in the embedded database: one table, offsets in arrival order."""

from __future__ import annotations

import sqlite3
import time
from collections.abc import Hashable, Sequence

from callstream.store.interfaces import (
    AppendResult,
    LogEntry,
    TelemetryItem,
    partition_of,
)
from callstream.store.sqlite.database import Database
from callstream.store.sqlite.signal import HighWater


class SqliteTelemetryLog:
    def __init__(self, db: Database, partitions: int) -> None:
        self._db = db
        self.partitions = partitions
        self._high = HighWater(db.read_sync(_high_water_marks))

    async def append(self, account_sid: str, items: Sequence[TelemetryItem]) -> AppendResult:
        received_at = time.time()
        rows = [
            (
                partition_of(item.call_sid, self.partitions),
                account_sid,
                item.record_id,
                received_at,
                item.body,
            )
            for item in items
        ]

        def job(conn: sqlite3.Connection) -> tuple[AppendResult, dict[int, int]]:
            before = conn.total_changes
            first = conn.execute("SELECT coalesce(max(offset), 0) FROM telemetry").fetchone()[0]
            conn.executemany(
                "INSERT INTO telemetry (partition, account_sid, record_id, received_at, body) "
                "VALUES (?, ?, ?, ?, ?) ON CONFLICT (account_sid, record_id) DO NOTHING",
                rows,
            )
            accepted = conn.total_changes - before
            marks: dict[int, int] = dict(
                conn.execute(
                    "SELECT partition, max(offset) FROM telemetry WHERE offset > ? "
                    "GROUP BY partition",
                    (first,),
                ).fetchall()
            )
            return AppendResult(accepted=accepted, duplicates=len(rows) - accepted), marks

        result, marks = await self._db.write(job)
        if marks:
            await self._high.advance({p: o for p, o in marks.items()})
        return result

    async def read(self, partition: int, after: int, limit: int) -> Sequence[LogEntry]:
        def job(conn: sqlite3.Connection) -> list[LogEntry]:
            rows = conn.execute(
                "SELECT offset, account_sid, received_at, body FROM telemetry "
                "WHERE partition = ? AND offset > ? ORDER BY offset LIMIT ?",
                (partition, after, limit),
            ).fetchall()
            return [LogEntry(*row) for row in rows]

        return await self._db.read(job)

    async def read_all(self, after: int, limit: int) -> Sequence[LogEntry]:
        def job(conn: sqlite3.Connection) -> list[LogEntry]:
            rows = conn.execute(
                "SELECT offset, account_sid, received_at, body FROM telemetry "
                "WHERE offset > ? ORDER BY offset LIMIT ?",
                (after, limit),
            ).fetchall()
            return [LogEntry(*row) for row in rows]

        return await self._db.read(job)

    async def wait(self, partition: int, after: int, timeout: float) -> None:
        await self._high.wait(partition, after, timeout)


def _high_water_marks(conn: sqlite3.Connection) -> dict[Hashable, int]:
    rows = conn.execute("SELECT partition, max(offset) FROM telemetry GROUP BY partition")
    return {int(p): int(o) for p, o in rows.fetchall()}
