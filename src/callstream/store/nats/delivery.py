"""The per-sink delivery queues of the distributed backend: JetStream queues, PostgreSQL books.

Queues. One stream ``CS_DELIVERY`` (WorkQueue retention: a message is gone once acked) with
the subjects ``cs.delivery.<account_sid>.<sink_sid>``, and per sink one durable pull consumer
filtered on its subject, created on first use, whose AckWait is the claim lease. An item's
``id`` is its stream sequence (increasing in enqueue order); its CloudEvent id, account and
enqueue time travel in headers. ``claim`` is a no-wait pull (only what is due now: an item
waiting out a delayed nak is simply not delivered yet), ``settle`` acks (delivered: ack and
wait for the server's confirmation), naks with a delay (retry) or terminates (dead letter).

Books. Counters, health, the attempt log, dead letters and the failed-attempt count of items
waiting for a retry are PostgreSQL rows (``store/postgres/delivery.py``), and the router's
cursor too. ``settle`` commits them first and then tells JetStream: a crash in between sends
an item again once its lease ends (at least once; counted twice at worst), never loses one.

Enqueue and the duplicate window. The router publishes each item with ``Nats-Msg-Id`` =
``<sink_sid>:<CloudEvent id>`` and only then writes its cursor (LAST). A crash between the
two makes the router (here or in another process, taking over within seconds) replay the
batch from the stored cursor; the replayed publishes carry the same ids, and JetStream drops
them while the first ones are within the stream's duplicate window (10 minutes by default,
far longer than a takeover). A replay later than that (the router down for longer between
publishing and writing its cursor) queues the item again: it is delivered twice with the
same CloudEvent id, which receivers de-duplicate on; nothing is lost either way.

Wake-ups across processes. The stream republishes each stored message, headers only, on
``cs.appended.cs.delivery.<account>.<sink>``; every store instance subscribes and advances a
mark per sink, so a worker waiting in any process wakes when any router enqueues.
``reset_failures`` and ``replay_dead_letters`` wake the same way.

Approximations (docs/deploy.md, "Delivery queues"): ``next_due`` knows only the retry times
this process set; for items another process nak'ed it answers "in a second" (a poll), and
``release_claims`` releases this instance's claims only (another process's requests may be in
flight; its claims end with their lease).
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass

import msgspec
from nats.aio.client import Client
from nats.aio.msg import Msg
from nats.aio.subscription import Subscription
from nats.errors import TimeoutError as NatsTimeoutError
from nats.js import JetStreamContext
from nats.js.api import (
    AckPolicy,
    ConsumerConfig,
    DeliverPolicy,
    RePublish,
    RetentionPolicy,
    StorageType,
    StreamConfig,
)
from nats.js.errors import NotFoundError

from callstream.store.delivery import (
    Attempt,
    AttemptResult,
    DeadLetter,
    Delivery,
    NewDelivery,
    QueuedSink,
    Settlement,
    SinkStats,
)
from callstream.store.nats.layout import appended_subject, ensure_stream
from callstream.store.nats.publish import Message, publish_all
from callstream.store.postgres.delivery import DeadItem, PostgresDeliveryLedger
from callstream.store.signal import HighWater

DELIVERY_STREAM = "CS_DELIVERY"
DELIVERY_SUBJECT = "cs.delivery"
# A router replays a batch after a crash within seconds (another worker takes over): ten
# minutes covers it with room, as for the events log.
DELIVERY_DUPLICATE_WINDOW = 600.0
# Items a sink may have claimed or waiting for a retry at once. Beyond it new items wait in
# the stream (not lost) until some settle or come due.
MAX_ACK_PENDING = 10_000
# How long ``next_due`` tells a worker to wait when it cannot know (another process's retry).
POLL = 1.0
# A sink's consumer that nobody pulled from for this long is deleted by the server (a deleted
# sink's, say); the next claim creates it again and it delivers every item still stored.
INACTIVE_THRESHOLD = 24 * 3600.0

ACCOUNT_HEADER = "Cs-Account"
EVENT_HEADER = "Cs-Event-Id"
ENQUEUED_HEADER = "Cs-Enqueued-At"
_ANY = "*"
_PUBLISH_BATCH = 512
_END_STATUSES = {"404", "408", "409"}


def sink_subject(account_sid: str, sink_sid: str) -> str:
    # Account and sink SIDs are letters and hex digits: always valid subject tokens.
    return f"{DELIVERY_SUBJECT}.{account_sid}.{sink_sid}"


def _sink_filter(sink_sid: str) -> str:
    return f"{DELIVERY_SUBJECT}.*.{sink_sid}"


def _consumer(sink_sid: str) -> str:
    return f"sink_{sink_sid}"


def delivery_stream(replicas: int, duplicate_window: float) -> StreamConfig:
    return StreamConfig(
        name=DELIVERY_STREAM,
        subjects=[f"{DELIVERY_SUBJECT}.*.*"],
        retention=RetentionPolicy.WORK_QUEUE,
        num_replicas=replicas,
        storage=StorageType.FILE,
        duplicate_window=duplicate_window,
        republish=RePublish(
            src=f"{DELIVERY_SUBJECT}.*.*",
            dest=f"{appended_subject(DELIVERY_SUBJECT)}.{{{{wildcard(1)}}}}.{{{{wildcard(2)}}}}",
            headers_only=True,
        ),
    )


@dataclass
class _Claim:
    msg: Msg
    delivery: Delivery
    until: float


class NatsDeliveryStore:
    def __init__(
        self,
        nc: Client,
        ledger: PostgresDeliveryLedger,
        replicas: int,
        *,
        duplicate_window: float = DELIVERY_DUPLICATE_WINDOW,
        max_ack_pending: int = MAX_ACK_PENDING,
    ) -> None:
        self._nc = nc
        self._js: JetStreamContext = nc.jetstream()
        self._ledger = ledger
        self._replicas = replicas
        self._duplicate_window = duplicate_window
        self._max_ack_pending = max_ack_pending
        self._consumers: dict[str, float] = {}
        """Consumers known to exist, with their AckWait."""
        self._claims: dict[int, _Claim] = {}
        """This instance's claimed items by id (stream sequence), to settle them."""
        self._retry_at: dict[str, dict[int, float]] = {}
        """Per sink, when the items this instance nak'ed come due (``next_due``'s hints)."""
        self._marks = HighWater()
        self._sequence = itertools.count(1)
        self._sub: Subscription | None = None

    async def start(self) -> None:
        await ensure_stream(self._js, delivery_stream(self._replicas, self._duplicate_window))
        self._sub = await self._nc.subscribe(
            f"{appended_subject(DELIVERY_SUBJECT)}.*.*", cb=self._on_appended
        )

    async def stop(self) -> None:
        if self._sub is not None:
            await self._sub.unsubscribe()
            self._sub = None

    async def _on_appended(self, msg: Msg) -> None:
        await self._bump([msg.subject.rsplit(".", 1)[-1]])

    async def _bump(self, sink_sids: Sequence[str] | set[str]) -> None:
        # A counter of this instance, not the stream sequence: wake-ups that store nothing
        # (reset_failures) must advance the marks too.
        mark = next(self._sequence)
        marks: dict[Hashable, int] = {sid: mark for sid in sink_sids}
        marks[_ANY] = mark
        await self._marks.advance(marks)

    async def _wake(self, sink_sid: str) -> None:
        """Wake the sink's workers in every process (the account token is unused)."""
        await self._nc.publish(f"{appended_subject(DELIVERY_SUBJECT)}._.{sink_sid}", b"")
        await self._bump([sink_sid])

    # -- the router ----------------------------------------------------------------------------

    async def cursor(self, consumer: str) -> int:
        return await self._ledger.cursor(consumer)

    async def enqueue(
        self, items: Sequence[NewDelivery], now: float, *, consumer: str, cursor: int
    ) -> None:
        existing = await self._ledger.existing_sinks([i.sink_sid for i in items])
        messages: list[Message] = [
            (
                sink_subject(i.account_sid, i.sink_sid),
                i.body,
                {
                    "Nats-Msg-Id": f"{i.sink_sid}:{i.event_id}",
                    ACCOUNT_HEADER: i.account_sid,
                    EVENT_HEADER: i.event_id,
                    ENQUEUED_HEADER: repr(now),
                },
            )
            for i in items
            if i.sink_sid in existing
        ]
        for start in range(0, len(messages), _PUBLISH_BATCH):
            await publish_all(self._js, messages[start : start + _PUBLISH_BATCH])
        # Last: a crash before this replays the batch, and the replay is de-duplicated.
        await self._ledger.set_cursor(consumer, cursor)
        if messages:
            await self._bump({i.sink_sid for i in items if i.sink_sid in existing})

    # -- the worker ----------------------------------------------------------------------------

    async def _ensure_consumer(self, sink_sid: str, lease: float) -> None:
        if self._consumers.get(sink_sid) == lease:
            return
        config = ConsumerConfig(
            durable_name=_consumer(sink_sid),
            name=_consumer(sink_sid),
            # A list: a single wildcard filter would be put into the API subject itself.
            filter_subjects=[_sink_filter(sink_sid)],
            deliver_policy=DeliverPolicy.ALL,
            ack_policy=AckPolicy.EXPLICIT,
            ack_wait=lease,
            max_deliver=-1,
            max_ack_pending=self._max_ack_pending,
            inactive_threshold=INACTIVE_THRESHOLD,
        )
        # Creating with the same configuration is a no-op; with another AckWait, an update.
        await self._js.add_consumer(DELIVERY_STREAM, config)
        self._consumers[sink_sid] = lease

    async def _pull(self, sink_sid: str, limit: int, timeout: float = 5.0) -> list[Msg]:
        """What the sink's consumer has for us now: a no-wait pull (nothing lingers on the
        server to capture later messages)."""
        inbox = self._nc.new_inbox()
        sub = await self._nc.subscribe(inbox)
        found: list[Msg] = []
        try:
            request = json.dumps({"batch": limit, "no_wait": True}).encode()
            await self._nc.publish(
                f"$JS.API.CONSUMER.MSG.NEXT.{DELIVERY_STREAM}.{_consumer(sink_sid)}",
                request,
                reply=inbox,
            )
            loop = asyncio.get_running_loop()
            deadline = loop.time() + timeout
            while len(found) < limit:
                try:
                    msg = await sub.next_msg(timeout=max(0.001, deadline - loop.time()))
                except NatsTimeoutError:
                    if found:
                        return found
                    raise
                status = (msg.headers or {}).get("Status")
                if status is not None and not msg.data:
                    if status in _END_STATUSES:
                        return found
                    if status == "100":  # a heartbeat
                        continue
                    raise RuntimeError(f"pull from {sink_sid} failed: {status} {msg.headers}")
                found.append(msg)
            return found
        finally:
            await sub.unsubscribe()

    async def claim(self, sink_sid: str, now: float, limit: int, lease: float) -> list[Delivery]:
        self._forget_stale(time.time())
        await self._ensure_consumer(sink_sid, lease)
        try:
            msgs = await self._pull(sink_sid, limit)
        except (NatsTimeoutError, RuntimeError):
            # The consumer may have been re-created or deleted by another process.
            self._consumers.pop(sink_sid, None)
            await self._ensure_consumer(sink_sid, lease)
            msgs = await self._pull(sink_sid, limit)
        again = [m for m in msgs if m.metadata.num_delivered > 1]
        failed = (
            await self._ledger.failed_attempts(
                sink_sid, [(m.headers or {})[EVENT_HEADER] for m in again]
            )
            if again
            else {}
        )
        until = time.time() + lease
        claimed: list[Delivery] = []
        for msg in sorted(msgs, key=lambda m: m.metadata.sequence.stream):
            headers = msg.headers or {}
            seq = msg.metadata.sequence.stream
            delivery = Delivery(
                id=seq,
                account_sid=headers[ACCOUNT_HEADER],
                sink_sid=sink_sid,
                event_id=headers[EVENT_HEADER],
                body=msg.data,
                enqueued_at=float(headers[ENQUEUED_HEADER]),
                attempts=failed.get(headers[EVENT_HEADER], 0),
            )
            self._claims[seq] = _Claim(msg, delivery, until)
            self._retry_at.get(sink_sid, {}).pop(seq, None)
            claimed.append(delivery)
        return claimed

    def _forget_stale(self, now: float) -> None:
        """Claims whose lease ended are JetStream's to deliver again (maybe elsewhere)."""
        for seq in [s for s, c in self._claims.items() if c.until < now]:
            del self._claims[seq]
        for hints in self._retry_at.values():
            for seq in [s for s, due in hints.items() if due < now - POLL]:
                del hints[seq]

    async def _item(self, seq: int) -> Delivery | None:
        """A queued item by id, from the claim or else from the stream (a claim of another
        instance, or one whose lease ended)."""
        claim = self._claims.get(seq)
        if claim is not None:
            return claim.delivery
        try:
            raw = await self._js.get_msg(DELIVERY_STREAM, seq)
        except NotFoundError:
            return None
        headers = raw.headers or {}
        return Delivery(
            id=seq,
            account_sid=headers[ACCOUNT_HEADER],
            sink_sid=(raw.subject or "").rsplit(".", 1)[-1],
            event_id=headers[EVENT_HEADER],
            body=raw.data or b"",
            enqueued_at=float(headers[ENQUEUED_HEADER]),
            attempts=0,
        )

    async def settle(
        self, attempt: Attempt, keep: int, result: AttemptResult, settlement: Settlement
    ) -> int:
        items = {seq: await self._item(seq) for seq in (*settlement.ack, *settlement.retry)}
        dead = [d for d in [await self._item(seq) for seq in settlement.dead] if d is not None]
        failures = await self._ledger.settle(
            attempt,
            keep,
            result,
            acked=[d.event_id for s in settlement.ack if (d := items[s]) is not None],
            retried=[d.event_id for s in settlement.retry if (d := items[s]) is not None],
            error=settlement.error,
            dead=[
                DeadItem(d.account_sid, d.event_id, d.body, d.enqueued_at, d.attempts + 1)
                for d in dead
            ],
            reason=settlement.reason,
            now=settlement.now,
        )
        # Then the queue: a crash before this only sends (or buries) an item again.
        await asyncio.gather(
            *(self._remove(seq, term=False) for seq in settlement.ack),
            *(self._remove(seq, term=True) for seq in settlement.dead),
            *(self._nak(attempt.sink_sid, seq, settlement.due_at) for seq in settlement.retry),
        )
        return failures

    async def _remove(self, seq: int, *, term: bool) -> None:
        claim = self._claims.pop(seq, None)
        if claim is not None:
            try:
                if term:
                    await claim.msg.term()
                else:
                    await claim.msg.ack_sync()
                return
            except Exception:  # unconfirmed (consumer re-created, lease ended): see below
                pass
        # Not (or no longer) our claim: remove the message itself.
        with contextlib.suppress(NotFoundError):
            await self._js.delete_msg(DELIVERY_STREAM, seq)

    async def _nak(self, sink_sid: str, seq: int, due_at: float) -> None:
        claim = self._claims.pop(seq, None)
        if claim is None:
            return  # its lease ends and it comes back then
        await claim.msg.nak(delay=max(0.0, due_at - time.time()))
        self._retry_at.setdefault(sink_sid, {})[seq] = due_at

    async def bury(self, item: NewDelivery, reason: str, attempts: int, now: float) -> None:
        await self._ledger.bury(
            item.sink_sid,
            DeadItem(item.account_sid, item.event_id, item.body, now, attempts),
            reason,
            now,
        )

    async def note_retried(self, sink_sid: str, events: int) -> None:
        await self._ledger.note_retried(sink_sid, events)

    async def record_attempt(
        self, attempt: Attempt, keep: int, result: AttemptResult | None = None
    ) -> int:
        return await self._ledger.record_attempt(attempt, keep, result)

    async def attempts(self, sink_sid: str, limit: int) -> list[Attempt]:
        return await self._ledger.attempts(sink_sid, limit)

    async def dead_letters(
        self,
        sink_sid: str,
        limit: int,
        *,
        after_id: int | None = None,
        before_id: int | None = None,
    ) -> list[DeadLetter]:
        return await self._ledger.dead_letters(
            sink_sid, limit, after_id=after_id, before_id=before_id
        )

    async def replay_dead_letters(
        self,
        sink_sid: str,
        now: float,
        *,
        event_id: str | None = None,
        dead_from: float | None = None,
        dead_until: float | None = None,
    ) -> int:
        letters = await self._ledger.select_dead_letters(
            sink_sid, event_id=event_id, dead_from=dead_from, dead_until=dead_until
        )
        if not letters:
            return 0
        # The same CloudEvent id, but a Nats-Msg-Id of its own (the dead letter's row id):
        # the first enqueue's id may still be in the duplicate window, and a replay repeated
        # after a crash before the delete below is dropped as a duplicate.
        messages: list[Message] = [
            (
                sink_subject(d.account_sid, sink_sid),
                d.body,
                {
                    "Nats-Msg-Id": f"{sink_sid}:{d.event_id}:replay-{d.id}",
                    ACCOUNT_HEADER: d.account_sid,
                    EVENT_HEADER: d.event_id,
                    ENQUEUED_HEADER: repr(now),
                },
            )
            for d in letters
        ]
        for start in range(0, len(messages), _PUBLISH_BATCH):
            await publish_all(self._js, messages[start : start + _PUBLISH_BATCH])
        replayed = await self._ledger.delete_dead_letters([d.id for d in letters])
        await self._wake(sink_sid)
        return replayed

    # -- what operators and the service read -----------------------------------------------------

    async def _queued(self, subjects_filter: str) -> dict[tuple[str, str], int]:
        """(account, sink) -> items stored for it (WorkQueue: queued, claimed or not)."""
        info = await self._js.stream_info(DELIVERY_STREAM, subjects_filter=subjects_filter)
        found: dict[tuple[str, str], int] = {}
        for subject, count in (info.state.subjects or {}).items():
            _, _, account_sid, sink_sid = subject.split(".")
            if count:
                found[(account_sid, sink_sid)] = count
        return found

    async def _oldest(self, account_sid: str, sink_sid: str) -> float | None:
        try:
            raw = await self._js.get_msg(
                DELIVERY_STREAM, seq=1, subject=sink_subject(account_sid, sink_sid), next=True
            )
        except NotFoundError:
            return None
        return float((raw.headers or {})[ENQUEUED_HEADER])

    async def sink_stats(self, sink_sids: Sequence[str]) -> dict[str, SinkStats]:
        sids = list(dict.fromkeys(sink_sids))
        found = {sid: SinkStats(sink_sid=sid) for sid in sids}
        found.update(await self._ledger.stats(sids))
        wanted = set(sids)
        # One sink (an API read): its own subjects; many (metrics): every queue at once.
        filter_ = _sink_filter(sids[0]) if len(sids) == 1 else f"{DELIVERY_SUBJECT}.>"
        queued = await self._queued(filter_) if sids else {}
        for (account_sid, sink_sid), count in queued.items():
            if sink_sid in wanted:
                oldest = await self._oldest(account_sid, sink_sid)
                found[sink_sid] = msgspec.structs.replace(
                    found[sink_sid], pending=count, oldest_enqueued_at=oldest
                )
        return found

    async def all_sink_stats(self) -> list[SinkStats]:
        sids = set(await self._ledger.sinks_with_stats())
        sids |= {sink for _, sink in await self._queued(f"{DELIVERY_SUBJECT}.>")}
        stats = await self.sink_stats(sorted(sids))
        return list(stats.values())

    async def reset_failures(self, sink_sid: str, now: float) -> None:
        await self._ledger.reset_failures(sink_sid)
        # A delayed nak cannot be shortened; a new consumer delivers every item of the sink
        # still in the stream at once (WorkQueue: acked ones are gone). Requests in flight
        # elsewhere may be sent again: at least once.
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(DELIVERY_STREAM, _consumer(sink_sid))
        lease = self._consumers.pop(sink_sid, None)
        if lease is not None:
            await self._ensure_consumer(sink_sid, lease)
        self._retry_at.pop(sink_sid, None)
        await self._wake(sink_sid)

    async def pending(self, sink_sid: str) -> int:
        return sum((await self._queued(_sink_filter(sink_sid))).values())

    async def queued_sinks(self) -> list[QueuedSink]:
        queued = await self._queued(f"{DELIVERY_SUBJECT}.>")
        existing = await self._ledger.existing_sinks([sink for _, sink in queued])
        for account_sid, sink_sid in queued:
            if sink_sid not in existing:
                await self._drop(account_sid, sink_sid)
        return [
            QueuedSink(account_sid=account_sid, sink_sid=sink_sid)
            for account_sid, sink_sid in sorted(queued)
            if sink_sid in existing
        ]

    async def _drop(self, account_sid: str, sink_sid: str) -> None:
        """The queue of a deleted sink goes with it (as its rows do in PostgreSQL)."""
        await self._js.purge_stream(DELIVERY_STREAM, subject=sink_subject(account_sid, sink_sid))
        with contextlib.suppress(NotFoundError):
            await self._js.delete_consumer(DELIVERY_STREAM, _consumer(sink_sid))
        self._consumers.pop(sink_sid, None)

    async def next_due(self, sink_sid: str) -> float | None:
        if not await self.pending(sink_sid):
            return None
        now = time.time()
        try:
            info = await self._js.consumer_info(DELIVERY_STREAM, _consumer(sink_sid))
        except NotFoundError:
            return now  # never claimed: all of it is due
        if info.num_pending and (info.num_ack_pending or 0) < self._max_ack_pending:
            return now  # never delivered yet
        # Everything is claimed or waiting for a retry: when, this process knows only for
        # its own; otherwise look again in a moment.
        hints = [
            *(due for due in self._retry_at.get(sink_sid, {}).values() if due > now),
            *(
                c.until
                for c in self._claims.values()
                if c.delivery.sink_sid == sink_sid and c.until > now
            ),
        ]
        return min(hints, default=now + POLL)

    async def release_claims(self) -> None:
        claims, self._claims = self._claims, {}
        await asyncio.gather(*(c.msg.nak() for c in claims.values()), return_exceptions=True)

    def enqueued_mark(self, sink_sid: str | None) -> int:
        return self._marks.get(_ANY if sink_sid is None else sink_sid)

    async def wait_enqueued(self, sink_sid: str | None, after: int, timeout: float) -> None:
        await self._marks.wait(_ANY if sink_sid is None else sink_sid, after, timeout)
