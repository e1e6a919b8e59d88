"""What the Voice Insights read API asks of storage (insights.twilio.com, ``/v1/Voice/...``).

The API sees only ``InsightsStore``; the embedded backend implements it on SQLite
(``store/sqlite/insights.py``), kept current by the engine's own commits. Events cross it as
the canonical ``OutputEvent`` the engine stored, so the store never renders anything and the
API decodes with the same ``decode_output`` as the live feed.

Lists are read a page at a time by keyset: a page starts strictly after (or before) the sort
key of a row the client has seen, so paging returns each row once while new rows arrive.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Generic, Literal, Protocol, TypeVar

from callstream.store.interfaces import OutputEvent

T = TypeVar("T")

EventKey = tuple[float, int]
"""(event time, events-log offset): call events and metrics in time order, ties by arrival."""

SummaryKey = tuple[float, str]
"""(start or end time of the call, call SID): the Summaries list, newest first."""

SummarySort = Literal["start_time", "end_time"]
SummaryState = Literal["partial", "complete"]


@dataclass(frozen=True, slots=True)
class Position(Generic[T]):
    """Where a page starts: strictly after, or strictly before, a sort key (in list order)."""

    direction: Literal["after", "before"]
    key: T


@dataclass(frozen=True, slots=True)
class Window(Generic[T]):
    """One page to read: at most ``limit`` rows from ``position`` (the list's start if None)."""

    limit: int
    position: Position[T] | None = None


@dataclass(frozen=True, slots=True)
class Rows(Generic[T]):
    """A page of rows in list order; ``more`` says rows exist beyond it in the reading
    direction (after the last row when reading forwards, before the first when backwards)."""

    rows: Sequence[T]
    more: bool


@dataclass(frozen=True, slots=True)
class EventRow:
    key: EventKey
    event: OutputEvent


@dataclass(frozen=True, slots=True)
class SummaryRow:
    key: SummaryKey
    event: OutputEvent


@dataclass(frozen=True, slots=True)
class SummaryFilter:
    """The Summaries list filters; ``None`` (or an empty set) does not filter.

    A call matches when every given filter matches. Sets match any of their members;
    ``tags`` must all be present. ``started_from`` (inclusive) and ``started_before``
    (exclusive) are Unix seconds bounding the call's start time: half-open, so consecutive
    windows list every call exactly once.
    """

    caller: str | None = None
    callee: str | None = None
    from_carrier: str | None = None
    to_carrier: str | None = None
    from_country_code: str | None = None
    to_country_code: str | None = None
    call_types: frozenset[str] = frozenset()
    call_states: frozenset[str] = frozenset()
    directions: frozenset[str] = frozenset()
    answered_by: frozenset[str] = frozenset()
    processing_states: frozenset[SummaryState] = frozenset()
    has_tag: bool | None = None
    tags: frozenset[str] = frozenset()
    verified_caller: bool | None = None
    abnormal_session: bool | None = None
    started_from: float | None = None
    started_before: float | None = None


@dataclass(frozen=True, slots=True)
class ActiveCall:
    """A call that has reported telemetry but has no summary yet: it has not ended (or its
    end has not been processed). Times are those of its first and latest insight events."""

    call_sid: str
    first_event_time: float
    last_event_time: float


@dataclass(frozen=True, slots=True)
class ActiveCalls:
    """How many calls are active, and the most recently active of them."""

    total: int
    calls: Sequence[ActiveCall]


class InsightsStore(Protocol):
    """Read access to one account's calls; every method is scoped to ``account_sid``."""

    async def has_call(self, account_sid: str, call_sid: str) -> bool:
        """Whether the account has any insight event of the call."""
        ...

    async def latest_summary(self, account_sid: str, call_sid: str) -> OutputEvent | None:
        """The call's summary with the highest processing version, if one was produced."""
        ...

    async def call_events(
        self, account_sid: str, call_sid: str, edge: str | None, window: Window[EventKey]
    ) -> Rows[EventRow]:
        """The call's events (``call-event.*``), oldest first, of one edge if given."""
        ...

    async def call_metrics(
        self,
        account_sid: str,
        call_sid: str,
        edge: str | None,
        direction: str | None,
        window: Window[EventKey],
    ) -> Rows[EventRow]:
        """The call's metric records (``call-metrics.*``), oldest first, filtered by edge
        and stream direction if given."""
        ...

    async def summaries(
        self,
        account_sid: str,
        where: SummaryFilter,
        sort: SummarySort,
        window: Window[SummaryKey],
    ) -> Rows[SummaryRow]:
        """The latest summary of each matching call, newest first by ``sort``."""
        ...

    async def active_calls(self, account_sid: str, limit: int) -> ActiveCalls:
        """The account's calls with insight events and no summary yet, the most recently
        active first (at most ``limit`` of them), and how many there are in all."""
        ...


class InsightsIndex(Protocol):
    """Keeps an ``InsightsStore`` current where the events log cannot be queried itself.

    The distributed backend's indexer consumer of the events log (JetStream) calls ``index``
    with each batch it reads. The embedded backend does not need it: its store reads the
    events table, and the engine's commit indexes summaries in the same transaction.
    """

    async def index(self, events: Sequence[OutputEvent]) -> None:
        """Store what the read API needs of ``events``, idempotently: an event already
        indexed (same account, call, type and identity, as the events log identifies it) is
        stored once, and a call's summary is replaced only by one with a higher processing
        version, whatever order summaries arrive in."""
        ...
