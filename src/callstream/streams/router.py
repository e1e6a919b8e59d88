"""The router: from the events log to the per-sink delivery queues.

It follows the events log with its own durable cursor. Each event goes to every
subscription of its account that has the event's type (the routing table), rendered in the
schema version that subscription chose and wrapped in a CloudEvent; the items of a batch of
events and the cursor past them are committed in one transaction, so a crash replays the
batch, and the replay is a no-op for items still queued (a sink's queue holds a CloudEvent
id once). Routing tables are cached per account and re-read when the account's
``control_version`` moves, which is checked at most ``refresh`` seconds apart.

Sink Test events are not routed: they wait in the control store's sink outbox, and the
delivery worker sends them from there (see ``streams/delivery.py``).
"""

from __future__ import annotations

import time

import msgspec
import structlog

from callstream.api.live import decode_output
from callstream.cloudevents import to_cloudevent
from callstream.store.control import ControlStore, RoutingTable
from callstream.store.delivery import ROUTER, DeliveryStore, NewDelivery
from callstream.store.interfaces import EventEntry, EventLog
from callstream.streams.follower import LogFollower

log = structlog.get_logger(__name__)

BATCH = 500
_encoder = msgspec.json.Encoder()


class Router(LogFollower):
    name = "router"

    def __init__(
        self,
        events: EventLog,
        control: ControlStore,
        queue: DeliveryStore,
        *,
        schema_base_url: str,
        refresh: float = 0.5,
        idle_wait: float = 1.0,
    ) -> None:
        super().__init__(events, idle_wait=idle_wait)
        self._control = control
        self._queue = queue
        self._schema_base_url = schema_base_url
        self._refresh = refresh
        self._tables: dict[str, tuple[RoutingTable, float]] = {}

    async def load_cursor(self) -> int:
        return await self._queue.cursor(ROUTER)

    async def step(self) -> bool:
        """Route the next batch of events; False when there was none."""
        batch = await self._events.read(self.cursor, BATCH)
        if not batch:
            return False
        items: list[NewDelivery] = []
        for entry in batch:
            items.extend(await self._route(entry))
        last = batch[-1].offset
        await self._queue.enqueue(items, time.time(), consumer=ROUTER, cursor=last)
        self.cursor = last
        return True

    async def _route(self, entry: EventEntry) -> list[NewDelivery]:
        event = entry.event
        table = await self._table(event.account_sid)
        wanted = [
            (route.sink.sid, route.types[event.type])
            for route in table.routes
            if event.type in route.types
        ]
        if not wanted:
            return []
        try:
            canonical = decode_output(event)
        except Exception:
            # A stored event this version cannot read: skip it rather than stall every sink.
            log.exception("router cannot decode event", offset=entry.offset, type=event.type)
            return []
        rendered: dict[int, tuple[str, bytes]] = {}
        items = []
        for sink_sid, version in wanted:
            if version not in rendered:
                cloudevent = to_cloudevent(
                    canonical, version, schema_base_url=self._schema_base_url
                )
                rendered[version] = (cloudevent.id, _encoder.encode(cloudevent))
            event_id, body = rendered[version]
            items.append(
                NewDelivery(
                    account_sid=event.account_sid, sink_sid=sink_sid, event_id=event_id, body=body
                )
            )
        return items

    async def _table(self, account_sid: str) -> RoutingTable:
        now = time.monotonic()
        cached = self._tables.get(account_sid)
        if cached is not None:
            table, checked = cached
            if now - checked < self._refresh:
                return table
            if await self._control.control_version(account_sid) == table.version:
                self._tables[account_sid] = (table, now)
                return table
        table = await self._control.routing_table(account_sid)
        self._tables[account_sid] = (table, now)
        return table
