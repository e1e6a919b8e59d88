"""Helpers for tests that run callstream as separate ``worker --role ...`` processes on the
distributed backend: waiting on conditions, reading and watching the engine's partition
leases, subscribing a webhook receiver to every Voice Insights event, posting traffic
through a failover, and reading the engine's event log as the oracle of what must arrive.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import httpx
import msgspec
import nats
import nats.errors
from twilio.rest import Client  # type: ignore[import-untyped]

from callstream.model.catalogue import catalogue
from callstream.model.telemetry import encode_batch
from callstream.server import PARTITIONS
from callstream.sim import SimConfig, Simulation
from callstream.store.interfaces import Lease
from callstream.store.nats.events import NatsEventLog
from callstream.store.nats.layout import LEASES_BUCKET
from callstream.store.nats.leases import LeaseValue, NatsPartitionLeases
from tests.integration.server import ACCOUNT_SID, AUTH_TOKEN, Server
from tests.integration.test_webhook_delivery import Receiver
from tests.integration.traffic import BATCH, NO_LOSS

COMPLETE = "com.twilio.voice.insights.call-summary.complete"


def wait_until(check: Callable[[], bool], timeout: float, what: str, every: float = 0.2) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(every)  # polling interval of a condition with a deadline


def start_all(servers: Iterable[Server], timeout: float = 60) -> None:
    """Start the servers one after another: started together on a loaded 2-core machine,
    each creating its R3 streams and buckets, a worker's first JetStream request can time
    out (5 s) and the worker exits."""
    for server in servers:
        server.start(timeout)


def stop_all(servers: Iterable[Server]) -> None:
    for server in servers:
        if server.process is not None:
            server.stop()


def lease_owners(env: dict[str, str]) -> dict[int, Lease]:
    """The engine partitions' current leases, as stored in NATS."""

    async def read() -> dict[int, Lease]:
        nc = await nats.connect(servers=env["CALLSTREAM_NATS_URL"].split(","))
        try:
            leases = NatsPartitionLeases(nc, PARTITIONS, replicas=3, owner="test-reader")
            await leases.start()
            return await leases.owners()
        finally:
            await nc.close()

    return asyncio.run(read())


def owner_pid(lease: Lease | str) -> int:
    # Owner ids are <host>-<pid>-<random> (store/nats/leases.py worker_id).
    owner = lease if isinstance(lease, str) else lease.owner
    return int(owner.rsplit("-", 2)[1])


def pid_of(server: Server) -> int:
    assert server.process is not None
    return server.process.pid


def subscribe_everything(front: Server, receiver: Receiver) -> None:
    """A batched webhook sink at the receiver, subscribed to every Voice Insights type."""
    client = Client(ACCOUNT_SID, AUTH_TOKEN)
    client.events.base_url = front.url
    sink = client.events.v1.sinks.create(
        description="all",
        sink_type="webhook",
        sink_configuration={
            "destination": receiver.url("/hook"),
            "method": "POST",
            "batch_events": True,
        },
    )
    types = [t.type for t in catalogue().types if t.type.startswith("com.twilio.voice")]
    client.events.v1.subscriptions.create(
        description="everything", sink_sid=sink.sid, types=[{"type": t} for t in types]
    )


def received(receiver: Receiver) -> list[dict[str, Any]]:
    return [event for request in receiver.snapshot() for event in request.events]


def complete_ids(receiver: Receiver) -> dict[str, set[str]]:
    """Call SID -> CloudEvent ids of the complete summaries the receiver got for it."""
    found: dict[str, set[str]] = {}
    for event in received(receiver):
        if event["type"] == COMPLETE:
            found.setdefault(event["data"]["call_sid"], set()).add(event["id"])
    return found


def conflicting_duplicates(receiver: Receiver) -> dict[str, list[Any]]:
    """CloudEvent ids that arrived more than once with different data (must be none)."""
    by_id: dict[str, list[Any]] = {}
    for event in received(receiver):
        seen = by_id.setdefault(event["id"], [])
        if event["data"] not in seen:
            seen.append(event["data"])
    return {event_id: data for event_id, data in by_id.items() if len(data) > 1}


def post_traffic_retrying(server: Server, calls: int, seed: int, timeout: float = 30) -> list[str]:
    """``traffic.post_traffic``, but a batch refused while the cluster elects new stream
    leaders (a 5xx or a dropped connection) is posted again until ``timeout``: ingest is
    idempotent per batch, so a retry stores nothing twice."""
    simulation = Simulation(SimConfig(calls=calls, seed=seed, delivery=NO_LOSS))
    records = [record for _, record in simulation]
    deadline = time.monotonic() + timeout
    with server.client() as client:
        for start in range(0, len(records), BATCH):
            body = encode_batch(records[start : start + BATCH])
            while True:
                try:
                    response = client.post(
                        "/v1/Telemetry",
                        content=body,
                        headers={"content-type": "application/json"},
                    )
                    if response.status_code == 202:
                        break
                    assert response.status_code >= 500, response.text
                    failure = f"{response.status_code} {response.text}"
                except httpx.TransportError as error:
                    failure = repr(error)
                if time.monotonic() > deadline:
                    raise AssertionError(f"telemetry not accepted within {timeout}s: {failure}")
                time.sleep(0.2)  # back-off between retries of a refused batch
    return [plan.call_sid for plan in simulation.plans()]


def logged_events(env: dict[str, str]) -> dict[tuple[str, str], set[str]]:
    """(call SID, type) -> identities of the insight events the engine stored in the events
    stream: what the webhook sink must receive, one CloudEvent id per identity."""

    async def read() -> dict[tuple[str, str], set[str]]:
        nc = await nats.connect(servers=env["CALLSTREAM_NATS_URL"].split(","))
        try:
            log = NatsEventLog(nc, replicas=3)
            await log.start()
            found: dict[tuple[str, str], set[str]] = {}
            after, last = 0, await log.last_offset()
            while after < last:
                entries = await log.read(after, 1000, ACCOUNT_SID)
                if not entries:
                    break
                for entry in entries:
                    key = (entry.event.call_sid, entry.event.type)
                    found.setdefault(key, set()).add(entry.event.identity)
                after = entries[-1].offset
            await log.stop()
            return found
        finally:
            await nc.close()

    return asyncio.run(read())


@dataclass(frozen=True)
class LeaseWrite:
    """One revision of a partition's lease key, as the watch saw it."""

    partition: int
    owner: str  # "" when released or deleted
    expires_at: float
    revision: int
    seen_at: float  # wall clock (time.time, the workers' clock) when the watch got it


@dataclass
class LeaseWatch:
    """Every write to the engine's partition lease keys (``p.<n>`` in ``CS_LEASES``), in
    order, from a KV watch on its own thread: a poll can miss a short-lived owner, the
    watch sees every revision."""

    env: dict[str, str]
    writes: list[LeaseWrite] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _ready: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None
    _error: BaseException | None = None

    def start(self) -> LeaseWatch:
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()
        assert self._ready.wait(30), f"lease watch did not start: {self._error!r}"
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(10)
        if self._error is not None:
            raise AssertionError(f"lease watch failed: {self._error!r}")

    def _run(self) -> None:
        try:
            asyncio.run(self._watch())
        except BaseException as error:  # reported by stop()
            self._error = error
            self._ready.set()

    async def _watch(self) -> None:
        nc = await nats.connect(servers=self.env["CALLSTREAM_NATS_URL"].split(","))
        try:
            # Creates the bucket as the workers would (R3), so the watch can start first.
            await NatsPartitionLeases(nc, PARTITIONS, replicas=3, owner="test-watch").start()
            kv = await nc.jetstream().key_value(LEASES_BUCKET)
            watcher = await kv.watch("p.*", include_history=True)
            self._ready.set()
            while not self._stop.is_set():
                try:
                    entry = await watcher.updates(timeout=0.1)  # type: ignore[no-untyped-call]
                except nats.errors.TimeoutError:
                    continue
                if entry is None:  # the end of the initial values
                    continue
                value = (
                    msgspec.msgpack.decode(entry.value, type=LeaseValue)
                    if entry.value and entry.operation is None
                    else LeaseValue("", 0.0)
                )
                self.writes.append(
                    LeaseWrite(
                        int(entry.key.rsplit(".", 1)[1]),
                        value.owner,
                        value.expires_at,
                        int(entry.revision or 0),
                        time.time(),
                    )
                )
            await watcher.stop()  # type: ignore[no-untyped-call]
        finally:
            await nc.close()

    def overlaps(self, ttl: float) -> list[str]:
        """Handovers where the new owner took a lease before the old one had expired.

        A lease is taken at ``expires_at - ttl`` of its first write (the taker's clock),
        so a takeover from A to B without a release in between is correct only when B's
        take is at or after A's last expiry."""
        problems = []
        for partition, writes in self._by_partition().items():
            for before, after in itertools.pairwise(writes):
                if before.owner and after.owner and before.owner != after.owner:
                    taken = after.expires_at - ttl
                    if taken < before.expires_at - 1e-3:
                        problems.append(
                            f"p{partition}: {after.owner} took at {taken:.3f}, "
                            f"{before.owner} held it until {before.expires_at:.3f}"
                        )
        return problems

    def longest_unowned(self, ttl: float) -> float:
        """The longest time a partition went from one owner (released or expired) to the
        next, over every handover seen."""
        longest = 0.0
        for writes in self._by_partition().values():
            free_since: float | None = None
            for before, after in itertools.pairwise(writes):
                if before.owner and not after.owner:  # released
                    free_since = min(after.seen_at, before.expires_at)
                elif after.owner and after.owner != before.owner:
                    start = free_since if free_since is not None else before.expires_at
                    if before.owner or free_since is not None:
                        longest = max(longest, after.expires_at - ttl - start)
                    free_since = None
        return longest

    def _by_partition(self) -> dict[int, list[LeaseWrite]]:
        grouped: dict[int, list[LeaseWrite]] = {}
        for write in sorted(self.writes, key=lambda w: w.revision):
            grouped.setdefault(write.partition, []).append(write)
        return grouped
