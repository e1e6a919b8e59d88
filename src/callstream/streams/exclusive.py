"""One active copy of a stage across processes (router, indexer), held by a lease.

Every process that may run the stage competes for a one-partition lease in its own scope;
the holder runs the stage, the others wait. A holder that dies loses the lease when it
expires (TTL), and another process starts the stage from its durable cursor. Each period of
ownership gets a fresh stage object, because a stopped stage cannot be started again.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Protocol

import structlog

from callstream.store.interfaces import PartitionLeases

log = structlog.get_logger(__name__)


class Stage(Protocol):
    def start(self) -> None: ...
    async def stop(self) -> None: ...


class Exclusive:
    def __init__(
        self,
        name: str,
        leases: PartitionLeases,
        make: Callable[[], Stage],
        every: float = 1.25,
    ) -> None:
        self.name = name
        self._leases = leases
        self._make = make
        self._every = every
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self.running: Stage | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"exclusive-{self.name}")

    async def stop(self) -> None:
        self._stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await self._halt()
        for lease in list(self._leases.held().values()):
            with contextlib.suppress(Exception):  # expiry frees it anyway
                await self._leases.release(lease)

    async def _run(self) -> None:
        while not self._stopping.is_set():
            try:
                held = bool(await self._leases.rebalance())
            except Exception:
                log.exception("lease renewal failed", stage=self.name)
                held = bool(self._leases.held())
            if held and self.running is None:
                log.info("stage taken", stage=self.name)
                self.running = self._make()
                self.running.start()
            elif not held and self.running is not None:
                log.info("stage lost", stage=self.name)
                await self._halt()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stopping.wait(), self._every)

    async def _halt(self) -> None:
        running, self.running = self.running, None
        if running is not None:
            await running.stop()
