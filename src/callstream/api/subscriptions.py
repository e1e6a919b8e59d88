"""Subscriptions and their Subscribed Events (event-streams-api.md §1.2).

A subscription sends the event types it lists, each in one schema version, to one active
sink; a sink carries at most one subscription (docs/decisions/0005-subscriptions-per-sink.md).
A schema version left out means the type's latest.
"""

from __future__ import annotations

import time
from typing import Any

import msgspec
from starlette.datastructures import QueryParams
from starlette.requests import Request
from starlette.responses import Response

from callstream.accounts import new_sid
from callstream.api.auth import require_account
from callstream.api.errors import ApiError
from callstream.api.pagination import read_page
from callstream.api.wire import (
    INVALID_PARAMETER,
    invalid,
    json_response,
    list_response,
    memory_page,
    missing,
    no_content,
    not_found,
    optional_int,
    read_form,
    required,
    store_window,
    trim,
    twilio_time,
)
from callstream.model.catalogue import UnknownEventType, catalogue
from callstream.store.control import (
    AlreadySubscribed,
    ControlStore,
    NotFound,
    SinkInUse,
    SinkNotActive,
    SubscribedType,
    Subscription,
)
from callstream.store.interfaces import AccountStore

# Twilio's Event Streams error codes (event-streams-api.md §1.6).
SINK_NOT_FOUND = 91001
SUBSCRIPTION_NOT_CREATED = 91100
SUBSCRIPTION_INVALID = 91101
SUBSCRIPTION_NOT_FOUND = 91102
TYPE_NOT_FOUND = 91104
RESOURCE_NOT_FOUND = 20404


class SubscriptionLinks(msgspec.Struct, frozen=True):
    subscribed_events: str


class SubscriptionResource(msgspec.Struct, frozen=True, kw_only=True):
    """``events.v1.subscription``."""

    account_sid: str
    date_created: str
    date_updated: str
    description: str
    links: SubscriptionLinks
    sid: str
    sink_sid: str
    url: str


class SubscribedEventResource(msgspec.Struct, frozen=True, kw_only=True):
    """``events.v1.subscription.subscribed_event``."""

    account_sid: str
    type: str
    schema_version: int
    subscription_sid: str
    url: str


def resolve_version(
    type_: str, version: int | None, *, type_parameter: str, version_parameter: str
) -> int:
    """The schema version a subscription gets for ``type_``: the one asked for, or the latest.

    The parameter names are the request's (``Types[2]`` or ``Type``/``SchemaVersion``), so an
    error names what the client sent.
    """
    try:
        event_type = catalogue().event_type(type_)
    except UnknownEventType:
        raise ApiError(
            400,
            TYPE_NOT_FOUND,
            f"Event type {type_!r} not found (GET /v1/Types lists them)",
            {"parameter": type_parameter, "type": type_},
        ) from None
    if event_type.status == "discontinued":
        raise ApiError(
            400,
            TYPE_NOT_FOUND,
            f"Type {type_} is discontinued",
            {"parameter": type_parameter, "type": type_},
        )
    schema = catalogue().schema(event_type.schema_id)
    if version is None:
        return schema.latest_version
    if version not in schema.versions:
        available = ", ".join(str(v) for v in schema.versions)
        raise ApiError(
            400,
            INVALID_PARAMETER,
            f"Schema version {version} does not exist for {type_}: "
            f"schema {schema.id} has versions {available}",
            {
                "parameter": version_parameter,
                "type": type_,
                "schema_version": version,
                "available_versions": list(schema.versions),
            },
        )
    return version


def _type_entry(raw: str, index: int) -> tuple[str, int | None]:
    """One ``Types`` value: a JSON object ``{"type": ..., "schema_version": ...}``."""
    name = f"Types[{index}]"
    try:
        entry: Any = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise invalid(name, "is not a JSON object") from None
    if not isinstance(entry, dict):
        raise invalid(name, 'must be a JSON object like {"type": "...", "schema_version": 1}')
    type_ = entry.get("type")
    if not isinstance(type_, str) or not type_:
        raise invalid(name, "has no type")
    version = entry.get("schema_version")
    if version is not None and (isinstance(version, bool) or not isinstance(version, int)):
        raise invalid(name, "schema_version must be an integer")
    return type_, version


def _types(params: QueryParams) -> list[tuple[str, int]]:
    """The subscribed types of a new subscription, each resolved to a schema version."""
    values = params.getlist("Types")
    if not values:
        raise missing("Types")
    resolved: list[tuple[str, int]] = []
    seen: set[str] = set()
    for index, raw in enumerate(values):
        type_, version = _type_entry(raw, index)
        if type_ in seen:
            raise ApiError(
                400,
                SUBSCRIPTION_INVALID,
                f"Event types are duplicated: {type_}",
                {"parameter": "Types", "type": type_},
            )
        seen.add(type_)
        name = f"Types[{index}]"
        resolved.append(
            (type_, resolve_version(type_, version, type_parameter=name, version_parameter=name))
        )
    return resolved


def _description(params: QueryParams, *, needed: bool) -> str | None:
    value = params.get("Description")
    if value is None:
        if needed:
            raise missing("Description")
        return None
    if not value.strip():
        raise ApiError(
            400, SUBSCRIPTION_INVALID, "Description is empty", {"parameter": "Description"}
        )
    return value


class SubscriptionRoutes:
    def __init__(self, accounts: AccountStore, control: ControlStore, base_url: str) -> None:
        self._accounts = accounts
        self._control = control
        self._base_url = base_url

    def resource(self, subscription: Subscription) -> SubscriptionResource:
        url = f"{self._base_url}/v1/Subscriptions/{subscription.sid}"
        return SubscriptionResource(
            account_sid=subscription.account_sid,
            date_created=twilio_time(subscription.date_created),
            date_updated=twilio_time(subscription.date_updated),
            description=subscription.description,
            links=SubscriptionLinks(subscribed_events=f"{url}/SubscribedEvents"),
            sid=subscription.sid,
            sink_sid=subscription.sink_sid,
            url=url,
        )

    def event_resource(self, subscribed: SubscribedType) -> SubscribedEventResource:
        return SubscribedEventResource(
            account_sid=subscribed.account_sid,
            type=subscribed.type,
            schema_version=subscribed.schema_version,
            subscription_sid=subscribed.subscription_sid,
            url=(
                f"{self._base_url}/v1/Subscriptions/{subscribed.subscription_sid}"
                f"/SubscribedEvents/{subscribed.type}"
            ),
        )

    async def _subscription(self, account_sid: str, sid: str) -> Subscription:
        subscription = await self._control.get_subscription(account_sid, sid)
        if subscription is None:
            raise _subscription_not_found(sid)
        return subscription

    # -- /v1/Subscriptions ----------------------------------------------------------------------

    async def create(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        params = await read_form(request)
        description = _description(params, needed=True)
        assert description is not None
        sink_sid = required(params, "SinkSid")
        types = _types(params)
        now = time.time()
        subscription = Subscription(
            sid=new_sid("DF"),
            account_sid=account.sid,
            sink_sid=sink_sid,
            description=description,
            date_created=now,
            date_updated=now,
        )
        subscribed = [
            SubscribedType(
                account_sid=account.sid,
                subscription_sid=subscription.sid,
                type=type_,
                schema_version=version,
            )
            for type_, version in types
        ]
        try:
            await self._control.create_subscription(subscription, subscribed)
        except NotFound:
            # A parameter names the sink, so 400; another account's sink is "not found" too.
            raise ApiError(
                400, SINK_NOT_FOUND, f"Sink {sink_sid} was not found", {"parameter": "SinkSid"}
            ) from None
        except SinkNotActive as exc:
            raise ApiError(
                400,
                SUBSCRIPTION_NOT_CREATED,
                f"Sink {sink_sid} is not in an active state (it is {exc.status})",
                {"parameter": "SinkSid", "status": exc.status},
            ) from None
        except SinkInUse as exc:
            raise ApiError(
                400,
                SUBSCRIPTION_NOT_CREATED,
                f"Sink with SID {sink_sid} is in use by subscription {exc.subscription_sid}; "
                "add event types to that subscription instead",
                {"parameter": "SinkSid", "subscription_sid": exc.subscription_sid},
            ) from None
        return json_response(self.resource(subscription), 201)

    async def read(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        page = read_page(request)
        sink_sid = request.query_params.get("SinkSid") or None
        rows = await self._control.list_subscriptions(
            account.sid, store_window(page), sink_sid=sink_sid
        )
        subscriptions, has_next = trim(rows, page)
        return list_response(
            request,
            self._base_url,
            "subscriptions",
            page,
            [self.resource(s) for s in subscriptions],
            first_key=list(subscriptions[0].position) if subscriptions else None,
            last_key=list(subscriptions[-1].position) if subscriptions else None,
            has_next=has_next,
            filters={"SinkSid": sink_sid},
        )

    async def fetch(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        return json_response(self.resource(await self._subscription(account.sid, _sid(request))))

    async def update(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        sid = _sid(request)
        params = await read_form(request)
        description = _description(params, needed=False)
        current = await self._subscription(account.sid, sid)
        # twilio-python before 9.7 could send SinkSid here; moving a subscription is no longer
        # part of the API, so only the sink it already has is accepted.
        sink_sid = params.get("SinkSid")
        if sink_sid not in (None, "", current.sink_sid):
            raise invalid("SinkSid", "a subscription's sink cannot be changed")
        if description is None:
            return json_response(self.resource(current))
        try:
            updated = await self._control.update_subscription(
                account.sid, sid, description, time.time()
            )
        except NotFound:
            raise _subscription_not_found(sid) from None
        return json_response(self.resource(updated))

    async def delete(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        sid = _sid(request)
        try:
            await self._control.delete_subscription(account.sid, sid)
        except NotFound:
            raise _subscription_not_found(sid) from None
        return no_content()

    # -- /v1/Subscriptions/{sid}/SubscribedEvents ----------------------------------------------

    async def _types_of(self, account_sid: str, sid: str) -> list[SubscribedType]:
        try:
            return list(await self._control.list_subscribed_types(account_sid, sid))
        except NotFound:
            raise _subscription_not_found(sid) from None

    async def read_events(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        page = read_page(request)
        subscribed = await self._types_of(account.sid, _sid(request))
        rows, has_next = memory_page(subscribed, lambda s: s.type, page, str)
        return list_response(
            request,
            self._base_url,
            "types",
            page,
            [self.event_resource(s) for s in rows],
            first_key=[rows[0].type] if rows else None,
            last_key=[rows[-1].type] if rows else None,
            has_next=has_next,
        )

    async def create_event(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        sid = _sid(request)
        params = await read_form(request)
        type_ = required(params, "Type")
        version = resolve_version(
            type_,
            optional_int(params, "SchemaVersion"),
            type_parameter="Type",
            version_parameter="SchemaVersion",
        )
        subscribed = SubscribedType(
            account_sid=account.sid, subscription_sid=sid, type=type_, schema_version=version
        )
        try:
            await self._control.add_subscribed_type(subscribed, time.time())
        except NotFound:
            raise _subscription_not_found(sid) from None
        except AlreadySubscribed:
            raise ApiError(
                400,
                SUBSCRIPTION_INVALID,
                f"Event types are duplicated: subscription {sid} already has {type_}; "
                f"update /SubscribedEvents/{type_} to change its schema version",
                {"parameter": "Type", "type": type_},
            ) from None
        return json_response(self.event_resource(subscribed), 201)

    async def fetch_event(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        sid, type_ = _sid(request), _type(request)
        for subscribed in await self._types_of(account.sid, sid):
            if subscribed.type == type_:
                return json_response(self.event_resource(subscribed))
        raise _type_not_subscribed(sid, type_)

    async def update_event(self, request: Request) -> Response:
        """Set the schema version; left out, it is the latest (as when the type was added)."""
        account = await require_account(request, self._accounts)
        sid, type_ = _sid(request), _type(request)
        params = await read_form(request)
        requested = optional_int(params, "SchemaVersion")
        current = {s.type for s in await self._types_of(account.sid, sid)}
        if type_ not in current:
            raise _type_not_subscribed(sid, type_)
        subscribed = SubscribedType(
            account_sid=account.sid,
            subscription_sid=sid,
            type=type_,
            schema_version=resolve_version(
                type_, requested, type_parameter="Type", version_parameter="SchemaVersion"
            ),
        )
        try:
            await self._control.update_subscribed_type(subscribed, time.time())
        except NotFound:
            raise _type_not_subscribed(sid, type_) from None
        return json_response(self.event_resource(subscribed))

    async def delete_event(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        sid, type_ = _sid(request), _type(request)
        await self._types_of(account.sid, sid)  # 91102 when the subscription is not there
        try:
            await self._control.remove_subscribed_type(account.sid, sid, type_, time.time())
        except NotFound:
            raise _type_not_subscribed(sid, type_) from None
        return no_content()


def _sid(request: Request) -> str:
    sid: str = request.path_params["sid"]
    return sid


def _type(request: Request) -> str:
    type_: str = request.path_params["type"]
    return type_


def _subscription_not_found(sid: str) -> ApiError:
    return not_found(SUBSCRIPTION_NOT_FOUND, f"Subscription {sid} was not found")


def _type_not_subscribed(sid: str, type_: str) -> ApiError:
    return not_found(RESOURCE_NOT_FOUND, f"Subscription {sid} has no event type {type_}")
