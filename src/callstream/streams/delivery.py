"""The delivery worker: one asyncio task per sink with work, each with its own queue,
concurrency and retry schedule, so one sink's trouble never slows another.

A sink's task claims due items from the sink's durable queue (``store/delivery.py``), sends
them (one event per request, or up to ``batch_size`` per request for ``batch_events`` sinks,
after waiting up to ``linger`` for a batch to fill), at most ``concurrency`` requests at a
time, and then acks, schedules a retry, or dead-letters them. Retries back off exponentially
with jitter (``retry_base`` doubling per attempt, capped at ``retry_cap``) until
``retry_window`` after the item was queued (Twilio: 4 hours), then dead-letter.

Sink Test events are sent straight from the control store's sink outbox (one per request)
and removed from it once delivered or given up on (then dead-lettered like any item); their
retry schedule is kept in memory, so a restart retries them at once. Sending them from the
outbox keeps the outbox what the API and its tests read: the sink's pending test events.

Sinks are sent through the driver of their type (``sinks/drivers.py``); the queue of a sink
type with no driver fills and waits.
Tunables come from ``CALLSTREAM_DELIVERY_*`` environment variables (``DeliveryConfig``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import random
import time
from collections.abc import Mapping, Sequence
from typing import Any

import msgspec
import structlog

from callstream.cloudevents import to_cloudevent
from callstream.config import parse_duration
from callstream.model.insights import TestEvent
from callstream.sinks.drivers import Drivers, Outcome
from callstream.sinks.webhook import WebhookClient
from callstream.store.control import ControlStore, OutboxItem, Sink
from callstream.store.delivery import Attempt, Delivery, DeliveryStore, NewDelivery
from callstream.store.interfaces import AccountStore

log = structlog.get_logger(__name__)

_encoder = msgspec.json.Encoder()
_test_decoder = msgspec.msgpack.Decoder(TestEvent)


@dataclasses.dataclass(frozen=True)
class DeliveryConfig:
    concurrency: int = 4
    """Requests in flight per sink."""
    batch_size: int = 100
    """Events per request for ``batch_events`` sinks."""
    linger: float = 0.05
    """How long a batch may wait to fill."""
    timeout: float = 5.0
    retry_base: float = 1.0
    retry_cap: float = 600.0
    retry_window: float = 4 * 3600.0
    lease: float = 60.0
    """How long a claimed item stays hidden from other claims."""
    attempts_kept: int = 200
    """Attempt-log rows kept per sink."""
    idle_exit: float = 10.0
    """A sink's task ends after this long with nothing to do (it restarts when work comes)."""

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DeliveryConfig:
        """Overrides from ``CALLSTREAM_DELIVERY_<FIELD>`` (durations accept ``30s``, ``4h``)."""
        values: dict[str, Any] = {}
        for f in dataclasses.fields(cls):
            raw = env.get(f"CALLSTREAM_DELIVERY_{f.name.upper()}")
            if raw:
                values[f.name] = int(raw) if f.type == "int" else parse_duration(raw)
        return cls(**values)


def backoff(attempts: int, config: DeliveryConfig, rng: random.Random) -> float:
    """Delay before the next try after ``attempts`` failed ones: exponential, capped,
    with 'equal jitter' (between half and all of the exponential delay)."""
    delay = min(config.retry_cap, config.retry_base * 2.0 ** min(attempts, 40))
    return delay / 2 + rng.uniform(0, delay / 2)


@dataclasses.dataclass
class _OutboxState:
    item: OutboxItem
    body: bytes
    event_id: str
    attempts: int = 0
    due_at: float = 0.0
    in_flight: bool = False


class SinkWorker:
    """Delivers one sink's queue and outbox."""

    def __init__(self, service: DeliveryService, account_sid: str, sink_sid: str) -> None:
        self._s = service
        self.account_sid = account_sid
        self.sink_sid = sink_sid
        self._sink: Sink | None = None
        self._token = ""
        self._loaded_at = -1.0
        self._in_flight: set[asyncio.Task[None]] = set()
        self._outbox: dict[int, _OutboxState] = {}

    async def _load(self) -> Sink | None:
        now = time.monotonic()
        if now - self._loaded_at >= 1.0:
            self._sink = await self._s.control.get_sink(self.account_sid, self.sink_sid)
            account = await self._s.accounts.get_account(self.account_sid)
            self._token = account.auth_token if account is not None else ""
            self._loaded_at = now
        return self._sink

    async def run(self) -> None:
        idle_since = time.monotonic()
        config = self._s.config
        while not self._s.stopping.is_set():
            sink = await self._load()
            if sink is None or sink.sink_type not in self._s.drivers:
                break
            mark = self._s.queue.enqueued_mark(self.sink_sid)
            outbox_mark = max(self._outbox, default=0)
            started = await self._start_requests(sink)
            await self._start_outbox(sink)
            if self._in_flight or started:
                idle_since = time.monotonic()
            next_due = await self._s.queue.next_due(self.sink_sid)
            outbox_due = [s.due_at for s in self._outbox.values() if not s.in_flight]
            dues = [d for d in (next_due, min(outbox_due, default=None)) if d is not None]
            if dues or self._outbox:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > config.idle_exit:
                break
            timeout = 1.0
            if dues:
                timeout = max(0.005, min(timeout, min(dues) - time.time()))
            await self._wait(mark, outbox_mark, timeout)
        if self._in_flight:
            await asyncio.gather(*self._in_flight, return_exceptions=True)

    async def _wait(self, mark: int, outbox_mark: int, timeout: float) -> None:
        waiters: set[asyncio.Future[Any]] = {
            asyncio.ensure_future(self._s.queue.wait_enqueued(self.sink_sid, mark, timeout)),
            asyncio.ensure_future(self._s.control.wait_outbox(outbox_mark, timeout)),
            asyncio.ensure_future(self._s.stopping.wait()),
        }
        try:
            await asyncio.wait(
                waiters | set(self._in_flight), timeout=timeout, return_when="FIRST_COMPLETED"
            )
        finally:
            for waiter in waiters:
                waiter.cancel()

    async def _start_requests(self, sink: Sink) -> bool:
        config = self._s.config
        free = config.concurrency - len(self._in_flight)
        if free <= 0:
            return False
        per = config.batch_size if sink.configuration.get("batch_events") is True else 1
        want = free * per
        items = await self._s.queue.claim(self.sink_sid, time.time(), want, config.lease)
        if not items:
            return False
        if per > 1 and len(items) % per and config.linger > 0:
            await asyncio.sleep(config.linger)  # let a batch fill, at most ``linger``
            items += await self._s.queue.claim(
                self.sink_sid, time.time(), want - len(items), config.lease
            )
        for start in range(0, len(items), per):
            self._spawn(self._send_queued(sink, items[start : start + per]))
        return True

    def _spawn(self, job: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(job)
        self._in_flight.add(task)
        task.add_done_callback(self._in_flight.discard)

    async def _post(self, sink: Sink, bodies: Sequence[bytes]) -> Outcome:
        try:
            outcome = await self._s.drivers[sink.sink_type].send(sink, self._token, bodies)
        except Exception as exc:  # a driver bug must not kill the sink's task
            log.exception("sink request failed", sink_sid=self.sink_sid)
            outcome = Outcome(ok=False, retry=True, error=f"internal error (91304): {exc!r}")
        attempt = Attempt(
            sink_sid=self.sink_sid,
            time=time.time(),
            events=len(bodies),
            ok=outcome.ok,
            status=outcome.status,
            error=outcome.error,
        )
        await self._s.queue.record_attempt(attempt, self._s.config.attempts_kept)
        if not outcome.ok:
            log.info(
                "delivery failed",
                sink_sid=self.sink_sid,
                events=len(bodies),
                status=outcome.status,
                error=outcome.error,
                retry=outcome.retry,
            )
        return outcome

    async def _send_queued(self, sink: Sink, items: list[Delivery]) -> None:
        queue = self._s.queue
        outcome = await self._post(sink, [i.body for i in items])
        now = time.time()
        ids = [i.id for i in items]
        if outcome.ok:
            await queue.ack(ids)
            return
        if outcome.delivered:
            await queue.ack([ids[i] for i in outcome.delivered])
            done = set(outcome.delivered)
            items = [item for i, item in enumerate(items) if i not in done]
            ids = [i.id for i in items]
        error = outcome.error or "failed"
        if not outcome.retry:
            await queue.dead_letter(ids, error, now)
            return
        config = self._s.config
        delay = backoff(max(i.attempts for i in items), config, self._s.rng)
        expired = [i.id for i in items if now + delay - i.enqueued_at > config.retry_window]
        await queue.dead_letter(expired, f"gave up after the retry window: {error}", now)
        await queue.retry([i for i in ids if i not in expired], now + delay, error)

    async def _start_outbox(self, sink: Sink) -> None:
        items = await self._s.control.read_outbox(0, 100, sink_sid=self.sink_sid)
        present = {item.id for item in items}
        for gone in set(self._outbox) - present:
            if not self._outbox[gone].in_flight:
                del self._outbox[gone]
        for item in items:
            if item.id not in self._outbox:
                try:
                    event = _test_decoder.decode(item.body)
                    cloudevent = to_cloudevent(
                        event, item.schema_version, schema_base_url=self._s.schema_base_url
                    )
                except Exception:
                    log.exception("cannot render outbox item", item_id=item.id)
                    await self._s.control.remove_outbox([item.id])
                    continue
                self._outbox[item.id] = _OutboxState(
                    item, _encoder.encode(cloudevent), cloudevent.id
                )
        now = time.time()
        for state in self._outbox.values():
            free = self._s.config.concurrency - len(self._in_flight)
            if free > 0 and not state.in_flight and state.due_at <= now:
                state.in_flight = True
                self._spawn(self._send_outbox(sink, state))

    async def _send_outbox(self, sink: Sink, state: _OutboxState) -> None:
        try:
            outcome = await self._post(sink, [state.body])
            now = time.time()
            config = self._s.config
            delay = backoff(state.attempts, config, self._s.rng)
            give_up = not outcome.retry or now + delay - state.item.created_at > config.retry_window
            if not outcome.ok and give_up:
                item = NewDelivery(
                    account_sid=state.item.account_sid,
                    sink_sid=self.sink_sid,
                    event_id=state.event_id,
                    body=state.body,
                )
                await self._s.queue.bury(item, outcome.error or "failed", state.attempts + 1, now)
            if outcome.ok or give_up:
                await self._s.control.remove_outbox([state.item.id])
                self._outbox.pop(state.item.id, None)
            else:
                state.attempts += 1
                state.due_at = now + delay
        finally:
            state.in_flight = False


class DeliveryService:
    """Starts a ``SinkWorker`` for every sink with queued or outbox items, and restarts it
    when it has ended and work comes again."""

    def __init__(
        self,
        queue: DeliveryStore,
        control: ControlStore,
        accounts: AccountStore,
        *,
        allow_private: bool,
        schema_base_url: str,
        config: DeliveryConfig | None = None,
        drivers: Drivers | None = None,
    ) -> None:
        self.queue = queue
        self.control = control
        self.accounts = accounts
        self.schema_base_url = schema_base_url
        self.config = config or DeliveryConfig.from_env(os.environ)
        self.drivers: Drivers = drivers or {
            "webhook": WebhookClient(allow_private=allow_private, timeout=self.config.timeout)
        }
        self.rng = random.Random()
        self.stopping = asyncio.Event()
        self.workers: dict[str, asyncio.Task[None]] = {}
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="delivery")

    async def stop(self) -> None:
        self.stopping.set()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        await asyncio.gather(*self.workers.values(), return_exceptions=True)
        for driver in self.drivers.values():
            await driver.close()

    async def _run(self) -> None:
        await self.queue.release_claims()
        while not self.stopping.is_set():
            mark = self.queue.enqueued_mark(None)
            try:
                await self._reconcile()
            except Exception:
                log.exception("delivery reconcile failed")
            waiters = {
                asyncio.ensure_future(self.queue.wait_enqueued(None, mark, 1.0)),
                asyncio.ensure_future(self.stopping.wait()),
            }
            try:
                await asyncio.wait(waiters, timeout=1.0, return_when="FIRST_COMPLETED")
            finally:
                for waiter in waiters:
                    waiter.cancel()

    async def _reconcile(self) -> None:
        wanted = {(s.account_sid, s.sink_sid) for s in await self.queue.queued_sinks()}
        after = 0
        while True:
            page = await self.control.read_outbox(after, 500)
            wanted |= {(item.account_sid, item.sink_sid) for item in page}
            if len(page) < 500:
                break
            after = page[-1].id
        for account_sid, sink_sid in wanted:
            task = self.workers.get(sink_sid)
            if task is None or task.done():
                worker = SinkWorker(self, account_sid, sink_sid)
                self.workers[sink_sid] = asyncio.create_task(
                    self._guard(worker), name=f"sink-{sink_sid}"
                )

    async def _guard(self, worker: SinkWorker) -> None:
        try:
            await worker.run()
        except Exception:
            log.exception("sink worker failed", sink_sid=worker.sink_sid)
