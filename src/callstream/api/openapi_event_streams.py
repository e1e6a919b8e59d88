"""The OpenAPI 3.1 description of the Event Streams v1 API (``api/event_streams.py``).

A fragment: ``FRAGMENT["paths"]`` and ``FRAGMENT["components"]`` are merged with the other
APIs' fragments into callstream's document. Component names carry the ``events.v1.`` prefix
Twilio's own spec uses (twilio_events_v1.yaml), so they cannot collide with another
fragment's; the security scheme keeps Twilio's name ``accountSid_authToken``.

Every status code a route can answer is listed, errors included, so that a schema-driven
test finds an undocumented one as a failure. Requests are form-encoded with PascalCase
names; responses are JSON with snake_case members.
"""

from __future__ import annotations

from typing import Any

from callstream.api.pagination import MAX_PAGE_SIZE
from callstream.model.catalogue import catalogue

Schema = dict[str, Any]

_SCHEMAS = "#/components/schemas/"
_RESPONSES = "#/components/responses/"
_PARAMETERS = "#/components/parameters/"
_FORM = "application/x-www-form-urlencoded"

SINK_SID = "^DG[0-9a-fA-F]{32}$"
SUBSCRIPTION_SID = "^DF[0-9a-fA-F]{32}$"
ACCOUNT_SID = "^AC[0-9a-fA-F]{32}$"

_SECURITY: list[dict[str, list[str]]] = [{"accountSid_authToken": []}]

# The catalogue is fixed for a build, so the event types and schema ids are enumerated: a
# generated request then names a real one, and anything else is a documented 400 or 404.
EVENT_TYPES = sorted(t.type for t in catalogue().types)
SCHEMA_IDS = sorted(catalogue().schemas)
_EVENT_TYPE_VALUE: dict[str, Any] = {"type": "string", "enum": EVENT_TYPES}


def _ref(kind: str, name: str) -> Schema:
    return {"$ref": f"{kind}{name}"}


def _datetime(description: str) -> Schema:
    return {
        "type": "string",
        "format": "date-time",
        "description": f"{description}, as YYYY-MM-DDTHH:MM:SSZ (UTC, whole seconds).",
    }


def _object(properties: dict[str, Schema], description: str) -> Schema:
    return {
        "type": "object",
        "description": description,
        "properties": properties,
        "required": list(properties),
        "additionalProperties": False,
    }


def _json(schema_name: str, description: str) -> Schema:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(_SCHEMAS, schema_name)}},
    }


def _form(properties: dict[str, Schema], required: list[str], name: str) -> Schema:
    body: Schema = {
        "required": bool(required),
        "content": {
            _FORM: {
                "schema": {
                    "type": "object",
                    "title": name,
                    "properties": properties,
                    "required": required,
                }
            }
        },
    }
    return body


def _errors(*statuses: int) -> dict[str, Schema]:
    names = {
        400: "events.v1.bad_request",
        401: "events.v1.unauthorized",
        404: "events.v1.not_found",
        413: "events.v1.too_large",
    }
    return {str(status): _ref(_RESPONSES, names[status]) for status in statuses}


def _operation(
    operation_id: str,
    summary: str,
    responses: dict[str, Schema],
    *,
    parameters: list[Schema] | None = None,
    request_body: Schema | None = None,
    security: list[dict[str, list[str]]] = _SECURITY,
) -> Schema:
    operation: Schema = {
        "operationId": operation_id,
        "summary": summary,
        "tags": ["Event Streams"],
        "security": security,
        "responses": responses,
    }
    if parameters:
        operation["parameters"] = parameters
    if request_body is not None:
        operation["requestBody"] = request_body
    return operation


def _path_param(name: str, description: str, schema: Schema) -> Schema:
    return {
        "name": name,
        "in": "path",
        "required": True,
        "description": description,
        "schema": schema,
    }


def _query_param(name: str, description: str, schema: Schema) -> Schema:
    return {
        "name": name,
        "in": "query",
        "required": False,
        "description": description,
        "schema": schema,
    }


_PAGING = [
    _ref(_PARAMETERS, "events.v1.PageSize"),
    _ref(_PARAMETERS, "events.v1.Page"),
    _ref(_PARAMETERS, "events.v1.PageToken"),
]

_SINK_PATH = _path_param("Sid", "The SID of the sink.", {"type": "string", "pattern": SINK_SID})
_SUBSCRIPTION_PATH = _path_param(
    "Sid", "The SID of the subscription.", {"type": "string", "pattern": SUBSCRIPTION_SID}
)
_SUBSCRIPTION_OF_EVENT_PATH = _path_param(
    "SubscriptionSid",
    "The SID of the subscription.",
    {"type": "string", "pattern": SUBSCRIPTION_SID},
)
_TYPE_PATH = _path_param(
    "Type",
    "An event type, e.g. com.twilio.voice.insights.call-summary.complete.",
    _EVENT_TYPE_VALUE,
)
_SCHEMA_PATH = _path_param(
    "Id", "A schema id, e.g. VoiceInsights.CallSummary.", {"type": "string", "enum": SCHEMA_IDS}
)
_VERSION_PATH = _path_param(
    "SchemaVersion", "A version of the schema.", {"type": "integer", "minimum": 1}
)

_DESCRIPTION_FIELD: Schema = {
    "type": "string",
    "minLength": 1,
    "pattern": "\\S",
    "description": "A human readable description. It should not contain PII.",
}
_SCHEMA_VERSION_FIELD: Schema = {
    "type": "integer",
    "minimum": 1,
    "description": "The schema version to receive the type in; left out, the latest.",
}

_TYPE_ENTRY: Schema = {
    "type": "object",
    "required": ["type"],
    "properties": {
        "type": _EVENT_TYPE_VALUE,
        "schema_version": {"type": "integer", "minimum": 1},
    },
}

# -- components ---------------------------------------------------------------------------------

_LIST_META = _object(
    {
        "first_page_url": {"type": "string", "format": "uri"},
        "key": {"type": "string"},
        "next_page_url": {"type": ["string", "null"], "format": "uri"},
        "page": {"type": "integer", "minimum": 0},
        "page_size": {"type": "integer", "minimum": 1, "maximum": 1000},
        "previous_page_url": {"type": ["string", "null"], "format": "uri"},
        "url": {"type": "string", "format": "uri"},
    },
    "The page's position; next_page_url and previous_page_url are absolute URLs that carry "
    "the page token.",
)


def _list_of(key: str, item: str) -> Schema:
    return _object(
        {
            "meta": _ref(_SCHEMAS, "events.v1.list_meta"),
            key: {"type": "array", "items": _ref(_SCHEMAS, item)},
        },
        f"One page of {key}; the records are under meta.key ({key!r}).",
    )


_SINK = _object(
    {
        "date_created": _datetime("When the sink was created"),
        "date_updated": _datetime("When the sink last changed"),
        "description": {"type": "string"},
        "sid": {"type": "string", "pattern": SINK_SID},
        "sink_configuration": {
            "type": "object",
            "description": "webhook: destination, method (POST or GET), batch_events; "
            "kinesis: arn, role_arn, external_id; segment: write_key.",
        },
        "sink_type": {"type": "string", "enum": ["kinesis", "webhook", "segment"]},
        "status": {"type": "string", "enum": ["initialized", "validating", "active", "failed"]},
        "url": {"type": "string", "format": "uri"},
        "links": _object(
            {
                "sink_test": {"type": "string", "format": "uri"},
                "sink_validate": {"type": "string", "format": "uri"},
            },
            "The sink's Test and Validate resources.",
        ),
    },
    "A destination events are delivered to.",
)

_SUBSCRIPTION = _object(
    {
        "account_sid": {"type": "string", "pattern": ACCOUNT_SID},
        "date_created": _datetime("When the subscription was created"),
        "date_updated": _datetime("When the subscription or its types last changed"),
        "description": {"type": "string"},
        "links": _object(
            {"subscribed_events": {"type": "string", "format": "uri"}},
            "The subscription's event types.",
        ),
        "sid": {"type": "string", "pattern": SUBSCRIPTION_SID},
        "sink_sid": {"type": "string", "pattern": SINK_SID},
        "url": {"type": "string", "format": "uri"},
    },
    "The event types one sink receives.",
)

_SUBSCRIBED_EVENT = _object(
    {
        "account_sid": {"type": "string", "pattern": ACCOUNT_SID},
        "type": {"type": "string"},
        "schema_version": {"type": "integer", "minimum": 1},
        "subscription_sid": {"type": "string", "pattern": SUBSCRIPTION_SID},
        "url": {"type": "string", "format": "uri"},
    },
    "An event type of a subscription and the schema version it is delivered in.",
)

_EVENT_TYPE = _object(
    {
        "date_created": _datetime("When the type was published"),
        "date_updated": _datetime("When the type last changed"),
        "description": {"type": "string"},
        "documentation_url": {"type": ["string", "null"], "format": "uri"},
        "links": _object(
            {"schema": {"type": "string", "format": "uri"}}, "The versions of the type's schema."
        ),
        "schema_id": {"type": "string"},
        "status": {
            "type": "string",
            "description": "available, deprecated, restricted or discontinued.",
        },
        "type": {"type": "string"},
        "url": {"type": "string", "format": "uri"},
    },
    "An event type callstream can stream.",
)

_SCHEMA = _object(
    {
        "id": {"type": "string"},
        "latest_version": {"type": "integer", "minimum": 1},
        "latest_version_date_created": _datetime("When the latest version was published"),
        "links": _object(
            {"versions": {"type": "string", "format": "uri"}}, "The schema's versions."
        ),
        "url": {"type": "string", "format": "uri"},
    },
    "A schema of event payloads.",
)

_SCHEMA_VERSION = _object(
    {
        "date_created": _datetime("When the version was published"),
        "id": {"type": "string"},
        "raw": {
            "type": "string",
            "format": "uri",
            "description": "Where callstream serves the JSON Schema document itself.",
        },
        "schema_version": {"type": "integer", "minimum": 1},
        "url": {"type": "string", "format": "uri"},
    },
    "One version of a schema.",
)

_ERROR: Schema = {
    "type": "object",
    "description": "Twilio's error body; twilio-python raises TwilioRestException from it.",
    "required": ["code", "message", "more_info", "status"],
    "properties": {
        "code": {
            "type": "integer",
            "description": "20001 invalid parameter, 20003 authentication, 20404 not found, "
            "20413 body too large, 91000 sink not created, 91001 sink not found, 91003 sink "
            "limit, 91100 subscription not created (sink not active or in use), 91101 "
            "duplicated types or empty description, 91102 subscription not found, 91104 "
            "event type not found.",
        },
        "message": {"type": "string"},
        "more_info": {"type": "string", "format": "uri"},
        "status": {"type": "integer"},
        "details": {
            "type": "object",
            "description": "Specifics, e.g. the parameter at fault.",
        },
    },
}


def _error_response(description: str) -> Schema:
    return {
        "description": description,
        "content": {"application/json": {"schema": _ref(_SCHEMAS, "events.v1.error")}},
    }


_RESULT_SUBMITTED = _object(
    {"result": {"type": "string", "enum": ["submitted"]}},
    "The test event is queued for the sink.",
)
_RESULT_VALID = _object(
    {"result": {"type": "string", "enum": ["valid"]}}, "The sink is validated and active."
)

COMPONENTS: dict[str, Any] = {
    "securitySchemes": {"accountSid_authToken": {"type": "http", "scheme": "basic"}},
    "schemas": {
        "events.v1.list_meta": _LIST_META,
        "events.v1.error": _ERROR,
        "events.v1.sink": _SINK,
        "events.v1.sink.sink_test": _RESULT_SUBMITTED,
        "events.v1.sink.sink_validate": _RESULT_VALID,
        "events.v1.subscription": _SUBSCRIPTION,
        "events.v1.subscription.subscribed_event": _SUBSCRIBED_EVENT,
        "events.v1.event_type": _EVENT_TYPE,
        "events.v1.schema": _SCHEMA,
        "events.v1.schema.schema_version": _SCHEMA_VERSION,
        "events.v1.sink_list": _list_of("sinks", "events.v1.sink"),
        "events.v1.subscription_list": _list_of("subscriptions", "events.v1.subscription"),
        "events.v1.subscribed_event_list": _list_of(
            "types", "events.v1.subscription.subscribed_event"
        ),
        "events.v1.event_type_list": _list_of("types", "events.v1.event_type"),
        "events.v1.schema_version_list": _list_of(
            "schema_versions", "events.v1.schema.schema_version"
        ),
    },
    "responses": {
        "events.v1.bad_request": _error_response(
            "A parameter is missing or invalid; the message and details name it."
        ),
        "events.v1.unauthorized": _error_response(
            "No or wrong HTTP Basic credentials (account SID and auth token, or API key)."
        ),
        "events.v1.not_found": _error_response(
            "No such resource in this account (another account's resources are not found)."
        ),
        "events.v1.too_large": _error_response("The request body exceeds 64 KiB."),
    },
    "parameters": {
        "events.v1.PageSize": _query_param(
            "PageSize",
            "How many records a page holds.",
            {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_SIZE, "default": 50},
        ),
        "events.v1.Page": _query_param(
            "Page",
            "The page number, for the client's own bookkeeping.",
            {"type": "integer", "minimum": 0, "maximum": 2**31},
        ),
        "events.v1.PageToken": _query_param(
            "PageToken",
            "An opaque token from meta.next_page_url or meta.previous_page_url; any other "
            "value is a 400.",
            {"type": "string", "pattern": "^PT[A-Za-z0-9_-]+$"},
        ),
    },
}

# -- paths ------------------------------------------------------------------------------------

_TYPES_FIELD: Schema = {
    "type": "array",
    "minItems": 1,
    "description": "Repeated field; each value is a JSON object "
    '{"type": "...", "schema_version": N} (schema_version optional: the latest).',
    "items": {
        "type": "string",
        "pattern": "^\\s*\\{",
        "contentMediaType": "application/json",
        "contentSchema": _TYPE_ENTRY,
    },
}

_SUBSCRIPTION_CREATE = _form(
    {
        "Description": _DESCRIPTION_FIELD,
        "SinkSid": {
            "type": "string",
            "pattern": SINK_SID,
            "description": "An active sink of the account that no other subscription uses.",
        },
        "Types": _TYPES_FIELD,
    },
    ["Description", "SinkSid", "Types"],
    "CreateSubscriptionRequest",
)
_SUBSCRIPTION_CREATE["content"][_FORM]["encoding"] = {"Types": {"style": "form", "explode": True}}

PATHS: dict[str, Any] = {
    "/v1/Sinks": {
        "get": _operation(
            "ListSink",
            "List the account's sinks",
            {"200": _json("events.v1.sink_list", "A page of sinks."), **_errors(400, 401)},
            parameters=[
                _query_param(
                    "InUse",
                    "true: only sinks a subscription uses; false: only unused sinks.",
                    {"type": "boolean"},
                ),
                _query_param(
                    "Status",
                    "Only sinks with this status.",
                    {"type": "string", "enum": ["initialized", "validating", "active", "failed"]},
                ),
                *_PAGING,
            ],
        ),
        "post": _operation(
            "CreateSink",
            "Create a sink (at most 100 per account)",
            {"201": _json("events.v1.sink", "The new sink."), **_errors(400, 401, 413)},
            request_body=_form(
                {
                    "Description": _DESCRIPTION_FIELD,
                    "SinkConfiguration": {
                        "type": "string",
                        "pattern": "^\\s*\\{",
                        "contentMediaType": "application/json",
                        "description": "A JSON object. webhook: destination (absolute http(s) "
                        "URL), method (POST or GET), batch_events (boolean); kinesis: arn, "
                        "role_arn, external_id; segment: write_key.",
                    },
                    "SinkType": {"type": "string", "enum": ["kinesis", "webhook", "segment"]},
                },
                ["Description", "SinkConfiguration", "SinkType"],
                "CreateSinkRequest",
            ),
        ),
    },
    "/v1/Sinks/{Sid}": {
        "parameters": [_SINK_PATH],
        "get": _operation(
            "FetchSink",
            "Fetch a sink",
            {"200": _json("events.v1.sink", "The sink."), **_errors(401, 404)},
        ),
        "post": _operation(
            "UpdateSink",
            "Change a sink's description (its only mutable field)",
            {"200": _json("events.v1.sink", "The sink."), **_errors(400, 401, 404, 413)},
            request_body=_form(
                {"Description": _DESCRIPTION_FIELD}, ["Description"], "UpdateSinkRequest"
            ),
        ),
        "delete": _operation(
            "DeleteSink",
            "Delete a sink that no subscription uses",
            {"204": {"description": "Deleted."}, **_errors(400, 401, 404)},
        ),
    },
    "/v1/Sinks/{Sid}/Test": {
        "parameters": [_SINK_PATH],
        "post": _operation(
            "CreateSinkTest",
            "Queue a com.twilio.eventstreams.test-event for the sink",
            {
                "201": _json("events.v1.sink.sink_test", "The test event is queued."),
                **_errors(400, 401, 404, 413),
            },
            request_body={
                "required": False,
                "content": {_FORM: {"schema": {"type": "object", "properties": {}}}},
            },
        ),
    },
    "/v1/Sinks/{Sid}/Validate": {
        "parameters": [_SINK_PATH],
        "post": _operation(
            "CreateSinkValidate",
            "Validate a sink with the test_id of its latest test event; activates it",
            {
                "201": _json("events.v1.sink.sink_validate", "The sink is active."),
                **_errors(400, 401, 404, 413),
            },
            request_body=_form(
                {
                    "TestId": {
                        "type": "string",
                        "minLength": 1,
                        "description": "data.test_id of the latest test event (a UUID).",
                    }
                },
                ["TestId"],
                "CreateSinkValidateRequest",
            ),
        ),
    },
    "/v1/Subscriptions": {
        "get": _operation(
            "ListSubscription",
            "List the account's subscriptions",
            {
                "200": _json("events.v1.subscription_list", "A page of subscriptions."),
                **_errors(400, 401),
            },
            parameters=[
                _query_param("SinkSid", "Only the subscription of this sink.", {"type": "string"}),
                *_PAGING,
            ],
        ),
        "post": _operation(
            "CreateSubscription",
            "Subscribe a sink to event types",
            {
                "201": _json("events.v1.subscription", "The new subscription."),
                **_errors(400, 401, 413),
            },
            request_body=_SUBSCRIPTION_CREATE,
        ),
    },
    "/v1/Subscriptions/{Sid}": {
        "parameters": [_SUBSCRIPTION_PATH],
        "get": _operation(
            "FetchSubscription",
            "Fetch a subscription",
            {"200": _json("events.v1.subscription", "The subscription."), **_errors(401, 404)},
        ),
        "post": _operation(
            "UpdateSubscription",
            "Change a subscription's description",
            {
                "200": _json("events.v1.subscription", "The subscription."),
                **_errors(400, 401, 404, 413),
            },
            request_body=_form(
                {"Description": _DESCRIPTION_FIELD}, [], "UpdateSubscriptionRequest"
            ),
        ),
        "delete": _operation(
            "DeleteSubscription",
            "Delete a subscription (its sink stays)",
            {"204": {"description": "Deleted."}, **_errors(401, 404)},
        ),
    },
    "/v1/Subscriptions/{SubscriptionSid}/SubscribedEvents": {
        "parameters": [_SUBSCRIPTION_OF_EVENT_PATH],
        "get": _operation(
            "ListSubscribedEvent",
            "List a subscription's event types",
            {
                "200": _json("events.v1.subscribed_event_list", "A page of event types."),
                **_errors(400, 401, 404),
            },
            parameters=list(_PAGING),
        ),
        "post": _operation(
            "CreateSubscribedEvent",
            "Add an event type to a subscription",
            {
                "201": _json("events.v1.subscription.subscribed_event", "The added type."),
                **_errors(400, 401, 404, 413),
            },
            request_body=_form(
                {"Type": _EVENT_TYPE_VALUE, "SchemaVersion": _SCHEMA_VERSION_FIELD},
                ["Type"],
                "CreateSubscribedEventRequest",
            ),
        ),
    },
    "/v1/Subscriptions/{SubscriptionSid}/SubscribedEvents/{Type}": {
        "parameters": [_SUBSCRIPTION_OF_EVENT_PATH, _TYPE_PATH],
        "get": _operation(
            "FetchSubscribedEvent",
            "Fetch one event type of a subscription",
            {
                "200": _json("events.v1.subscription.subscribed_event", "The type."),
                **_errors(401, 404),
            },
        ),
        "post": _operation(
            "UpdateSubscribedEvent",
            "Change the schema version of a subscription's event type (left out: the latest)",
            {
                "200": _json("events.v1.subscription.subscribed_event", "The type."),
                **_errors(400, 401, 404, 413),
            },
            request_body=_form(
                {"SchemaVersion": _SCHEMA_VERSION_FIELD}, [], "UpdateSubscribedEventRequest"
            ),
        ),
        "delete": _operation(
            "DeleteSubscribedEvent",
            "Remove an event type from a subscription",
            {"204": {"description": "Removed."}, **_errors(401, 404)},
        ),
    },
    "/v1/Types": {
        "get": _operation(
            "ListEventType",
            "List the event types",
            {
                "200": _json("events.v1.event_type_list", "A page of event types."),
                **_errors(400, 401),
            },
            parameters=[
                _query_param("SchemaId", "Only types of this schema.", {"type": "string"}),
                *_PAGING,
            ],
        ),
    },
    "/v1/Types/{Type}": {
        "parameters": [_TYPE_PATH],
        "get": _operation(
            "FetchEventType",
            "Fetch an event type",
            {"200": _json("events.v1.event_type", "The event type."), **_errors(401, 404)},
        ),
    },
    "/v1/Schemas/{Id}": {
        "parameters": [_SCHEMA_PATH],
        "get": _operation(
            "FetchSchema",
            "Fetch a schema",
            {"200": _json("events.v1.schema", "The schema."), **_errors(401, 404)},
        ),
    },
    "/v1/Schemas/{Id}/Versions": {
        "parameters": [_SCHEMA_PATH],
        "get": _operation(
            "ListSchemaVersion",
            "List the versions of a schema",
            {
                "200": _json("events.v1.schema_version_list", "A page of versions."),
                **_errors(400, 401, 404),
            },
            parameters=list(_PAGING),
        ),
    },
    "/v1/Schemas/{Id}/Versions/{SchemaVersion}": {
        "parameters": [_SCHEMA_PATH, _VERSION_PATH],
        "get": _operation(
            "FetchSchemaVersion",
            "Fetch a version of a schema",
            {
                "200": _json("events.v1.schema.schema_version", "The version."),
                **_errors(401, 404),
            },
        ),
    },
    "/schemas/{Id}/{Document}": {
        "parameters": [
            _SCHEMA_PATH,
            _path_param(
                "Document",
                "The version number, with or without a .json suffix (1 or 1.json).",
                {"type": "string", "pattern": "^[0-9]+(\\.json)?$"},
            ),
        ],
        "get": _operation(
            "FetchRawSchema",
            "The JSON Schema document of a schema version (public, like Twilio's)",
            {
                "200": {
                    "description": "The JSON Schema document.",
                    "content": {"application/json": {"schema": {"type": "object"}}},
                },
                **_errors(404),
            },
            security=[],
        ),
    },
}

FRAGMENT: dict[str, Any] = {"paths": PATHS, "components": COMPONENTS}
