"""The indexer: from the events log into the Voice Insights read store (distributed backend).

The embedded backend indexes events in the engine's own commit (one SQLite transaction). The
distributed backend's events live in JetStream and the Voice Insights API reads PostgreSQL,
so this stage follows the events log with a durable cursor and copies each batch with the
store's ``index()``. ``index()`` is idempotent (events are keyed by account, call, type and
identity), and the cursor is written after the batch, so a crash replays a batch at worst.
One indexer runs at a time (the server holds an "indexer" lease for it).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Sequence
from typing import Protocol

import structlog

from callstream.store.interfaces import EventLog, OutputEvent

log = structlog.get_logger(__name__)

BATCH = 500
INDEXER = "indexer"


class Cursors(Protocol):
    """Durable named positions in the events log."""

    async def cursor(self, consumer: str) -> int: ...
    async def set_cursor(self, consumer: str, position: int) -> None: ...


class Indexer:
    def __init__(
        self,
        events: EventLog,
        index: Callable[[Sequence[OutputEvent]], Awaitable[None]],
        cursors: Cursors,
        *,
        name: str = INDEXER,
        idle_wait: float = 1.0,
    ) -> None:
        self._events = events
        self._index = index
        self._cursors = cursors
        self._name = name
        self._idle_wait = idle_wait
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.cursor = 0

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="indexer")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def step(self) -> bool:
        """Index the next batch of events; False when there was none."""
        batch = await self._events.read(self.cursor, BATCH)
        if not batch:
            return False
        await self._index([entry.event for entry in batch])
        last = batch[-1].offset
        await self._cursors.set_cursor(self._name, last)
        self.cursor = last
        return True

    async def _run(self) -> None:
        failures = 0
        while not self._stopping.is_set():
            try:
                if failures or self.cursor == 0:
                    self.cursor = await self._cursors.cursor(self._name)
                moved = await self.step()
                failures = 0
            except Exception:
                failures += 1
                log.exception("indexer step failed", cursor=self.cursor, failures=failures)
                await self._sleep(min(5.0, 0.1 * 2**failures))
                continue
            if not moved:
                await self._wait()

    async def _sleep(self, seconds: float) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stopping.wait(), seconds)

    async def _wait(self) -> None:
        waiter = asyncio.ensure_future(self._events.wait(self.cursor, self._idle_wait))
        stopper = asyncio.ensure_future(self._stopping.wait())
        try:
            await asyncio.wait({waiter, stopper}, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for task in (waiter, stopper):
                task.cancel()
