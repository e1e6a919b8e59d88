"""Waking readers in this process when a writer appends, without polling (every backend's
stores use it for the waiters of their own process)."""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Mapping


class HighWater:
    """The highest offset written per stream, and a way to wait for it to pass a mark.

    Waiters share one ``asyncio.Event`` that ``advance`` sets and replaces; there is no lock,
    so a waiter cancelled at any point (a client leaving a long poll, a task being stopped)
    can never leave anything held that would block writers or other waiters.
    """

    def __init__(self, marks: dict[Hashable, int] | None = None) -> None:
        self._marks: dict[Hashable, int] = dict(marks or {})
        self._changed: asyncio.Event | None = None

    def get(self, stream: Hashable) -> int:
        return self._marks.get(stream, 0)

    async def advance(self, marks: Mapping[Hashable, int]) -> None:
        for stream, offset in marks.items():
            self._marks[stream] = max(self._marks.get(stream, 0), offset)
        changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    async def wait(self, stream: Hashable, after: int, timeout: float) -> None:
        """Return once ``stream`` has passed ``after``, or after ``timeout`` seconds."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while self._marks.get(stream, 0) <= after:
            remaining = deadline - loop.time()
            if remaining <= 0:
                return
            if self._changed is None:
                # Created here, not in __init__, so that it belongs to the running loop.
                self._changed = asyncio.Event()
            try:
                await asyncio.wait_for(self._changed.wait(), remaining)
            except TimeoutError:
                return
