"""Sinks, Sink Test and Sink Validate (event-streams-api.md §1.1).

Status lifecycle (the reference's inference, which callstream adopts): webhook and segment
sinks are ``active`` when created; a kinesis sink is ``initialized`` until a Sink Test
(``validating``) and a Sink Validate with that test's ``test_id`` (``active``). Testing an
active sink keeps it active, so a test never interrupts deliveries. ``failed`` is set by
the delivery worker, not by this API.
"""

from __future__ import annotations

import ipaddress
import re
import time
import uuid
from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import msgspec
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
    missing,
    no_content,
    not_found,
    optional_bool,
    read_form,
    required,
    store_window,
    trim,
    twilio_time,
)
from callstream.model.catalogue import catalogue
from callstream.model.insights import TestEvent
from callstream.sinks.webhook import STANDARD_WEBHOOKS_KEY, standard_webhooks_secret_error
from callstream.store.control import (
    SINK_STATUSES,
    SINK_TYPES,
    ControlStore,
    NewOutboxItem,
    NoSinkTest,
    NotFound,
    Sink,
    SinkInUse,
    SinkLimitReached,
    SinkStatus,
    SinkType,
    WrongTestId,
)
from callstream.store.interfaces import AccountStore

# Twilio's Event Streams error codes (event-streams-api.md §1.6).
SINK_NOT_CREATED = 91000
SINK_NOT_FOUND = 91001
SINK_LIMIT = 91003
MAX_SINKS = 100

TEST_EVENT_TYPE = "com.twilio.eventstreams.test-event"

# Twilio's own examples use 9-digit account ids, and partitions (aws-cn, aws-us-gov) and local
# emulators vary, so only the shape that names a Kinesis stream and an IAM role is checked.
_STREAM_ARN = re.compile(r"arn:aws[a-z-]*:kinesis:[a-z0-9-]+:[0-9]+:stream/[A-Za-z0-9_.-]{1,128}")
_ROLE_ARN = re.compile(r"arn:aws[a-z-]*:iam::[0-9]+:role/[A-Za-z0-9_+=,.@/-]{1,512}")
_EXTERNAL_ID = re.compile(r"[A-Za-z0-9_+=,.@:/-]{2,1224}")

_msgpack = msgspec.msgpack.Encoder()


class SinkLinks(msgspec.Struct, frozen=True):
    sink_test: str
    sink_validate: str


class SinkResource(msgspec.Struct, frozen=True, kw_only=True):
    """``events.v1.sink`` as Twilio's spec orders it."""

    date_created: str
    date_updated: str
    description: str
    sid: str
    sink_configuration: dict[str, Any]
    sink_type: str
    status: str
    url: str
    links: SinkLinks


class SinkResult(msgspec.Struct, frozen=True):
    """The body of Sink Test (``submitted``) and Sink Validate (``valid``)."""

    result: str


# -- configuration ------------------------------------------------------------------------------


def _config_error(field: str, reason: str) -> ApiError:
    return ApiError(
        400,
        SINK_NOT_CREATED,
        f"Sink Configuration {field} {reason}",
        {"parameter": "SinkConfiguration", "field": field},
    )


def _text(config: dict[str, Any], field: str) -> str:
    value = config.get(field)
    if value is None or value == "":
        raise _config_error(field, "is empty")
    if not isinstance(value, str):
        raise _config_error(field, "must be a string")
    return value


def _private_host(host: str) -> bool:
    """Whether ``host`` names this machine or a private network by itself (no DNS lookup:
    the delivery worker checks resolved addresses when it connects)."""
    name = host.lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        return False
    return not address.is_global


def _webhook(config: dict[str, Any], allow_private: bool) -> dict[str, Any]:
    destination = _text(config, "destination")
    try:
        parts = urlsplit(destination)
        parts.port  # noqa: B018 - raises ValueError for a port that is not a number
    except ValueError:
        raise _config_error("destination", "is not a valid URL") from None
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise _config_error("destination", "must be an absolute http or https URL")
    if not allow_private and _private_host(parts.hostname):
        raise _config_error(
            "destination",
            "is a loopback or private address; set CALLSTREAM_ALLOW_PRIVATE_DESTINATIONS=true "
            "to allow it (development and tests)",
        )
    method = _text(config, "method").upper()
    if method not in ("POST", "GET"):
        raise _config_error("method", "must be POST or GET")
    if "batch_events" not in config or config["batch_events"] is None:
        raise _config_error("batch_events", "is empty")
    if not isinstance(config["batch_events"], bool):
        raise _config_error("batch_events", "must be true or false")
    # Optional Standard Webhooks signing (sinks/webhook.py); null or absent: none.
    if config.get(STANDARD_WEBHOOKS_KEY) is not None:
        reason = standard_webhooks_secret_error(config[STANDARD_WEBHOOKS_KEY])
        if reason is not None:
            raise _config_error(STANDARD_WEBHOOKS_KEY, reason)
    return {**config, "method": method}


def _kinesis(config: dict[str, Any]) -> dict[str, Any]:
    if not _STREAM_ARN.fullmatch(_text(config, "arn")):
        raise _config_error("arn", "must be a Kinesis stream ARN (arn:aws:kinesis:...:stream/...)")
    if not _ROLE_ARN.fullmatch(_text(config, "role_arn")):
        raise _config_error("role_arn", "must be an IAM role ARN (arn:aws:iam::...:role/...)")
    # What STS AssumeRole accepts as ExternalId; anything else could never be delivered.
    if not _EXTERNAL_ID.fullmatch(_text(config, "external_id")):
        raise _config_error(
            "external_id", "must be 2 to 1224 characters of letters, digits and +=,.@:/-_"
        )
    return config


def _segment(config: dict[str, Any]) -> dict[str, Any]:
    _text(config, "write_key")
    return config


def sink_configuration(sink_type: SinkType, raw: str, allow_private: bool) -> dict[str, Any]:
    """The configuration of a new sink, checked for its type (91000 naming the field).

    Members callstream does not know are kept, as Twilio may add some.
    """
    try:
        config = msgspec.json.decode(raw)
    except msgspec.DecodeError:
        raise ApiError(
            400,
            SINK_NOT_CREATED,
            "SinkConfiguration is not valid JSON",
            {"parameter": "SinkConfiguration"},
        ) from None
    if not isinstance(config, dict):
        raise ApiError(
            400,
            SINK_NOT_CREATED,
            "SinkConfiguration must be a JSON object",
            {"parameter": "SinkConfiguration"},
        )
    if sink_type == "webhook":
        return _webhook(config, allow_private)
    if sink_type == "kinesis":
        return _kinesis(config)
    return _segment(config)


def _sink_type(raw: str) -> SinkType:
    for sink_type in SINK_TYPES:
        if raw == sink_type:
            return sink_type
    raise invalid(
        "SinkType",
        f"{raw!r} is not one of {', '.join(SINK_TYPES)} (callstream has no email sinks)",
        SINK_NOT_CREATED,
    )


def _status(raw: str) -> SinkStatus:
    for status in SINK_STATUSES:
        if raw == status:
            return status
    raise invalid("Status", f"{raw!r} is not one of {', '.join(SINK_STATUSES)}")


# -- routes -----------------------------------------------------------------------------------


class SinkRoutes:
    def __init__(
        self, accounts: AccountStore, control: ControlStore, base_url: str, allow_private: bool
    ) -> None:
        self._accounts = accounts
        self._control = control
        self._base_url = base_url
        self._allow_private = allow_private

    def resource(self, sink: Sink) -> SinkResource:
        url = f"{self._base_url}/v1/Sinks/{sink.sid}"
        return SinkResource(
            date_created=twilio_time(sink.date_created),
            date_updated=twilio_time(sink.date_updated),
            description=sink.description,
            sid=sink.sid,
            sink_configuration=sink.configuration,
            sink_type=sink.sink_type,
            status=sink.status,
            url=url,
            links=SinkLinks(sink_test=f"{url}/Test", sink_validate=f"{url}/Validate"),
        )

    async def _sink(self, account_sid: str, sid: str) -> Sink:
        sink = await self._control.get_sink(account_sid, sid)
        if sink is None:
            raise _sink_not_found(sid)
        return sink

    async def create(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        params = await read_form(request)
        description = required(params, "Description", SINK_NOT_CREATED)
        if not description.strip():
            raise invalid("Description", "is empty", SINK_NOT_CREATED)
        sink_type = _sink_type(required(params, "SinkType", SINK_NOT_CREATED))
        raw_config = required(params, "SinkConfiguration", SINK_NOT_CREATED)
        config = sink_configuration(sink_type, raw_config, self._allow_private)
        now = time.time()
        sink = Sink(
            sid=new_sid("DG"),
            account_sid=account.sid,
            description=description,
            sink_type=sink_type,
            configuration=config,
            # Only a Kinesis sink has a test round trip to prove it can be written to.
            status="initialized" if sink_type == "kinesis" else "active",
            date_created=now,
            date_updated=now,
        )
        try:
            await self._control.create_sink(sink, max_sinks=MAX_SINKS)
        except SinkLimitReached:
            raise ApiError(
                400,
                SINK_LIMIT,
                f"Account reached the maximum of {MAX_SINKS} sinks; delete one to create another",
            ) from None
        return json_response(self.resource(sink), 201)

    async def read(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        page = read_page(request)
        raw_status = request.query_params.get("Status") or None
        status = None if raw_status is None else _status(raw_status)
        in_use = optional_bool(request.query_params, "InUse")
        rows = await self._control.list_sinks(
            account.sid, store_window(page), status=status, in_use=in_use
        )
        sinks, has_next = trim(rows, page)
        return list_response(
            request,
            self._base_url,
            "sinks",
            page,
            [self.resource(sink) for sink in sinks],
            first_key=list(sinks[0].position) if sinks else None,
            last_key=list(sinks[-1].position) if sinks else None,
            has_next=has_next,
            filters={
                "InUse": None if in_use is None else str(in_use).lower(),
                "Status": status,
            },
        )

    async def fetch(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        return json_response(self.resource(await self._sink(account.sid, _sid(request))))

    async def update(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        sid = _sid(request)
        params = await read_form(request)
        description = required(params, "Description")
        if not description.strip():
            raise invalid("Description", "is empty")
        try:
            sink = await self._control.update_sink(account.sid, sid, description, time.time())
        except NotFound:
            raise _sink_not_found(sid) from None
        return json_response(self.resource(sink))

    async def delete(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        sid = _sid(request)
        try:
            await self._control.delete_sink(account.sid, sid)
        except NotFound:
            raise _sink_not_found(sid) from None
        except SinkInUse as exc:
            # Refused rather than cascaded: deleting a sink must not silently delete the
            # subscription that delivers to it (docs/decisions/0005-subscriptions-per-sink.md).
            raise ApiError(
                400,
                INVALID_PARAMETER,
                f"Sink {sid} is in use by subscription {exc.subscription_sid}; "
                "delete the subscription first",
                {"subscription_sid": exc.subscription_sid},
            ) from None
        return no_content()

    async def test(self, request: Request) -> Response:
        """Queue a test event for the sink; the delivery worker sends it like any event."""
        account = await require_account(request, self._accounts)
        sid = _sid(request)
        await read_form(request)  # no parameters, but the body limit still applies
        sink = await self._sink(account.sid, sid)
        test_id = str(uuid.uuid4())
        event = TestEvent(
            account_sid=account.sid, sink_sid=sink.sid, test_id=test_id, time=datetime.now(UTC)
        )
        item = NewOutboxItem(
            type=TEST_EVENT_TYPE,
            schema_version=catalogue().schema_of(TEST_EVENT_TYPE).latest_version,
            body=_msgpack.encode(event),
        )
        try:
            await self._control.record_sink_test(account.sid, sid, test_id, item, time.time())
        except NotFound:  # deleted between the read and the write
            raise _sink_not_found(sid) from None
        return json_response(SinkResult("submitted"), 201)

    async def validate(self, request: Request) -> Response:
        account = await require_account(request, self._accounts)
        sid = _sid(request)
        params = await read_form(request)
        test_id = params.get("TestId")
        if test_id is None or not test_id.strip():
            raise missing("TestId")
        try:
            await self._control.validate_sink(
                account.sid, sid, test_id.strip().lower(), time.time()
            )
        except NotFound:
            raise _sink_not_found(sid) from None
        except NoSinkTest:
            raise ApiError(
                400,
                INVALID_PARAMETER,
                f"Sink {sid} has no test to validate: POST /v1/Sinks/{sid}/Test first, then "
                "send the test_id of the test event the sink received",
                {"parameter": "TestId"},
            ) from None
        except WrongTestId:
            raise ApiError(
                400,
                INVALID_PARAMETER,
                f"TestId {test_id.strip()!r} is not the test_id of the latest test of sink {sid}; "
                "send the test_id from the data of the most recent test event",
                {"parameter": "TestId"},
            ) from None
        return json_response(SinkResult("valid"), 201)


def _sid(request: Request) -> str:
    sid: str = request.path_params["sid"]
    return sid


def _sink_not_found(sid: str) -> ApiError:
    return not_found(SINK_NOT_FOUND, f"Sink {sid} was not found")
