"""The indexer: from the events log into the Voice Insights read store (distributed backend).

The embedded backend indexes events in the engine's own commit (one SQLite transaction). The
distributed backend's events live in JetStream and the Voice Insights API reads PostgreSQL,
so this stage follows the events log with a durable cursor and copies each batch with the
store's ``index()``. ``index()`` is idempotent (events are keyed by account, call, type and
identity), and the cursor is written after the batch, so a crash replays a batch at worst.
One indexer runs at a time (the server holds an "indexer" lease for it).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

from callstream.store.interfaces import EventLog, OutputEvent
from callstream.streams.follower import LogFollower

BATCH = 500
INDEXER = "indexer"


class Cursors(Protocol):
    """Durable named positions in the events log."""

    async def cursor(self, consumer: str) -> int: ...
    async def set_cursor(self, consumer: str, position: int) -> None: ...


class Indexer(LogFollower):
    name = "indexer"

    def __init__(
        self,
        events: EventLog,
        index: Callable[[Sequence[OutputEvent]], Awaitable[None]],
        cursors: Cursors,
        *,
        name: str = INDEXER,
        idle_wait: float = 1.0,
    ) -> None:
        super().__init__(events, idle_wait=idle_wait)
        self._index = index
        self._cursors = cursors
        self._cursor_name = name

    async def load_cursor(self) -> int:
        return await self._cursors.cursor(self._cursor_name)

    async def step(self) -> bool:
        """Index the next batch of events; False when there was none."""
        batch = await self._events.read(self.cursor, BATCH)
        if not batch:
            return False
        await self._index([entry.event for entry in batch])
        last = batch[-1].offset
        await self._cursors.set_cursor(self._cursor_name, last)
        self.cursor = last
        return True
