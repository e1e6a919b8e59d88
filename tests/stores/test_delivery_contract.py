"""DeliveryStore on both backends: the embedded one (SQLite) and the distributed one
(JetStream queues on a real 3-node cluster + PostgreSQL books), as store/delivery.py
specifies it. All times are real: JetStream's leases and retry delays run on its clock.

Then the real DeliveryService with the webhook driver on the distributed store, against a
real HTTP receiver on 127.0.0.1 that fails for a while and then recovers.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec
import pytest
from aiohttp import web
from nats.js.errors import NotFoundError

from callstream.store.control import ControlStore, NewOutboxItem, Sink
from callstream.store.delivery import (
    ROUTER,
    Attempt,
    AttemptResult,
    DeliveryStore,
    NewDelivery,
    Settlement,
)
from callstream.store.interfaces import Account, AccountStore
from callstream.store.nats.delivery import DELIVERY_STREAM, NatsDeliveryStore
from callstream.store.postgres import open_postgres
from callstream.store.postgres.delivery import PostgresDeliveryLedger
from callstream.store.sqlite.accounts import SqliteAccountStore
from callstream.store.sqlite.control import SqliteControlStore
from callstream.store.sqlite.database import Database
from callstream.store.sqlite.delivery import SqliteDeliveryStore
from callstream.store.sqlite.schema import migrate
from callstream.streams.delivery import DeliveryConfig, DeliveryService
from tests.natscluster import NatsCluster
from tests.stores.nats.conftest import REPLICAS, cluster, connect, nats_cluster

__all__ = ["cluster", "nats_cluster"]  # fixtures used here, defined for the NATS tests

ACCOUNT = "AC" + "a" * 32
SINK = "DG" + "1" * 32
OTHER_SINK = "DG" + "2" * 32
GONE_SINK = "DG" + "9" * 32


@dataclass
class Process:
    """The stores one worker process holds."""

    queue: DeliveryStore
    control: ControlStore
    accounts: AccountStore


class Embedded:
    """One process holds the stores (every ``open`` gives the same ones)."""

    def __init__(self, path: Path) -> None:
        self._db = Database(path)
        self._db.write_sync(migrate)
        self._process = Process(
            SqliteDeliveryStore(self._db),
            SqliteControlStore(self._db),
            SqliteAccountStore(self._db),
        )

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Process]:
        yield self._process


class Distributed:
    """Every ``open`` is a separate process: its own NATS connection and PostgreSQL pool."""

    def __init__(self, nats: NatsCluster, postgres_url: str) -> None:
        self._nats = nats
        self._url = postgres_url

    @contextlib.asynccontextmanager
    async def open(self) -> AsyncIterator[Process]:
        nc = await connect(self._nats)
        stores = await open_postgres(self._url, max_connections=4)
        store = NatsDeliveryStore(nc, PostgresDeliveryLedger(stores.pool), REPLICAS)
        await store.start()
        try:
            yield Process(store, stores.control, stores.accounts)
        finally:
            await store.stop()
            await stores.close()
            await nc.close()


Backend = Embedded | Distributed


@pytest.fixture(params=["sqlite", "distributed"])
def backend(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Backend]:
    if request.param == "sqlite":
        yield Embedded(tmp_path / "callstream.db")
        return
    nats: NatsCluster = request.getfixturevalue("nats_cluster")
    asyncio.run(_drop_delivery_stream(nats))
    yield Distributed(nats, request.getfixturevalue("postgres_url"))


async def _drop_delivery_stream(nats: NatsCluster) -> None:
    nc = await connect(nats)
    try:
        with contextlib.suppress(NotFoundError):
            await nc.jetstream().delete_stream(DELIVERY_STREAM)
    finally:
        await nc.close()


def sink(sid: str, destination: str = "http://127.0.0.1:9/") -> Sink:
    return Sink(
        sid=sid,
        account_sid=ACCOUNT,
        description=sid,
        sink_type="webhook",
        configuration={"destination": destination, "method": "POST", "batch_events": False},
        status="initialized",
        date_created=1.0,
        date_updated=1.0,
    )


async def setup(p: Process, *sinks: Sink) -> None:
    await p.accounts.create_account(
        Account(sid=ACCOUNT, auth_token="t" * 32, friendly_name="a", date_created=0.0)
    )
    for s in sinks or (sink(SINK), sink(OTHER_SINK)):
        await p.control.create_sink(s, max_sinks=10)


def item(n: int, sink_sid: str = SINK) -> NewDelivery:
    return NewDelivery(
        account_sid=ACCOUNT, sink_sid=sink_sid, event_id=f"EV{n:04d}", body=b'{"n":%d}' % n
    )


def attempt(ok: bool, events: int = 1, sink_sid: str = SINK, error: str | None = None) -> Attempt:
    return Attempt(
        sink_sid=sink_sid, time=time.time(), events=events, ok=ok, error=error, status=None
    )


OK = AttemptResult(delivered=1, throttled_rate=None)
FAILED = AttemptResult(delivered=0, throttled_rate=50.0)


def run(backend: Backend, scenario: Callable[[Process], Awaitable[None]]) -> None:
    async def main() -> None:
        async with backend.open() as p:
            await scenario(p)

    asyncio.run(main())


async def eventually(check: Callable[[], Awaitable[Any]], timeout: float = 15.0) -> Any:
    """Poll ``check`` until it returns something truthy, with a deadline."""
    deadline = time.monotonic() + timeout
    while True:
        found = await check()
        if found:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"no result within {timeout}s")
        await asyncio.sleep(0.05)


async def pending_is(queue: DeliveryStore, sink_sid: str, count: int) -> bool:
    """Settled items leave the count at once on SQLite, a moment later on JetStream (the
    stream removes an acked message after the consumer has confirmed the ack)."""
    return await queue.pending(sink_sid) == count


def test_claims_come_oldest_first_and_an_expired_lease_delivers_again(backend: Backend) -> None:
    async def scenario(p: Process) -> None:
        await setup(p)
        q = p.queue
        await q.enqueue(
            [item(1), item(2), item(3), item(9, OTHER_SINK)], time.time(), consumer=ROUTER, cursor=4
        )
        first = await q.claim(SINK, time.time(), 2, lease=1.0)
        assert [d.event_id for d in first] == ["EV0001", "EV0002"]
        assert first[0].id < first[1].id and first[0].body == b'{"n":1}'
        assert first[0].account_sid == ACCOUNT and first[0].attempts == 0
        assert [d.event_id for d in await q.claim(SINK, time.time(), 5, 1.0)] == ["EV0003"]
        assert await q.claim(SINK, time.time(), 5, 1.0) == []
        assert await q.pending(SINK) == 3 and await q.pending(OTHER_SINK) == 1
        sinks = {(s.account_sid, s.sink_sid) for s in await q.queued_sinks()}
        assert sinks == {(ACCOUNT, SINK), (ACCOUNT, OTHER_SINK)}
        # Never settled: once the lease ends they are claimable again, oldest first.
        again = await eventually(lambda: q.claim(SINK, time.time(), 5, 1.0))
        assert [d.event_id for d in again][:2] == ["EV0001", "EV0002"]
        assert [d.attempts for d in again] == [0] * len(again)  # a lease is not an attempt

    run(backend, scenario)


def test_a_retry_comes_back_at_its_due_time_not_before_with_the_attempt_counted(
    backend: Backend,
) -> None:
    async def scenario(p: Process) -> None:
        await setup(p)
        q = p.queue
        await q.enqueue([item(1)], time.time(), consumer=ROUTER, cursor=1)
        [claimed] = await q.claim(SINK, time.time(), 1, 30.0)
        due = time.time() + 1.5
        failures = await q.settle(
            attempt(False, error="HTTP 503"),
            10,
            FAILED,
            Settlement(now=time.time(), retry=(claimed.id,), due_at=due, error="HTTP 503"),
        )
        assert failures == 1
        assert await q.claim(SINK, time.time(), 1, 30.0) == []
        assert await q.pending(SINK) == 1
        next_due = await q.next_due(SINK)
        assert next_due is not None and next_due > time.time()
        [back] = await eventually(lambda: q.claim(SINK, time.time(), 1, 30.0))
        assert time.time() >= due - 0.05, "claimable before its due time"
        assert (back.event_id, back.attempts) == ("EV0001", 1)
        stats = (await q.sink_stats([SINK]))[SINK]
        assert (stats.retried, stats.failed, stats.consecutive_failures) == (1, 1, 1)
        assert stats.last_error == "HTTP 503" and stats.throttled_rate == 50.0
        # Delivered now: gone from the queue, counted, failures forgotten.
        assert (
            await q.settle(attempt(True), 10, OK, Settlement(now=time.time(), ack=(back.id,))) == 0
        )
        await eventually(lambda: pending_is(q, SINK, 0))
        assert await q.next_due(SINK) is None
        stats = (await q.sink_stats([SINK]))[SINK]
        assert (stats.delivered, stats.consecutive_failures, stats.pending) == (1, 0, 0)
        assert stats.last_success_at is not None

    run(backend, scenario)


def test_dead_letters_are_paged_and_replayed_by_event_range_or_all_once(backend: Backend) -> None:
    async def scenario(p: Process) -> None:
        await setup(p)
        q = p.queue
        await q.enqueue([item(n) for n in range(1, 6)], time.time(), consumer=ROUTER, cursor=5)
        claimed = await q.claim(SINK, time.time(), 5, 30.0)
        assert len(claimed) == 5
        early = Settlement(now=1000.0, dead=tuple(d.id for d in claimed[:2]), reason="HTTP 400")
        late = Settlement(now=2000.0, dead=tuple(d.id for d in claimed[2:]), reason="HTTP 410")
        await q.settle(attempt(False, 2), 10, FAILED, early)
        await q.settle(attempt(False, 3), 10, FAILED, late)
        await eventually(lambda: pending_is(q, SINK, 0))
        page = await q.dead_letters(SINK, 2)
        assert [d.event_id for d in page] == ["EV0001", "EV0002"]
        assert (page[0].reason, page[0].attempts, page[0].dead_at) == ("HTTP 400", 1, 1000.0)
        rest = await q.dead_letters(SINK, 10, after_id=page[-1].id)
        assert [d.event_id for d in rest] == ["EV0003", "EV0004", "EV0005"]
        back = await q.dead_letters(SINK, 2, before_id=rest[-1].id)
        assert [d.event_id for d in back] == ["EV0003", "EV0004"]
        assert (await q.sink_stats([SINK]))[SINK].dead_lettered == 5

        assert await q.replay_dead_letters(SINK, time.time(), event_id="EV0002") == 1
        assert await q.replay_dead_letters(SINK, time.time(), dead_from=1500.0) == 3
        assert await q.replay_dead_letters(SINK, time.time()) == 1
        assert await q.replay_dead_letters(SINK, time.time()) == 0
        assert await q.dead_letters(SINK, 10) == []
        assert await q.pending(SINK) == 5
        replayed = await q.claim(SINK, time.time(), 10, 30.0)
        assert sorted(d.event_id for d in replayed) == [f"EV000{n}" for n in range(1, 6)]
        assert replayed[0].event_id == "EV0002" and replayed[0].body == b'{"n":2}'

    run(backend, scenario)


def test_attempts_are_bounded_counted_and_a_reset_makes_retries_due_now(
    backend: Backend,
) -> None:
    async def scenario(p: Process) -> None:
        await setup(p)
        q = p.queue
        for n in range(5):
            failures = await q.record_attempt(attempt(False, error=f"e{n}"), 3, FAILED)
        assert failures == 5
        log = await q.attempts(SINK, 10)
        assert [a.error for a in log] == ["e4", "e3", "e2"]
        await q.enqueue([item(1)], time.time(), consumer=ROUTER, cursor=1)
        [claimed] = await q.claim(SINK, time.time(), 1, 30.0)
        await q.settle(
            attempt(False),
            3,
            FAILED,
            Settlement(now=time.time(), retry=(claimed.id,), due_at=time.time() + 600, error="x"),
        )
        assert await q.claim(SINK, time.time(), 1, 30.0) == []
        await q.reset_failures(SINK, time.time())
        assert (await q.sink_stats([SINK]))[SINK].consecutive_failures == 0
        [due] = await eventually(lambda: q.claim(SINK, time.time(), 1, 30.0), timeout=5.0)
        assert due.event_id == "EV0001"
        # A Sink Test event that was never queued, given up on; retries counted outside.
        await q.bury(item(7), "HTTP 404", 2, 3000.0)
        await q.note_retried(SINK, 4)
        [dead] = await q.dead_letters(SINK, 10)
        assert (dead.event_id, dead.attempts, dead.reason) == ("EV0007", 2, "HTTP 404")
        stats = await q.sink_stats([SINK, "DG" + "f" * 32])
        assert stats[SINK].dead_lettered == 1 and stats[SINK].retried == 1 + 4
        assert stats[SINK].pending == 1 and stats[SINK].oldest_enqueued_at is not None
        assert stats["DG" + "f" * 32].delivered == 0
        assert SINK in {s.sink_sid for s in await q.all_sink_stats()}

    run(backend, scenario)


def test_enqueue_stores_duplicates_once_drops_unknown_sinks_and_moves_the_cursor(
    backend: Backend,
) -> None:
    async def scenario(p: Process) -> None:
        await setup(p)
        q = p.queue
        assert await q.cursor(ROUTER) == 0
        batch = [item(1), item(2), item(1, OTHER_SINK), item(5, GONE_SINK)]
        await q.enqueue(batch, time.time(), consumer=ROUTER, cursor=10)
        assert await q.cursor(ROUTER) == 10
        # The router replaying the batch after a crash: nothing is stored twice.
        await q.enqueue(batch, time.time(), consumer=ROUTER, cursor=12)
        assert await q.cursor(ROUTER) == 12
        assert (await q.pending(SINK), await q.pending(OTHER_SINK)) == (2, 1)
        assert await q.pending(GONE_SINK) == 0
        claimed = await q.claim(SINK, time.time(), 10, 30.0)
        assert [d.event_id for d in claimed] == ["EV0001", "EV0002"]
        # Claimed items are released at start-up (no request is in flight then).
        assert await q.claim(SINK, time.time(), 10, 30.0) == []
        await q.release_claims()
        again = await eventually(lambda: q.claim(SINK, time.time(), 10, 30.0), timeout=5.0)
        assert [d.event_id for d in again] == ["EV0001", "EV0002"]
        # A deleted sink's queue goes with it.
        await p.control.delete_sink(ACCOUNT, OTHER_SINK)
        assert {s.sink_sid for s in await q.queued_sinks()} == {SINK}
        assert await q.pending(OTHER_SINK) == 0

    run(backend, scenario)


def test_a_second_process_sees_and_wakes_on_the_first_ones_enqueues(backend: Backend) -> None:
    async def main() -> None:
        async with backend.open() as first, backend.open() as second:
            await setup(first)
            mark = second.queue.enqueued_mark(SINK)
            any_mark = second.queue.enqueued_mark(None)
            waiter = asyncio.ensure_future(second.queue.wait_enqueued(SINK, mark, 20.0))
            any_waiter = asyncio.ensure_future(second.queue.wait_enqueued(None, any_mark, 20.0))
            await asyncio.sleep(0)
            started = time.monotonic()
            await first.queue.enqueue([item(1)], time.time(), consumer=ROUTER, cursor=1)
            await asyncio.wait_for(asyncio.gather(waiter, any_waiter), 20.0)
            assert time.monotonic() - started < 5.0, "woke by timeout, not by the enqueue"
            assert second.queue.enqueued_mark(SINK) > mark
            assert await second.queue.pending(SINK) == 1
            assert await second.queue.cursor(ROUTER) == 1
            [claimed] = await second.queue.claim(SINK, time.time(), 5, 30.0)
            assert claimed.event_id == "EV0001"
            # Claimed by the second: hidden from the first.
            assert await first.queue.claim(SINK, time.time(), 5, 30.0) == []
            await second.queue.settle(
                attempt(True), 10, OK, Settlement(now=time.time(), ack=(claimed.id,))
            )
            await eventually(lambda: pending_is(first.queue, SINK, 0))
            assert (await first.queue.sink_stats([SINK]))[SINK].delivered == 1
            # A process that restarted settles an item it did not claim itself (the claim
            # it made before is gone with the process): the item still leaves the queue.
            await first.queue.enqueue([item(2)], time.time(), consumer=ROUTER, cursor=2)
            [other] = await eventually(lambda: second.queue.claim(SINK, time.time(), 5, 30.0))
            await first.queue.settle(
                attempt(True), 10, OK, Settlement(now=time.time(), ack=(other.id,))
            )
            await eventually(lambda: pending_is(second.queue, SINK, 0))
            assert (await second.queue.sink_stats([SINK]))[SINK].delivered == 2
            # An operator re-enables the sink through the first process (on JetStream: its
            # consumer is re-created); the second keeps claiming from it.
            await first.queue.reset_failures(SINK, time.time())
            await first.queue.enqueue([item(3)], time.time(), consumer=ROUTER, cursor=3)
            [third] = await eventually(lambda: second.queue.claim(SINK, time.time(), 5, 30.0))
            assert third.event_id == "EV0003"

    asyncio.run(main())


def test_a_consumer_deleted_under_a_worker_is_created_again_with_the_queue_intact(
    nats_cluster: NatsCluster, postgres_url: str
) -> None:
    """JetStream only: the server drops a consumer nobody pulled from for a day, and another
    process drops the consumer of a sink it found deleted. A claim on a consumer that is gone
    creates it again, and every item still stored is delivered."""
    asyncio.run(_drop_delivery_stream(nats_cluster))

    async def main() -> None:
        async with Distributed(nats_cluster, postgres_url).open() as p:
            await setup(p)
            await p.queue.enqueue([item(1), item(2)], time.time(), consumer=ROUTER, cursor=2)
            assert len(await p.queue.claim(SINK, time.time(), 1, 30.0)) == 1
            nc = await connect(nats_cluster)
            try:
                await nc.jetstream().delete_consumer(DELIVERY_STREAM, f"sink_{SINK}")
            finally:
                await nc.close()
            claimed = await p.queue.claim(SINK, time.time(), 5, 30.0)
            assert [d.event_id for d in claimed] == ["EV0001", "EV0002"]

    asyncio.run(main())


class Receiver:
    """A webhook endpoint on 127.0.0.1 that answers 503 to its first ``failures`` requests."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.requests = 0
        self.delivered: list[str] = []
        self.runner: web.AppRunner | None = None
        self.url = ""

    async def handle(self, request: web.Request) -> web.Response:
        self.requests += 1
        events = msgspec.json.decode(await request.read())
        if self.requests <= self.failures:
            return web.Response(status=503)
        self.delivered += [e["id"] for e in events if "id" in e]
        return web.Response(status=200)

    async def start(self) -> Receiver:
        app = web.Application()
        app.router.add_post("/hook", self.handle)
        self.runner = web.AppRunner(app)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = self.runner.addresses[0][1]
        self.url = f"http://127.0.0.1:{port}/hook"
        return self

    async def stop(self) -> None:
        if self.runner is not None:
            await self.runner.cleanup()


def test_the_delivery_service_delivers_every_event_through_a_failing_receiver(
    nats_cluster: NatsCluster, postgres_url: str
) -> None:
    asyncio.run(_drop_delivery_stream(nats_cluster))
    distributed = Distributed(nats_cluster, postgres_url)

    async def main() -> None:
        receiver = await Receiver(failures=6).start()
        try:
            async with distributed.open() as p:
                await setup(p, sink(SINK, receiver.url))
                await p.control.record_sink_test(
                    ACCOUNT,
                    SINK,
                    "test-1",
                    NewOutboxItem(
                        type="com.twilio.eventstreams.test-sink", schema_version=1, body=b""
                    ),
                    2.0,
                )
                await p.control.validate_sink(ACCOUNT, SINK, "test-1", 3.0)
                events = [
                    NewDelivery(
                        account_sid=ACCOUNT,
                        sink_sid=SINK,
                        event_id=f"EV{n:04d}",
                        body=b'{"id":"EV%04d","n":%d}' % (n, n),
                    )
                    for n in range(20)
                ]
                await p.queue.enqueue(events, time.time(), consumer=ROUTER, cursor=20)
                config = DeliveryConfig(
                    retry_base=0.1, retry_cap=0.4, lease=10.0, idle_exit=30.0, failure_threshold=0
                )
                service = DeliveryService(
                    p.queue,
                    p.control,
                    p.accounts,
                    allow_private=True,
                    schema_base_url="http://127.0.0.1/schemas",
                    config=config,
                )
                service.start()
                try:
                    wanted = {e.event_id for e in events}

                    async def all_delivered() -> bool:
                        return wanted <= set(receiver.delivered)

                    await eventually(all_delivered, timeout=60.0)
                    await eventually(lambda: pending_is(p.queue, SINK, 0), timeout=10.0)
                finally:
                    await service.stop()
                assert receiver.requests > receiver.failures
                mine = [i for i in receiver.delivered if i in wanted]
                assert set(mine) == wanted  # once or more, with the ids they were queued with
                stats = (await p.queue.sink_stats([SINK]))[SINK]
                assert stats.delivered >= 20 and stats.retried >= 1 and stats.failed >= 1
                assert stats.pending == 0 and await p.queue.dead_letters(SINK, 10) == []
                log = await p.queue.attempts(SINK, 100)
                assert any(a.status == 503 for a in log) and log[0].ok
        finally:
            await receiver.stop()

    asyncio.run(main())
