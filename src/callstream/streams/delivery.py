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

Trouble (docs/decisions/0010-delivery-failed-sinks.md): a request that fails in a way that
may pass (429, 5xx, timeout, no connection) throttles the sink (``streams/throttle.py``:
100 events/s, x0.99 per further failure, ramping back after 5 quiet minutes), noted as 91302
in the attempt log. After ``failure_threshold`` failed requests in a row the sink is marked
``failed`` in the control store; it keeps its subscription, its queue keeps filling
(nothing is lost) and it keeps being retried at its throttled rate; the first request that
delivers anything, or an operator's Enable, makes it ``active`` again. Counters and health
live in the delivery store, so they survive restarts (``DeliveryStore.sink_stats``).

Tunables are settings (``config.Settings.delivery_*``, ``CALLSTREAM_DELIVERY_*``).
"""

from __future__ import annotations

import asyncio
import dataclasses
import math
import os
import random
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import msgspec
import structlog

from callstream.cloudevents import to_cloudevent
from callstream.config import Settings, SettingsError, load_settings
from callstream.model.insights import TestEvent
from callstream.sinks.drivers import Drivers, Outcome
from callstream.sinks.webhook import WebhookClient
from callstream.store.control import ControlError, ControlStore, OutboxItem, Sink
from callstream.store.delivery import (
    Attempt,
    AttemptResult,
    Delivery,
    DeliveryStore,
    NewDelivery,
    Settlement,
)
from callstream.store.interfaces import AccountStore
from callstream.streams.throttle import ThrottlePolicy, TokenBucket

log = structlog.get_logger(__name__)

_encoder = msgspec.json.Encoder()
_test_decoder = msgspec.msgpack.Decoder(TestEvent)


LatencyObserver = Callable[[str, Sequence[float]], None]
"""Told the sink type and, per delivered event, seconds from enqueue to acknowledgement."""

THROTTLED = "91302"


_DEFAULTS = Settings()
"""The settings' defaults are the delivery defaults: one place says what they are."""


@dataclasses.dataclass(frozen=True)
class DeliveryConfig:
    concurrency: int = _DEFAULTS.delivery_concurrency
    """Requests in flight per sink."""
    batch_size: int = _DEFAULTS.delivery_batch_size
    """Events per request for ``batch_events`` sinks."""
    batch_bytes: int = _DEFAULTS.delivery_batch_bytes
    """Bytes of events per request for ``batch_events`` sinks (one larger event goes alone)."""
    linger: float = _DEFAULTS.delivery_linger
    """How long a batch may wait to fill."""
    timeout: float = _DEFAULTS.delivery_timeout
    retry_base: float = _DEFAULTS.delivery_retry_base
    retry_cap: float = _DEFAULTS.delivery_retry_cap
    retry_window: float = _DEFAULTS.delivery_retry_window
    lease: float = _DEFAULTS.delivery_lease
    """How long a claimed item stays hidden from other claims."""
    attempts_kept: int = _DEFAULTS.delivery_attempts_kept
    """Attempt-log rows kept per sink."""
    idle_exit: float = _DEFAULTS.delivery_idle_exit
    """A sink's task ends after this long with nothing to do (it restarts when work comes)."""
    failure_threshold: int = _DEFAULTS.sink_failure_threshold
    """Consecutive failed requests before the sink is marked ``failed``; 0 never marks it."""
    throttle: ThrottlePolicy = dataclasses.field(default_factory=ThrottlePolicy)

    @classmethod
    def from_settings(cls, settings: Settings) -> DeliveryConfig:
        """The ``delivery_*`` settings (and ``sink_failure_threshold``), checked."""
        for name in ("concurrency", "batch_size", "batch_bytes", "attempts_kept"):
            value = getattr(settings, f"delivery_{name}")
            if value < 1:
                raise SettingsError(f"DELIVERY_{name.upper()} must be at least 1, not {value}")
        if settings.sink_failure_threshold < 0:
            raise SettingsError("SINK_FAILURE_THRESHOLD must be 0 (never) or more")
        if settings.delivery_throttle_rate <= 0:
            raise SettingsError("DELIVERY_THROTTLE_RATE must be more than 0 events/s")
        if settings.delivery_timeout <= 0:
            raise SettingsError("DELIVERY_TIMEOUT must be more than 0 seconds")
        return cls(
            concurrency=settings.delivery_concurrency,
            batch_size=settings.delivery_batch_size,
            batch_bytes=settings.delivery_batch_bytes,
            linger=settings.delivery_linger,
            timeout=settings.delivery_timeout,
            retry_base=settings.delivery_retry_base,
            retry_cap=settings.delivery_retry_cap,
            retry_window=settings.delivery_retry_window,
            lease=settings.delivery_lease,
            attempts_kept=settings.delivery_attempts_kept,
            idle_exit=settings.delivery_idle_exit,
            failure_threshold=settings.sink_failure_threshold,
            throttle=ThrottlePolicy(
                rate=settings.delivery_throttle_rate,
                floor=min(1.0, settings.delivery_throttle_rate),
                recovery=settings.delivery_throttle_recovery,
            ),
        )

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DeliveryConfig:
        """From ``CALLSTREAM_*`` variables alone (durations accept ``30s``, ``4h``)."""
        return cls.from_settings(load_settings(env=env))


def batches(items: Sequence[Delivery], count: int, size: int) -> list[list[Delivery]]:
    """``items`` in order, cut into requests of at most ``count`` events and ``size`` bytes of
    JSON array (an event larger than ``size`` by itself still goes, alone)."""
    out: list[list[Delivery]] = []
    current: list[Delivery] = []
    used = 2  # the brackets
    for item in items:
        grows = len(item.body) + (1 if current else 0)
        if current and (len(current) >= count or used + grows > size):
            out.append(current)
            current, used, grows = [], 2, len(item.body)
        current.append(item)
        used += grows
    if current:
        out.append(current)
    return out


KINESIS_RECORDS = 500
"""PutRecords takes at most 500 records (and 5 MiB) per call."""
KINESIS_BYTES = 5 * 2**20


@dataclasses.dataclass(frozen=True)
class RequestShape:
    """How many events one request to a sink carries, and how many requests may be in flight."""

    events: int
    bytes: int
    concurrency: int


def request_shape(sink: Sink, config: DeliveryConfig) -> RequestShape:
    """Webhooks batch when ``batch_events`` is set (never GET webhooks: one event per URL,
    sinks/webhook.py). Kinesis sends whole PutRecords batches one at a time, so that the events
    of a call keep their order on its shard. Segment batches like a batching webhook (the
    driver splits a request to Segment's own limits)."""
    if sink.sink_type == "kinesis":
        return RequestShape(KINESIS_RECORDS, KINESIS_BYTES, 1)
    batching = sink.sink_type == "segment" or (
        sink.configuration.get("batch_events") is True
        and str(sink.configuration.get("method", "POST")).upper() != "GET"
    )
    per = config.batch_size if batching else 1
    return RequestShape(per, config.batch_bytes, config.concurrency)


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
        # The throttle as stored: the cap set at the last failure, and its time.
        self._capped_at: float | None = None
        self._failed_at: float | None = None
        self._bucket = TokenBucket()
        self._token_wait = 0.0
        self._claimed: list[tuple[float, Delivery]] = []
        """Items claimed ahead of need, with when they were claimed."""

    async def _load(self) -> Sink | None:
        now = time.monotonic()
        if now - self._loaded_at >= 1.0:
            first = self._loaded_at < 0
            self._sink = await self._s.control.get_sink(self.account_sid, self.sink_sid)
            account = await self._s.accounts.get_account(self.account_sid)
            self._token = account.auth_token if account is not None else ""
            self._loaded_at = now
            if first:  # a restart keeps the sink throttled where it was
                stats = (await self._s.queue.sink_stats([self.sink_sid]))[self.sink_sid]
                self._capped_at, self._failed_at = stats.throttled_rate, stats.last_error_at
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
            # Items claimed ahead are due now (the queue sees them as claimed).
            next_due = time.time() if self._claimed else await self._s.queue.next_due(self.sink_sid)
            outbox_due = [s.due_at for s in self._outbox.values() if not s.in_flight]
            dues = [d for d in (next_due, min(outbox_due, default=None)) if d is not None]
            if dues or self._outbox:
                idle_since = time.monotonic()
            elif time.monotonic() - idle_since > config.idle_exit:
                break
            timeout = 1.0
            if dues:
                # Due work waits for the throttle's next token, not for the clock alone.
                soonest = max(min(dues) - time.time(), self._token_wait)
                timeout = max(0.005, min(timeout, soonest))
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

    def _allowance(self, per: int) -> int:
        """Events the throttle lets this sink send now (a large number when unthrottled).
        A throttled sink waits until a whole request's worth (``per``, at most a second's)
        has accrued, so a batch sink sends full batches at its capped rate rather than
        one-event requests."""
        rate = self._s.config.throttle.current(self._capped_at, self._failed_at, time.time())
        available = self._bucket.available(rate)
        if rate is None or math.isinf(available):
            self._token_wait = 0.0
            return 1 << 30
        target = min(float(per), max(1.0, rate))
        self._token_wait = self._bucket.wait_for(target)
        return int(available) if available >= target else 0

    async def _start_requests(self, sink: Sink) -> bool:
        config = self._s.config
        shape = request_shape(sink, config)
        free = shape.concurrency - len(self._in_flight)
        if free <= 0:
            return False
        per = shape.events
        want = min(free * per, self._allowance(per))
        if want <= 0:
            return False
        items = await self._take(want, shape.concurrency * per * 2)
        if not items:
            return False
        if per > 1 and len(items) % per and len(items) < want and config.linger > 0:
            await asyncio.sleep(config.linger)  # let a batch fill, at most ``linger``
            items += await self._take(want - len(items), 0)
        self._bucket.spend(len(items))
        for batch in batches(items, per, shape.bytes):
            self._spawn(self._send_queued(sink, batch))
        return True

    async def _take(self, want: int, ahead: int) -> list[Delivery]:
        """Up to ``want`` due items, oldest first. A claim is a write, so up to ``ahead``
        items are claimed at once and kept for the next requests (for at most half their
        lease; older ones are left to be claimed again once it ends)."""
        config = self._s.config
        now = time.time()
        fresh = now - config.lease / 2
        self._claimed = [(at, item) for at, item in self._claimed if at > fresh]
        if len(self._claimed) < want:
            more = max(want, ahead) - len(self._claimed)
            claimed = await self._s.queue.claim(self.sink_sid, now, more, config.lease)
            self._claimed += [(now, item) for item in claimed]
        taken, self._claimed = self._claimed[:want], self._claimed[want:]
        return [item for _, item in taken]

    def _spawn(self, job: Any) -> None:
        task: asyncio.Task[None] = asyncio.create_task(job)
        self._in_flight.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._in_flight.discard(task)
        if not task.cancelled() and task.exception() is not None:
            # Its items stay claimed until their lease ends, then are sent again.
            log.error("delivery task failed", sink_sid=self.sink_sid, exc_info=task.exception())

    async def _send(
        self, sink: Sink, bodies: Sequence[bytes]
    ) -> tuple[Outcome, Attempt, AttemptResult]:
        """One request through the sink's driver; the throttle follows its outcome. The
        caller stores the attempt (with what becomes of the items, in one transaction)."""
        started = time.perf_counter()
        try:
            outcome = await self._s.drivers[sink.sink_type].send(sink, self._token, bodies)
        except Exception as exc:  # a driver bug must not kill the sink's task
            log.exception("sink request failed", sink_sid=self.sink_sid)
            outcome = Outcome(ok=False, retry=True, error=f"internal error (91304): {exc!r}")
        duration_ms = (time.perf_counter() - started) * 1000
        now = time.time()
        error = outcome.error
        throttled = not outcome.ok and outcome.retry
        if throttled:
            policy = self._s.config.throttle
            self._capped_at = policy.after_failure(self._capped_at, self._failed_at, now)
            self._failed_at = now
            # Twilio's warning for a throttled sink, kept where operators look: the attempt log.
            error = f"{error or 'failed'}; delivery throttled to {self._capped_at:.4g} events/s "
            error += f"({THROTTLED})"
            log.warning(
                "delivery throttled",
                sink_sid=self.sink_sid,
                code=int(THROTTLED),
                rate=round(self._capped_at, 3),
            )
        attempt = Attempt(
            sink_sid=self.sink_sid,
            time=now,
            events=len(bodies),
            ok=outcome.ok,
            status=outcome.status,
            error=error,
            duration_ms=round(duration_ms, 3),
        )
        if not outcome.ok:
            log.info(
                "delivery failed",
                sink_sid=self.sink_sid,
                events=len(bodies),
                status=outcome.status,
                error=outcome.error,
                retry=outcome.retry,
            )
        delivered = len(bodies) if outcome.ok else len(outcome.delivered)
        return outcome, attempt, AttemptResult(delivered=delivered, throttled_rate=self._capped_at)

    async def _post(self, sink: Sink, bodies: Sequence[bytes]) -> Outcome:
        """A request whose items are not in the queue (the outbox's test events)."""
        outcome, attempt, result = await self._send(sink, bodies)
        failures = await self._s.queue.record_attempt(attempt, self._s.config.attempts_kept, result)
        await self._update_status(sink, failures, succeeded=result.delivered > 0)
        return outcome

    async def _update_status(self, sink: Sink, failures: int, *, succeeded: bool) -> None:
        """Mark the sink failed after the threshold of failures in a row; active again on
        the first success."""
        current = self._sink or sink
        threshold = self._s.config.failure_threshold
        target: str | None = None
        if succeeded and current.status == "failed":
            target = "active"
        elif not succeeded and current.status == "active" and 0 < threshold <= failures:
            target = "failed"
        if target is None:
            return
        try:
            self._sink = await self._s.control.set_sink_status(
                self.account_sid,
                self.sink_sid,
                "active" if target == "active" else "failed",
                time.time(),
            )
        except ControlError:  # deleted meanwhile
            return
        log.warning(
            "sink status changed",
            sink_sid=self.sink_sid,
            status=target,
            consecutive_failures=failures,
        )

    async def _send_queued(self, sink: Sink, items: list[Delivery]) -> None:
        outcome, attempt, result = await self._send(sink, [i.body for i in items])
        now = time.time()
        delivered = list(items) if outcome.ok else []
        if not outcome.ok and outcome.delivered:
            done = set(outcome.delivered)
            delivered = [items[i] for i in sorted(done)]
            items = [item for i, item in enumerate(items) if i not in done]
        settlement = Settlement(now=now, ack=tuple(i.id for i in delivered))
        if not outcome.ok:
            error = outcome.error or "failed"
            config = self._s.config
            if not outcome.retry:
                dead = tuple(i.id for i in items)
                settlement = msgspec.structs.replace(settlement, dead=dead, reason=error)
            else:
                delay = backoff(max(i.attempts for i in items), config, self._s.rng)
                expired = {i.id for i in items if now + delay - i.enqueued_at > config.retry_window}
                settlement = msgspec.structs.replace(
                    settlement,
                    dead=tuple(sorted(expired)),
                    reason=f"gave up after the retry window: {error}",
                    retry=tuple(i.id for i in items if i.id not in expired),
                    due_at=now + delay,
                    error=error,
                )
        failures = await self._s.queue.settle(
            attempt, self._s.config.attempts_kept, result, settlement
        )
        await self._update_status(sink, failures, succeeded=result.delivered > 0)
        self._observe(sink, delivered, time.time())

    def _observe(self, sink: Sink, items: Sequence[Delivery], now: float) -> None:
        if self._s.latency is not None and items:
            self._s.latency(sink.sink_type, [now - i.enqueued_at for i in items])

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
                await self._s.queue.note_retried(self.sink_sid, 1)
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
        latency: LatencyObserver | None = None,
    ) -> None:
        self.queue = queue
        self.control = control
        self.accounts = accounts
        self.schema_base_url = schema_base_url
        self.config = config or DeliveryConfig.from_env(os.environ)
        self.drivers: Drivers = drivers or {
            "webhook": WebhookClient(allow_private=allow_private, timeout=self.config.timeout)
        }
        self.latency = latency
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
