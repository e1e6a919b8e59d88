"""The Event Streams control plane: sinks, subscriptions, their event types, and the sink outbox.

The REST API writes these; the router reads ``routing_table`` to learn where an account's
events go, and the delivery worker reads the ``sink outbox``, where events that do not come
from the events log (today: the Sink Test event) wait for it. Every method is scoped to an
account: a resource of another account is indistinguishable from one that does not exist.

Checks that must be atomic with the change (the sink limit, one subscription per sink, a sink
still being active) are the store's, raised as the errors below; validating what a request
says is the API's.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal, Protocol

import msgspec

SinkType = Literal["webhook", "kinesis", "segment"]
SinkStatus = Literal["initialized", "validating", "active", "failed"]
SINK_TYPES: tuple[SinkType, ...] = ("webhook", "kinesis", "segment")
SINK_STATUSES: tuple[SinkStatus, ...] = ("initialized", "validating", "active", "failed")

Position = tuple[float, str]
"""Where a row sits in a listing: (date_created, sid). SIDs break ties of equal times."""


class Sink(msgspec.Struct, frozen=True, kw_only=True):
    sid: str
    account_sid: str
    description: str
    sink_type: SinkType
    configuration: dict[str, Any]
    status: SinkStatus
    date_created: float
    date_updated: float
    test_id: str | None = None
    """The ``test_id`` of the latest Sink Test; what Sink Validate compares with."""

    @property
    def position(self) -> Position:
        return (self.date_created, self.sid)


class Subscription(msgspec.Struct, frozen=True, kw_only=True):
    sid: str
    account_sid: str
    sink_sid: str
    description: str
    date_created: float
    date_updated: float

    @property
    def position(self) -> Position:
        return (self.date_created, self.sid)


class SubscribedType(msgspec.Struct, frozen=True, kw_only=True):
    """One event type of a subscription, and the schema version its sink receives it in."""

    account_sid: str
    subscription_sid: str
    type: str
    schema_version: int


class NewOutboxItem(msgspec.Struct, frozen=True, kw_only=True):
    """An event to put on a sink's outbound queue.

    ``body`` is the canonical event (a ``callstream.model.insights`` struct), msgpack-encoded
    as the events log encodes its events; the delivery worker renders it in
    ``schema_version`` and wraps it in a CloudEvent, as it does events from the log.
    """

    type: str
    schema_version: int
    body: bytes


class OutboxItem(msgspec.Struct, frozen=True, kw_only=True):
    id: int
    """Increasing in the order items were queued; the position to read after."""
    account_sid: str
    sink_sid: str
    type: str
    schema_version: int
    body: bytes
    created_at: float


class SinkRoute(msgspec.Struct, frozen=True, kw_only=True):
    """Where events of an account go: one active sink, its subscription, type -> version."""

    sink: Sink
    subscription_sid: str
    types: dict[str, int]


class RoutingTable(msgspec.Struct, frozen=True, kw_only=True):
    account_sid: str
    version: int
    """The account's ``control_version`` this table was read at (in the same snapshot)."""
    routes: tuple[SinkRoute, ...]


class Window(msgspec.Struct, frozen=True, kw_only=True):
    """One page of a listing ordered by ``Position``: at most ``limit`` rows, in ascending
    order, strictly after ``after`` or (for a previous page) immediately before ``before``."""

    limit: int
    after: Position | None = None
    before: Position | None = None


class ControlError(Exception):
    """A change the store refused; the API turns each kind into a Twilio error."""


class NotFound(ControlError):
    """The sink, subscription or subscribed type is not in this account."""


class SinkLimitReached(ControlError):
    def __init__(self, limit: int) -> None:
        super().__init__(f"the account already has {limit} sinks")
        self.limit = limit


class SinkNotActive(ControlError):
    def __init__(self, status: SinkStatus) -> None:
        super().__init__(f"the sink is {status}, not active")
        self.status = status


class SinkInUse(ControlError):
    def __init__(self, subscription_sid: str) -> None:
        super().__init__(f"the sink is in use by subscription {subscription_sid}")
        self.subscription_sid = subscription_sid


class AlreadySubscribed(ControlError):
    """The subscription already has this event type."""


class NoSinkTest(ControlError):
    """Sink Validate before any Sink Test of that sink."""


class WrongTestId(ControlError):
    """Sink Validate with a ``TestId`` that is not the sink's latest test."""


class ControlStore(Protocol):
    # -- sinks --------------------------------------------------------------------------------

    async def create_sink(self, sink: Sink, *, max_sinks: int) -> None:
        """Store a new sink; SinkLimitReached when the account already has ``max_sinks``."""
        ...

    async def get_sink(self, account_sid: str, sid: str) -> Sink | None: ...

    async def list_sinks(
        self,
        account_sid: str,
        window: Window,
        *,
        status: SinkStatus | None = None,
        in_use: bool | None = None,
    ) -> Sequence[Sink]:
        """``in_use``: True for sinks a subscription delivers to, False for the others."""
        ...

    async def update_sink(self, account_sid: str, sid: str, description: str, now: float) -> Sink:
        """Change the description (the only mutable field); NotFound."""
        ...

    async def delete_sink(self, account_sid: str, sid: str) -> None:
        """Delete the sink and its queued outbox items; NotFound, SinkInUse."""
        ...

    async def record_sink_test(
        self, account_sid: str, sid: str, test_id: str, item: NewOutboxItem, now: float
    ) -> Sink:
        """Remember ``test_id`` as the sink's latest test and queue ``item`` for it, together.

        A sink that is not active yet (initialized, failed) becomes ``validating``; an active
        sink stays active, so testing it never interrupts its deliveries. NotFound.
        """
        ...

    async def validate_sink(self, account_sid: str, sid: str, test_id: str, now: float) -> Sink:
        """Activate the sink if ``test_id`` is its latest test (again: idempotent).
        NotFound, NoSinkTest, WrongTestId."""
        ...

    async def set_sink_status(
        self, account_sid: str, sid: str, status: SinkStatus, now: float
    ) -> Sink:
        """For the delivery worker (e.g. ``failed``); NotFound."""
        ...

    # -- subscriptions -----------------------------------------------------------------------

    async def create_subscription(
        self, subscription: Subscription, types: Sequence[SubscribedType]
    ) -> None:
        """Store the subscription and its types together. NotFound (no such sink in the
        account), SinkNotActive, SinkInUse (a sink carries one subscription: decision 0005)."""
        ...

    async def get_subscription(self, account_sid: str, sid: str) -> Subscription | None: ...

    async def list_subscriptions(
        self, account_sid: str, window: Window, *, sink_sid: str | None = None
    ) -> Sequence[Subscription]: ...

    async def update_subscription(
        self, account_sid: str, sid: str, description: str, now: float
    ) -> Subscription:
        """NotFound."""
        ...

    async def delete_subscription(self, account_sid: str, sid: str) -> None:
        """Delete it with its types; the sink stays (Twilio's behaviour). NotFound."""
        ...

    # -- a subscription's event types ---------------------------------------------------------

    async def list_subscribed_types(
        self, account_sid: str, subscription_sid: str
    ) -> Sequence[SubscribedType]:
        """Ordered by type. NotFound when the subscription is not in the account."""
        ...

    async def add_subscribed_type(self, subscribed: SubscribedType, now: float) -> None:
        """NotFound (subscription), AlreadySubscribed."""
        ...

    async def update_subscribed_type(self, subscribed: SubscribedType, now: float) -> None:
        """Set the schema version of a type the subscription has; NotFound."""
        ...

    async def remove_subscribed_type(
        self, account_sid: str, subscription_sid: str, type_: str, now: float
    ) -> None:
        """NotFound (subscription or type)."""
        ...

    # -- for the router and the delivery worker ------------------------------------------------

    async def control_version(self, account_sid: str) -> int:
        """A counter that grows with every change that can alter the account's routing table
        (sinks created, deleted, tested or changing status; subscriptions and their types
        created, changed or deleted; not description edits), 0 before the first. One
        primary-key read: cheap enough to poll every second."""
        ...

    async def routing_table(self, account_sid: str) -> RoutingTable:
        """The account's subscriptions whose sink is active and that have at least one type."""
        ...

    async def read_outbox(
        self, after: int, limit: int, *, sink_sid: str | None = None
    ) -> Sequence[OutboxItem]:
        """Queued items with id > ``after``, oldest first (of one sink, or of all)."""
        ...

    async def remove_outbox(self, ids: Sequence[int]) -> None:
        """Acknowledge items once delivered (or given up on); unknown ids are ignored."""
        ...

    async def wait_outbox(self, after: int, timeout: float) -> None:
        """Return once items past ``after`` may exist, or after ``timeout`` seconds."""
        ...
