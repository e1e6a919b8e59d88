"""The OpenAPI 3.1 fragment of callstream's own routes, and the pieces other fragments share.

Routes: ``POST /v1/Telemetry`` (ingest, ``ingest/routes.py``, docs/ingest.md),
``GET /callstream/v1/Events`` (the live feed, ``api/live.py``) and ``GET /healthz``.

Shared pieces, referenced by name from the Voice Insights fragment: the HTTP Basic security
scheme (named ``accountSid_authToken`` as in Twilio's specs), Twilio's error body and the
error responses built on it, the paging parameters and the list ``meta`` object of
``api/pagination.py``. Every status code a route can answer is listed, so a schema-driven
test finds an undocumented one.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

from callstream.api.live import MAX_LIMIT, MAX_WAIT
from callstream.api.pagination import DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE
from callstream.ingest.routes import MAX_BODY_BYTES, MAX_RECORDS
from callstream.model.catalogue import catalogue
from callstream.model.telemetry import TelemetryRecord

Schema = dict[str, Any]

SECURITY_SCHEME: Final = "accountSid_authToken"
SECURITY: Final[list[dict[str, list[str]]]] = [{SECURITY_SCHEME: []}]
CALL_SID: Final = "^CA[0-9a-fA-F]{32}$"
ACCOUNT_SID: Final = "^AC[0-9a-fA-F]{32}$"


def schema_ref(name: str) -> Schema:
    return {"$ref": f"#/components/schemas/{name}"}


def response_ref(name: str) -> Schema:
    return {"$ref": f"#/components/responses/{name}"}


def parameter_ref(name: str) -> Schema:
    return {"$ref": f"#/components/parameters/{name}"}


def json_response(description: str, schema: Schema) -> Schema:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def errors(*statuses: int) -> dict[str, Schema]:
    """The documented error responses of an operation, by status."""
    names = {400: "bad_request", 401: "unauthorized", 404: "not_found", 413: "too_large"}
    return {str(status): response_ref(f"callstream.{names[status]}") for status in statuses}


def query_param(name: str, description: str, schema: Schema) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


PAGING: Final = [parameter_ref(f"callstream.{name}") for name in ("PageSize", "Page", "PageToken")]

_URL: Final[Schema] = {"type": "string", "format": "uri"}
_NULLABLE_URL: Final[Schema] = {"type": ["string", "null"], "format": "uri"}

LIST_META: Final[Schema] = {
    "type": "object",
    "description": "Twilio's paging envelope. twilio-python follows next_page_url as an "
    "absolute URL, so every URL points at callstream (PUBLIC_URL).",
    "required": [
        "page",
        "page_size",
        "first_page_url",
        "previous_page_url",
        "url",
        "next_page_url",
        "key",
    ],
    "additionalProperties": False,
    "properties": {
        "page": {"type": "integer", "minimum": 0},
        "page_size": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE},
        "first_page_url": _URL,
        "previous_page_url": _NULLABLE_URL,
        "url": _URL,
        "next_page_url": _NULLABLE_URL,
        "key": {"type": "string"},
    },
}

ERROR: Final[Schema] = {
    "type": "object",
    "description": "Twilio's error body (event-streams-api.md §1.6); twilio-python raises "
    "TwilioRestException from it.",
    "required": ["code", "message", "more_info", "status"],
    "properties": {
        "code": {
            "type": "integer",
            "description": "20001 invalid parameter, 20003 authentication, 20004 method not "
            "allowed, 20404 not found, 20413 body too large; the Event Streams API adds 91xxx.",
        },
        "message": {"type": "string"},
        "more_info": _URL,
        "status": {"type": "integer", "minimum": 400, "maximum": 599},
        "details": {
            "type": "object",
            "description": "Specifics: the parameter at fault, or every bad telemetry record.",
        },
    },
}


def _error_response(description: str) -> Schema:
    return json_response(description, schema_ref("callstream.error"))


# --- ingest --------------------------------------------------------------------------------------

_TELEMETRY_PREFIX: Final = "telemetry."
(_TELEMETRY_BATCH,), _TELEMETRY_COMPONENTS = msgspec.json.schema_components(
    [list[TelemetryRecord]], ref_template=f"#/components/schemas/{_TELEMETRY_PREFIX}{{name}}"
)
_TELEMETRY_BATCH["maxItems"] = MAX_RECORDS

_INGEST: Final[Schema] = {
    "operationId": "CreateTelemetry",
    "summary": "Send a batch of call telemetry (all or nothing; durable before the answer).",
    "description": "A JSON array, or one record per line as application/x-ndjson, of the four "
    f"telemetry kinds (docs/ingest.md). At most {MAX_RECORDS} records and "
    f"{MAX_BODY_BYTES} bytes. The account is the authenticated one.",
    "tags": ["Ingest"],
    "security": SECURITY,
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": schema_ref("telemetry.batch")},
            "application/x-ndjson": {
                "schema": {"type": "string", "description": "One JSON record per line."}
            },
        },
    },
    "responses": {
        "202": json_response(
            "Every record is stored durably.",
            {
                "type": "object",
                "required": ["accepted"],
                "additionalProperties": False,
                "properties": {"accepted": {"type": "integer", "minimum": 0}},
            },
        ),
        **errors(400, 401, 413),
    },
}

# --- live feed -----------------------------------------------------------------------------------

_CLOUD_EVENT: Final[Schema] = {
    "type": "object",
    "description": "A CloudEvent as a sink receives it; data is rendered in the latest schema "
    "version of its type.",
    "required": [
        *("specversion", "type", "source", "id", "dataschema", "datacontenttype", "time"),
        "data",
    ],
    "additionalProperties": False,
    "properties": {
        "specversion": {"type": "string", "const": "1.0"},
        "type": {"type": "string", "enum": [t.type for t in catalogue().types]},
        "source": {"type": "string"},
        "id": {"type": "string", "pattern": "^EZ[0-9a-f]{32}$"},
        "dataschema": _URL,
        "datacontenttype": {"type": "string", "const": "application/json"},
        "time": {"type": "string", "format": "date-time"},
        "data": {"type": "object"},
    },
}

_LIVE: Final[Schema] = {
    "operationId": "ListLiveEvents",
    "summary": "Follow the account's insight events as the engine produces them (callstream).",
    "description": "Not a Twilio API: what `callstream tail` reads. Without After it starts at "
    "the tail; with Wait it long-polls until events past After exist.",
    "tags": ["Live feed"],
    "security": SECURITY,
    "parameters": [
        query_param(
            "After",
            "Events-log offset to read after; -1 (the default) is the current tail.",
            {"type": "integer", "minimum": -1, "maximum": 2**62},
        ),
        query_param(
            "Limit",
            "How many log entries to read at most.",
            {"type": "integer", "minimum": 1, "maximum": MAX_LIMIT, "default": 100},
        ),
        query_param(
            "Wait",
            "Seconds to wait for events when there are none yet.",
            {"type": "integer", "minimum": 0, "maximum": int(MAX_WAIT), "default": 0},
        ),
        {
            **query_param(
                "Type",
                "Only these event types (repeat the parameter for several).",
                {
                    "type": "array",
                    "items": {"type": "string", "enum": [t.type for t in catalogue().types]},
                },
            ),
            "style": "form",
            "explode": True,
        },
        query_param("CallSid", "Only this call's events.", {"type": "string"}),
    ],
    "responses": {
        "200": json_response(
            "The events read, and the offset to pass as After next time.",
            {
                "type": "object",
                "required": ["events", "next_after"],
                "additionalProperties": False,
                "properties": {
                    "events": {"type": "array", "items": schema_ref("callstream.cloud_event")},
                    "next_after": {"type": "integer"},
                },
            },
        ),
        **errors(400, 401),
    },
}

# --- health --------------------------------------------------------------------------------------

_HEALTH: Final[Schema] = {
    "operationId": "FetchHealth",
    "summary": "Liveness and engine lag (public: it reveals no account data).",
    "tags": ["Health"],
    "security": [],
    "responses": {
        "200": json_response(
            "The server is up.",
            {
                "type": "object",
                "required": ["status"],
                "additionalProperties": False,
                "properties": {
                    "status": {"type": "string", "const": "ok"},
                    "engine_partitions_behind": {
                        "type": "integer",
                        "minimum": 0,
                        "description": "Partitions holding telemetry the engine has not "
                        "consumed yet (absent when this process runs no engine).",
                    },
                },
            },
        )
    },
}

FRAGMENT: Final[dict[str, Any]] = {
    "paths": {
        "/v1/Telemetry": {"post": _INGEST},
        "/callstream/v1/Events": {"get": _LIVE},
        "/healthz": {"get": _HEALTH},
    },
    "components": {
        "securitySchemes": {
            SECURITY_SCHEME: {
                "type": "http",
                "scheme": "basic",
                "description": "Account SID and auth token, or API key SID and secret.",
            }
        },
        "schemas": {
            "callstream.error": ERROR,
            "callstream.list_meta": LIST_META,
            "callstream.cloud_event": _CLOUD_EVENT,
            "telemetry.batch": _TELEMETRY_BATCH,
            **{f"{_TELEMETRY_PREFIX}{name}": s for name, s in _TELEMETRY_COMPONENTS.items()},
        },
        "responses": {
            "callstream.bad_request": _error_response(
                "A parameter or the body is invalid; the message and details name what."
            ),
            "callstream.unauthorized": _error_response("No or wrong HTTP Basic credentials."),
            "callstream.not_found": _error_response(
                "No such resource in this account (another account's are not found either)."
            ),
            "callstream.too_large": _error_response(
                f"The body exceeds {MAX_BODY_BYTES} bytes or {MAX_RECORDS} records."
            ),
        },
        "parameters": {
            "callstream.PageSize": query_param(
                "PageSize",
                "How many records a page holds.",
                {
                    "type": "integer",
                    "minimum": 1,
                    "maximum": MAX_PAGE_SIZE,
                    "default": DEFAULT_PAGE_SIZE,
                },
            ),
            "callstream.Page": query_param(
                "Page",
                "The page number, for the client's own bookkeeping.",
                {"type": "integer", "minimum": 0, "maximum": 2**31},
            ),
            "callstream.PageToken": query_param(
                "PageToken",
                "An opaque token from meta.next_page_url or meta.previous_page_url.",
                {"type": "string"},
            ),
        },
    },
}
