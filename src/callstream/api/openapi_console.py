"""The OpenAPI 3.1 fragment of the web console's data endpoints (``console/routes.py``,
``console/stream.py``, docs/console.md).

Component names carry the ``console.`` prefix; the security scheme, error responses and the
CloudEvent schema are the shared ones of ``openapi_core``. Every status code a route can
answer is listed, so a schema-driven test finds an undocumented one.

The event stream is ``text/event-stream``. OpenAPI 3.1 has no word for the items of a stream
(3.2 adds ``itemSchema``), so its ``schema`` describes one event as OpenAPI 3.2 models it, an
object of the ``event``, ``data``, ``id`` and ``retry`` fields, with ``data`` a JSON string
whose ``contentSchema`` is ``console.stream_message``: the reading schemathesis applies to a
3.1 document, so the schema-driven test checks every message it receives.
"""

from __future__ import annotations

from typing import Any, Final

from callstream.api.openapi_core import (
    ACCOUNT_SID,
    CALL_SID,
    SECURITY,
    errors,
    json_response,
    query_param,
    schema_ref,
)
from callstream.console.routes import MAX_ACTIVE
from callstream.console.stream import KEEPALIVE, MAX_TIMEOUT
from callstream.model.catalogue import catalogue

Schema = dict[str, Any]

_TAG: Final = ["Console"]
_TIME: Final[Schema] = {"type": "string", "format": "date-time"}
_EVENT_TYPES: Final[Schema] = {"type": "string", "enum": [t.type for t in catalogue().types]}
_MAX_OFFSET: Final = 2**62 - 1


def _object(properties: dict[str, Schema], description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "required": list(properties),
        "additionalProperties": False,
        "properties": properties,
    }


_ACCOUNT: Final = _object(
    {
        "account_sid": {"type": "string", "pattern": ACCOUNT_SID},
        "friendly_name": {"type": "string"},
    },
    "The account the credentials belong to (an API key's credentials give its account).",
)

_ACTIVE_CALL: Final = _object(
    {
        "call_sid": {"type": "string", "pattern": CALL_SID},
        "first_event_time": _TIME,
        "last_event_time": _TIME,
    },
    "A call with insight events and no summary yet.",
)

_ACTIVE_CALLS: Final = _object(
    {
        "total": {
            "type": "integer",
            "minimum": 0,
            "description": "Every active call of the account, not only those listed.",
        },
        "calls": {
            "type": "array",
            "maxItems": MAX_ACTIVE,
            "items": schema_ref("console.active_call"),
            "description": "Most recently active first, at most PageSize.",
        },
    },
    "The account's calls in progress.",
)

_STREAM_MESSAGE: Final = _object(
    {
        "next_after": {
            "type": "integer",
            "minimum": 0,
            "description": "The events-log offset this message reaches (also its SSE id).",
        },
        "counts": {
            "type": "object",
            "additionalProperties": {"type": "integer", "minimum": 1},
            "propertyNames": _EVENT_TYPES,
            "description": "Events of the account in the batch by type, whatever the filters.",
        },
        "events": {
            "type": "array",
            "items": schema_ref("callstream.cloud_event"),
            "description": "The batch's events that match Type and CallSid; empty with "
            "Events=false.",
        },
    },
    "The JSON of an `events` message's data line.",
)

_SSE_EVENT: Final[Schema] = {
    "type": "object",
    "description": "One message of the stream (comments such as `: keepalive`, and the "
    "opening `retry`/`id` block, carry no data and are not messages).",
    "required": ["event", "id", "data"],
    "additionalProperties": False,
    "properties": {
        "event": {"type": "string", "const": "events"},
        "id": {
            "type": "string",
            "pattern": "^[0-9]+$",
            "description": "The events-log offset the message reaches.",
        },
        "data": {
            "type": "string",
            "contentMediaType": "application/json",
            "contentSchema": schema_ref("console.stream_message"),
        },
        "retry": {"type": "integer", "minimum": 0},
    },
}

_STREAM_DESCRIPTION: Final = f"""\
Not a Twilio API: the console's live feed. The response stays open and follows the
account's events log; it has no end of its own unless `Timeout` asks for one.

The body is Server-Sent Events (UTF-8, messages separated by a blank line):

* first, at once: `retry: 2000`, `id: <offset>` (where the stream starts) and the
  comment `: connected`;
* whenever the log grows: `event: events`, `id: <offset>` (the offset the message reaches;
  a reconnecting client sends it back as `Last-Event-ID` or `After`) and one `data:` line
  holding a `console.stream_message` object; a busy log is sent in batches, a few a second;
* after {KEEPALIVE:.0f} s without events: the comment `: keepalive`.

Browsers read it with `fetch()` (EventSource cannot send Basic credentials)."""

_STREAM_PARAMETERS: Final[list[Schema]] = [
    query_param(
        "After",
        "Events-log offset to start after (wins over Last-Event-ID); by default the log's "
        "current end, so only new events are sent.",
        {"type": "integer", "minimum": 0, "maximum": _MAX_OFFSET},
    ),
    {
        "name": "Last-Event-ID",
        "in": "header",
        "required": False,
        "description": "The SSE reconnection header: the same as After when After is absent.",
        "schema": {"type": "integer", "minimum": 0, "maximum": _MAX_OFFSET},
    },
    {
        **query_param(
            "Type",
            "Only these event types in `events` (repeat the parameter for several); "
            "`counts` still covers every type.",
            {"type": "array", "items": _EVENT_TYPES},
        ),
        "style": "form",
        "explode": True,
    },
    query_param("CallSid", "Only this call's events in `events`.", {"type": "string"}),
    query_param(
        "Events",
        "false sends counts only (no CloudEvents).",
        {"type": "boolean", "default": True},
    ),
    query_param(
        "Timeout",
        "End the response once this many seconds have passed (after the message being "
        "written). 0 sends what one read finds past After, then ends. Absent: no end.",
        {"type": "integer", "minimum": 0, "maximum": MAX_TIMEOUT},
    ),
]


def _operation(
    operation_id: str, summary: str, responses: dict[str, Schema], **extra: Any
) -> Schema:
    return {
        "operationId": operation_id,
        "summary": summary,
        "tags": _TAG,
        "security": SECURITY,
        "responses": responses,
        **extra,
    }


PATHS: Final[dict[str, Any]] = {
    "/callstream/v1/Account": {
        "get": _operation(
            "FetchAccount",
            "Who the credentials are (the console's login check)",
            {
                "200": json_response("The credentials' account.", schema_ref("console.account")),
                **errors(401),
            },
        )
    },
    "/callstream/v1/ActiveCalls": {
        "get": _operation(
            "ListActiveCalls",
            "Calls in progress: insight events and no summary yet",
            {
                "200": json_response("The active calls.", schema_ref("console.active_calls")),
                **errors(400, 401),
            },
            parameters=[
                query_param(
                    "PageSize",
                    "How many calls to list at most.",
                    {"type": "integer", "minimum": 1, "maximum": MAX_ACTIVE, "default": 50},
                )
            ],
        )
    },
    "/callstream/v1/Events/Stream": {
        "get": _operation(
            "StreamLiveEvents",
            "Follow the account's insight events as Server-Sent Events",
            {
                "200": {
                    "description": "The stream, open until the client leaves or Timeout.",
                    "headers": {
                        "Cache-Control": {
                            "description": "no-store",
                            "schema": {"type": "string", "const": "no-store"},
                        }
                    },
                    "content": {"text/event-stream": {"schema": _SSE_EVENT}},
                },
                **errors(400, 401),
            },
            description=_STREAM_DESCRIPTION,
            parameters=_STREAM_PARAMETERS,
        )
    },
}

FRAGMENT: Final[dict[str, Any]] = {
    "paths": PATHS,
    "components": {
        "schemas": {
            "console.account": _ACCOUNT,
            "console.active_call": _ACTIVE_CALL,
            "console.active_calls": _ACTIVE_CALLS,
            "console.stream_message": _STREAM_MESSAGE,
        }
    },
}
