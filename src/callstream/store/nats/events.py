"""The insight events log on JetStream: one stream, a subject per account.

Each event is published with a Nats-Msg-Id derived from its identity (account,
call, type, identity: the key the embedded store de-duplicates on), so an engine step that is
replayed after a crash or a takeover stores each event once. Offsets are stream
sequences, in the order the events were stored.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

from nats.aio.client import Client
from nats.js import JetStreamContext

from callstream.store.interfaces import EventEntry, OutputEvent
from callstream.store.nats.arrivals import Arrivals
from callstream.store.nats.layout import (
    DEFAULT_MAX_AGE,
    EVENTS_DUPLICATE_WINDOW,
    EVENTS_STREAM,
    EVENTS_SUBJECT,
    ensure_stream,
    events_stream,
)
from callstream.store.nats.publish import publish_all
from callstream.store.nats.reads import StoredMsg, direct_batch

CALL_HEADER = "Cs-Call"
TYPE_HEADER = "Cs-Type"
IDENTITY_HEADER = "Cs-Identity"
TIME_HEADER = "Cs-Time"
# Events published per round of acks: bounds the memory of one commit's publish.
_MAX_IN_FLIGHT = 512


def event_id(event: OutputEvent) -> str:
    """The event's de-duplication id, the same every time the engine produces it.

    A hash of (account, call, type, identity): the server holds every id of the
    duplicate window in memory, and these are a fraction of the plain key's length.
    """
    key = f"{event.account_sid}\x00{event.call_sid}\x00{event.type}\x00{event.identity}"
    return hashlib.blake2b(key.encode(), digest_size=16).hexdigest()


def _subject(account_sid: str) -> str:
    # Account SIDs are ``AC`` + hex: always a valid subject token.
    return f"{EVENTS_SUBJECT}.{account_sid}"


async def publish_events(js: JetStreamContext, events: Sequence[OutputEvent]) -> None:
    """Store the events in order, each once (a replayed one is dropped by its Nats-Msg-Id)."""
    for start in range(0, len(events), _MAX_IN_FLIGHT):
        await publish_all(
            js,
            [
                (
                    _subject(event.account_sid),
                    event.body,
                    {
                        "Nats-Msg-Id": event_id(event),
                        CALL_HEADER: event.call_sid,
                        TYPE_HEADER: event.type,
                        IDENTITY_HEADER: event.identity,
                        TIME_HEADER: repr(event.time),
                    },
                )
                for event in events[start : start + _MAX_IN_FLIGHT]
            ],
        )


class NatsEventLog:
    def __init__(
        self,
        nc: Client,
        replicas: int,
        duplicate_window: float = EVENTS_DUPLICATE_WINDOW,
        max_age: float = DEFAULT_MAX_AGE,
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._replicas = replicas
        self._duplicate_window = duplicate_window
        self._max_age = max_age
        self._arrivals = Arrivals(EVENTS_SUBJECT)

    async def start(self) -> None:
        await ensure_stream(
            self._js, events_stream(self._replicas, self._duplicate_window, self._max_age)
        )
        await self._arrivals.start(self._nc)
        await self._arrivals.marks.advance({"*": await self.last_offset()})

    async def stop(self) -> None:
        await self._arrivals.stop()

    async def read(
        self, after: int, limit: int, account_sid: str | None = None
    ) -> Sequence[EventEntry]:
        subject = f"{EVENTS_SUBJECT}.*" if account_sid is None else _subject(account_sid)
        msgs = await direct_batch(self._nc, EVENTS_STREAM, subject, after, max(1, limit))
        return [_entry(msg) for msg in msgs]

    async def last_offset(self) -> int:
        info = await self._js.stream_info(EVENTS_STREAM)
        return int(info.state.last_seq)

    async def wait(self, after: int, timeout: float) -> None:
        await self._arrivals.marks.wait("*", after, timeout)


def _entry(msg: StoredMsg) -> EventEntry:
    headers = msg.headers
    return EventEntry(
        msg.seq,
        OutputEvent(
            account_sid=msg.subject.rsplit(".", 1)[-1],
            call_sid=headers[CALL_HEADER],
            type=headers[TYPE_HEADER],
            identity=headers[IDENTITY_HEADER],
            time=float(headers[TIME_HEADER]),
            body=msg.data,
        ),
    )
