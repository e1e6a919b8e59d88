"""Waking readers of a log in this process when its writer appends, without polling."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Hashable, Mapping


class HighWater:
    """The highest offset written per stream, and a way to wait for it to pass a mark."""

    def __init__(self, marks: dict[Hashable, int] | None = None) -> None:
        self._marks: dict[Hashable, int] = dict(marks or {})
        self._condition: asyncio.Condition | None = None

    def get(self, stream: Hashable) -> int:
        return self._marks.get(stream, 0)

    async def advance(self, marks: Mapping[Hashable, int]) -> None:
        for stream, offset in marks.items():
            self._marks[stream] = max(self._marks.get(stream, 0), offset)
        condition = self._cond()
        async with condition:
            condition.notify_all()

    async def wait(self, stream: Hashable, after: int, timeout: float) -> None:
        """Return once ``stream`` has passed ``after``, or after ``timeout`` seconds."""
        condition = self._cond()
        async with condition:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(
                    condition.wait_for(lambda: self._marks.get(stream, 0) > after), timeout
                )

    def _cond(self) -> asyncio.Condition:
        # Created on first use so that it belongs to the running event loop.
        if self._condition is None:
            self._condition = asyncio.Condition()
        return self._condition
