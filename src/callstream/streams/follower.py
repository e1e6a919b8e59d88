"""A stage that follows the events log from a durable cursor: the router and the indexer.

Each step handles the next batch after ``cursor`` and makes its output and the new cursor
durable (how is the stage's business); when there is nothing new the stage waits for the log
to grow. The cursor is read from the store at start and again after a failed step, so a step
that failed half-way is replayed from what is durable, with backoff so a persistent fault
does not spin.
"""

from __future__ import annotations

import asyncio
import contextlib

import structlog

from callstream.store.interfaces import EventLog

log = structlog.get_logger(__name__)


class LogFollower:
    name = "follower"

    def __init__(self, events: EventLog, *, idle_wait: float = 1.0) -> None:
        self._events = events
        self._idle_wait = idle_wait
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.cursor = 0

    async def load_cursor(self) -> int:
        """The durable position this stage has handled the log up to."""
        raise NotImplementedError

    async def step(self) -> bool:
        """Handle the next batch after ``cursor``; False when there was none."""
        raise NotImplementedError

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=self.name)

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._task

    async def _run(self) -> None:
        failures = 0
        reload = True
        while not self._stopping.is_set():
            try:
                if reload:
                    self.cursor = await self.load_cursor()
                    reload = False
                moved = await self.step()
                failures = 0
            except Exception:
                failures += 1
                reload = True
                log.exception(f"{self.name} step failed", cursor=self.cursor, failures=failures)
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
