"""The per-sink delivery queue: what the router enqueues and the delivery worker sends.

Each sink has its own queue of CloudEvents (rows of one ``sink_sid``), its own dead letters
and a bounded log of attempts. An item is identified within its sink by its CloudEvent id,
so enqueueing an event again (the router replaying after a crash) is a no-op while the
first copy is still queued. The router's enqueue and its cursor over the events log are
committed together, so a crash between them replays rather than loses.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

import msgspec

ROUTER = "router"
"""The router's consumer name for its cursor over the events log."""


class NewDelivery(msgspec.Struct, frozen=True, kw_only=True):
    account_sid: str
    sink_sid: str
    event_id: str
    """The CloudEvent id: unique within a sink's queue."""
    body: bytes
    """The CloudEvent, compact JSON, as it goes into a request's body array."""


class Delivery(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    """Increasing in enqueue order; among items due at the same time, claims return them in
    this order."""
    account_sid: str
    sink_sid: str
    event_id: str
    body: bytes
    enqueued_at: float
    attempts: int
    """Failed attempts so far."""


class DeadLetter(msgspec.Struct, frozen=True, kw_only=True):
    account_sid: str
    sink_sid: str
    event_id: str
    body: bytes
    enqueued_at: float
    dead_at: float
    attempts: int
    reason: str
    id: int = 0
    """Increasing in the order items died; the position pages are read after."""


class Attempt(msgspec.Struct, frozen=True, kw_only=True):
    """One request to a sink (carrying ``events`` events) and how it ended."""

    sink_sid: str
    time: float
    events: int
    ok: bool
    status: int | None = None
    """The HTTP status, None when no response came back."""
    error: str | None = None
    duration_ms: float = 0.0
    """From sending the request to the end of its response (or its failure)."""


class AttemptResult(msgspec.Struct, frozen=True, kw_only=True):
    """What ``record_attempt`` adds to the sink's statistics besides the log row."""

    delivered: int
    """Events of the request the sink acknowledged (all when ok, some for a partial success)."""
    throttled_rate: float | None
    """The sink's send-rate cap after this attempt (events/s), None when not throttled."""


class Settlement(msgspec.Struct, frozen=True, kw_only=True):
    """What becomes of a request's queue items, written with its attempt (``settle``)."""

    now: float
    ack: tuple[int, ...] = ()
    """Delivered: removed."""
    retry: tuple[int, ...] = ()
    """To be tried again at ``due_at`` (``error`` noted on them)."""
    due_at: float = 0.0
    error: str = ""
    dead: tuple[int, ...] = ()
    """Given up on: moved to the dead letters with ``reason``."""
    reason: str = ""


class SinkStats(msgspec.Struct, frozen=True, kw_only=True):
    """A sink's delivery counters and health, as stored (survives restarts)."""

    sink_sid: str
    delivered: int = 0
    failed: int = 0
    retried: int = 0
    dead_lettered: int = 0
    pending: int = 0
    """Events queued for the sink (claimed or not)."""
    oldest_enqueued_at: float | None = None
    """When the oldest queued event was queued; None when nothing is."""
    consecutive_failures: int = 0
    last_error: str | None = None
    last_error_at: float | None = None
    last_success_at: float | None = None
    throttled_rate: float | None = None
    """The rate cap set at ``last_error_at``; the cap now is ``streams.throttle``'s to derive."""


class QueuedSink(msgspec.Struct, frozen=True, kw_only=True):
    account_sid: str
    sink_sid: str


class DeliveryStore(Protocol):
    async def cursor(self, consumer: str) -> int:
        """The consumer's position in the events log (0 before the first commit)."""
        ...

    async def enqueue(
        self, items: Sequence[NewDelivery], now: float, *, consumer: str, cursor: int
    ) -> None:
        """Queue ``items`` (dropping those already queued for their sink, and those of sinks
        that no longer exist) and move ``consumer``'s cursor to ``cursor``, in one
        transaction."""
        ...

    async def claim(self, sink_sid: str, now: float, limit: int, lease: float) -> list[Delivery]:
        """Up to ``limit`` items of the sink that are due, earliest due first (a retried
        item is due at its retry time; items due at once come in enqueue order), hidden from further
        claims for ``lease`` seconds (the worker settles them before)."""
        ...

    async def settle(
        self, attempt: Attempt, keep: int, result: AttemptResult, settlement: Settlement
    ) -> int:
        """``record_attempt`` of one request, and the fate of its items (removed as delivered,
        moved to the dead letters, or released for a retry with the attempt counted), in one
        transaction (one commit per request); return the sink's consecutive failed attempts
        after it."""
        ...

    async def bury(self, item: NewDelivery, reason: str, attempts: int, now: float) -> None:
        """Put an item that was never queued (a Sink Test event) among the dead letters."""
        ...

    async def record_attempt(
        self, attempt: Attempt, keep: int, result: AttemptResult | None = None
    ) -> int:
        """Log an attempt, keeping the sink's latest ``keep``, and count it in the sink's
        statistics (``result``: delivered events and the throttle after it); return the
        sink's consecutive failed attempts after it."""
        ...

    async def attempts(self, sink_sid: str, limit: int) -> list[Attempt]:
        """The sink's latest attempts, newest first."""
        ...

    async def dead_letters(
        self,
        sink_sid: str,
        limit: int,
        *,
        after_id: int | None = None,
        before_id: int | None = None,
    ) -> list[DeadLetter]:
        """The sink's dead letters, oldest first: the first ``limit`` after ``after_id``, or
        the last ``limit`` before ``before_id`` (a previous page)."""
        ...

    async def replay_dead_letters(
        self,
        sink_sid: str,
        now: float,
        *,
        event_id: str | None = None,
        dead_from: float | None = None,
        dead_until: float | None = None,
    ) -> int:
        """Move the sink's dead letters (one event, those that died in
        [``dead_from``, ``dead_until``], or all) back into its queue, due now, with their
        CloudEvent ids and a fresh retry window; return how many left the dead letters."""
        ...

    async def note_retried(self, sink_sid: str, events: int) -> None:
        """Count retries scheduled outside the queue (Sink Test events)."""
        ...

    async def sink_stats(self, sink_sids: Sequence[str]) -> dict[str, SinkStats]:
        """Counters, queue depth and health of these sinks (every sid gets an entry)."""
        ...

    async def all_sink_stats(self) -> list[SinkStats]:
        """Every sink with statistics or queued events (operator metrics, all accounts)."""
        ...

    async def reset_failures(self, sink_sid: str, now: float) -> None:
        """An operator re-enabled the sink: forget its consecutive failures and make its
        queued events due now (they were waiting out a backoff)."""
        ...

    async def pending(self, sink_sid: str) -> int:
        """How many items the sink has queued (claimed or not)."""
        ...

    async def queued_sinks(self) -> list[QueuedSink]:
        """Sinks with at least one queued item."""
        ...

    async def next_due(self, sink_sid: str) -> float | None:
        """When the sink's next item becomes claimable; None when its queue is empty."""
        ...

    async def release_claims(self) -> None:
        """Make every claimed item claimable again (at start-up: no request is in flight)."""
        ...

    def enqueued_mark(self, sink_sid: str | None) -> int:
        """A mark that grows when items are enqueued for the sink (None: for any sink)."""
        ...

    async def wait_enqueued(self, sink_sid: str | None, after: int, timeout: float) -> None:
        """Return once the mark has passed ``after``, or after ``timeout`` seconds."""
        ...
