"""The OpenAPI 3.1 fragment of the delivery operations API (``api/delivery.py``).

Component names carry the ``delivery.`` prefix; the security scheme, error responses, paging
parameters and list ``meta`` are the shared ones of ``openapi_core``. Every status code a
route can answer is listed, so a schema-driven test finds an undocumented one.
"""

from __future__ import annotations

from typing import Any, Final

from callstream.api.openapi_core import (
    PAGING,
    SECURITY,
    errors,
    json_response,
    schema_ref,
)

Schema = dict[str, Any]

SINK_SID: Final = "^DG[0-9a-fA-F]{32}$"
_FORM: Final = "application/x-www-form-urlencoded"
_TAG: Final = ["Delivery"]

_TIME: Final[Schema] = {"type": "string", "format": "date-time"}
_NULLABLE_TIME: Final[Schema] = {"type": ["string", "null"], "format": "date-time"}
_COUNT: Final[Schema] = {"type": "integer", "minimum": 0}


def _object(properties: dict[str, Schema], description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "required": list(properties),
        "additionalProperties": False,
        "properties": properties,
    }


_STATUS: Final = _object(
    {
        "sink_sid": {"type": "string", "pattern": SINK_SID},
        "sink_type": {"type": "string", "enum": ["webhook", "kinesis", "segment"]},
        "status": {"type": "string", "enum": ["initialized", "validating", "active", "failed"]},
        "delivered": {**_COUNT, "description": "Events the sink acknowledged."},
        "retried": {**_COUNT, "description": "Event retries scheduled after failures."},
        "failed": {**_COUNT, "description": "Events carried by failed requests."},
        "dead_lettered": {**_COUNT, "description": "Events given up on."},
        "pending": {**_COUNT, "description": "Events queued now."},
        "lag_seconds": {
            "type": ["number", "null"],
            "minimum": 0,
            "description": "Age of the oldest queued event; null when none is queued.",
        },
        "last_error": {"type": ["string", "null"]},
        "last_success_at": _NULLABLE_TIME,
        "consecutive_failures": {**_COUNT, "description": "Failed requests in a row."},
        "throttled_rate": {
            "type": ["number", "null"],
            "exclusiveMinimum": 0,
            "description": "Send-rate cap in events/s; null when the sink is not throttled.",
        },
    },
    "A sink's delivery counters and health (counts survive restarts).",
)

_ATTEMPT: Final = _object(
    {
        "time": _TIME,
        "events": {"type": "integer", "minimum": 1},
        "ok": {"type": "boolean"},
        "status": {"type": ["integer", "null"], "description": "HTTP status; null if none."},
        "error": {"type": ["string", "null"]},
        "duration_ms": {"type": "number", "minimum": 0},
    },
    "One request to the sink.",
)

_DEAD_LETTER: Final = _object(
    {
        "event_id": {"type": "string"},
        "type": {"type": "string"},
        "enqueued_at": _TIME,
        "dead_at": _TIME,
        "attempts": {"type": "integer", "minimum": 0},
        "reason": {"type": "string"},
        "event": {"type": "object", "description": "The CloudEvent as it was to be sent."},
    },
    "An event given up on.",
)

_SINK_PATH: Final[Schema] = {
    "name": "SinkSid",
    "in": "path",
    "required": True,
    "description": "The SID of a sink of the authenticated account.",
    "schema": {"type": "string", "pattern": SINK_SID},
}


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


_STATUS_RESPONSE: Final = json_response("The sink's status.", schema_ref("delivery.sink_status"))

PATHS: Final[dict[str, Any]] = {
    "/callstream/v1/Sinks/Status": {
        "get": _operation(
            "ListSinkStatus",
            "Delivery status of every sink of the account",
            {
                "200": json_response(
                    "One status per sink.",
                    _object(
                        {"sinks": {"type": "array", "items": schema_ref("delivery.sink_status")}},
                        "The account's sinks.",
                    ),
                ),
                **errors(401),
            },
        )
    },
    "/callstream/v1/Sinks/{SinkSid}/Status": {
        "parameters": [_SINK_PATH],
        "get": _operation(
            "FetchSinkStatus",
            "Delivery status of a sink",
            {"200": _STATUS_RESPONSE, **errors(401, 404)},
        ),
    },
    "/callstream/v1/Sinks/{SinkSid}/Attempts": {
        "parameters": [_SINK_PATH],
        "get": _operation(
            "ListSinkAttempts",
            "The sink's latest requests, newest first (a bounded history)",
            {
                "200": json_response(
                    "The attempts.",
                    _object(
                        {"attempts": {"type": "array", "items": schema_ref("delivery.attempt")}},
                        "Newest first, at most PageSize.",
                    ),
                ),
                **errors(400, 401, 404),
            },
            parameters=PAGING,
        ),
    },
    "/callstream/v1/Sinks/{SinkSid}/DeadLetters": {
        "parameters": [_SINK_PATH],
        "get": _operation(
            "ListSinkDeadLetters",
            "Events given up on, oldest first",
            {
                "200": json_response(
                    "A page of dead letters.",
                    _object(
                        {
                            "dead_letters": {
                                "type": "array",
                                "items": schema_ref("delivery.dead_letter"),
                            },
                            "meta": schema_ref("callstream.list_meta"),
                        },
                        "Twilio-style page.",
                    ),
                ),
                **errors(400, 401, 404),
            },
            parameters=PAGING,
        ),
    },
    "/callstream/v1/Sinks/{SinkSid}/DeadLetters/Replay": {
        "parameters": [_SINK_PATH],
        "post": _operation(
            "ReplaySinkDeadLetters",
            "Put dead letters back in the sink's queue (same CloudEvent ids)",
            {
                "200": json_response(
                    "How many left the dead letters for the queue.",
                    _object({"replayed": _COUNT}, "The count replayed."),
                ),
                **errors(400, 401, 404, 413),
            },
            description="One event (EventId), those that died between StartTime and EndTime "
            "(ISO 8601, either may be left out), or, with no field, all of the sink's.",
            requestBody={
                "required": False,
                "content": {
                    _FORM: {
                        "schema": {
                            "type": "object",
                            "properties": {
                                "EventId": {"type": "string"},
                                "StartTime": _TIME,
                                "EndTime": _TIME,
                            },
                        }
                    }
                },
            },
        ),
    },
    "/callstream/v1/Sinks/{SinkSid}/Enable": {
        "parameters": [_SINK_PATH],
        "post": _operation(
            "EnableSink",
            "Re-enable a failed sink and retry its queue now",
            {"200": _STATUS_RESPONSE, **errors(400, 401, 404, 413)},
        ),
    },
}

FRAGMENT: Final[dict[str, Any]] = {
    "paths": PATHS,
    "components": {
        "schemas": {
            "delivery.sink_status": _STATUS,
            "delivery.attempt": _ATTEMPT,
            "delivery.dead_letter": _DEAD_LETTER,
        }
    },
}
