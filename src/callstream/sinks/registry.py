"""The driver of every sink type, built from the settings (what ``server.py`` hands the
delivery worker)."""

from __future__ import annotations

import asyncio
import importlib
from collections.abc import Callable, Sequence

from callstream.config import Settings
from callstream.sinks.drivers import Outcome, SinkDriver
from callstream.sinks.segment import SegmentDriver
from callstream.sinks.webhook import WebhookClient
from callstream.store.control import Sink


class OnFirstUse:
    """A driver whose module is imported, off the event loop, when a sink first needs it.

    The Kinesis driver's aiobotocore takes about a second to import; a server without
    Kinesis sinks (and every test server) should not pay that at start."""

    def __init__(self, module: str, build: Callable[[], SinkDriver]) -> None:
        self._module = module
        self._build = build
        self._driver: SinkDriver | None = None
        self._lock = asyncio.Lock()

    async def _get(self) -> SinkDriver:
        async with self._lock:
            if self._driver is None:
                await asyncio.to_thread(importlib.import_module, self._module)
                self._driver = self._build()
            return self._driver

    async def send(self, sink: Sink, auth_token: str, events: Sequence[bytes]) -> Outcome:
        return await (await self._get()).send(sink, auth_token, events)

    async def close(self) -> None:
        if self._driver is not None:
            await self._driver.close()


def build_drivers(settings: Settings) -> dict[str, SinkDriver]:
    """One driver per sink type; each pools its connections across the sinks it serves."""
    timeout = settings.delivery_timeout
    allow_private = settings.allow_private_destinations

    def kinesis() -> SinkDriver:
        from callstream.sinks.kinesis import KinesisDriver

        return KinesisDriver(timeout=timeout)

    return {
        "webhook": WebhookClient(allow_private=allow_private, timeout=timeout),
        "kinesis": OnFirstUse("callstream.sinks.kinesis", kinesis),
        "segment": SegmentDriver(base_url=settings.segment_base_url, timeout=timeout),
    }
